"""The one boot-and-wait loop (provisioner/drivers/boot.py) with a fake backend's Boot: ready
VMs are reported once, a stopped VM and the deadline raise the backend's error with its triage,
and the console helpers read what the guest printed."""
from __future__ import annotations

import pytest

from provisioner.drivers import boot
from provisioner.errors import HypervisorError


class FakeBoot(boot.Boot):
    poll = 0.0

    def __init__(self, ready_after: dict[str, int], dead=()):
        self.ready_after, self.dead, self.rounds = ready_after, set(dead), 0

    def next_round(self):
        self.rounds += 1

    def check(self, vm):
        return self.rounds >= self.ready_after.get(vm, 10**9), f"{vm}-addr"

    def alive(self, vm):
        return vm not in self.dead

    def triage(self, vm):
        return f"triage {vm}"

    def ready_line(self, vm, found):
        return f"{vm} ready: {found}"

    def timed_out(self, pending, timeout):
        return HypervisorError(f"late: {', '.join(pending)}")


def test_every_vm_is_reported_once_when_ready():
    said = []
    found = boot.wait(FakeBoot({"a": 1, "b": 3}), ["a", "b"], said.append, timeout=60)
    assert found == {"a": "a-addr", "b": "b-addr"}
    assert [line for line in said if "ready" in line] == ["a ready: a-addr", "b ready: b-addr"]


def test_a_stopped_vm_raises_with_its_triage():
    with pytest.raises(HypervisorError, match="VM b stopped while booting\ntriage b"):
        boot.wait(FakeBoot({"a": 1}, dead={"b"}), ["a", "b"], lambda m: None, timeout=60)


def test_the_deadline_raises_the_backends_error():
    with pytest.raises(HypervisorError, match="late: b"):
        boot.wait(FakeBoot({"a": 1}), ["a", "b"], lambda m: None, timeout=0)


def test_console_helpers(tmp_path):
    log = boot.serial_log(tmp_path, "vm1")
    assert boot.read_console(log) == ""
    assert boot.console_tail(log, "(nothing)") == ["  (nothing)"]
    log.write_text("Linux\nVNET-ADDR 52:54:00:AA:BB:01 10.0.0.5/24 eth0\nVNET-READY vm1\n")
    assert boot.console_addresses(boot.read_console(log)) == {"52:54:00:aa:bb:01": "10.0.0.5/24"}
    assert boot.READY_RE.search(boot.read_console(log))
    assert boot.console_tail(log, "(nothing)")[-1] == "  | VNET-READY vm1"
