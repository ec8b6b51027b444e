"""Ansible's start overlapped with the boot (verify/earlyrun.py, playbooks/action_plugins/
vnet_gate.py): the run starts early, but no guest's cells reach it before verify hands them
over, and a run nobody takes is called off."""
from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from types import SimpleNamespace

from provisioner.host.state import Target
from provisioner.progress_events import Cells, VmState
from provisioner.resources import playbook_code
from provisioner.verify import earlyrun
from provisioner.verify.ansible import CELL_VARS
from provisioner.verify.run import Inventory

TARGET = Target(uri="qemu:///system")


def gate_plugin():
    return playbook_code("action_plugins", "vnet_gate")


def run_gate(monkeypatch, args: dict, task_vars: dict) -> dict:
    """The action plugin's run() alone (no play around it)."""
    module = gate_plugin()
    monkeypatch.setattr(module.ActionBase, "run", lambda self, tmp=None, task_vars=None: {})
    action = module.ActionModule.__new__(module.ActionModule)
    action._task = SimpleNamespace(args=args)
    return action.run(task_vars=task_vars)


def test_the_gate_keeps_the_same_cell_variables_as_vnet():
    assert gate_plugin().CELL_VARS == CELL_VARS


def test_without_a_gate_the_cells_come_from_the_inventory(monkeypatch):
    found = run_gate(monkeypatch, {}, {"vnet_probes": [{"id": "0"}], "vnet_nic_macs": [],
                                       "ansible_host": "10.0.0.1"})
    assert found == {"vnet_probes": [{"id": "0"}], "vnet_nic_macs": [], "changed": False}


def test_the_gate_waits_for_vnets_file_and_returns_it(monkeypatch, tmp_path):
    def later():
        time.sleep(0.3)
        (tmp_path / "vm1.json").write_text(json.dumps({"vnet_probes": [{"id": "3"}]}))
    threading.Thread(target=later).start()
    found = run_gate(monkeypatch, {"dir": str(tmp_path)}, {"inventory_hostname": "vm1"})
    assert found == {"vnet_probes": [{"id": "3"}], "changed": False}


def test_the_gate_fails_when_vnet_calls_the_run_off(monkeypatch, tmp_path):
    (tmp_path / "abort").touch()
    found = run_gate(monkeypatch, {"dir": str(tmp_path)}, {"inventory_hostname": "vm1"})
    assert found["failed"] and "called the run off" in found["msg"]


def test_the_gate_gives_up_when_the_vnet_that_started_it_is_gone(monkeypatch, tmp_path):
    """A vnet killed while its guests boot leaves its early run waiting at the gate: the gate
    notices that its owner (vnet.pid, written by EarlyRun) is gone and ends the run."""
    import subprocess
    import sys

    from provisioner.host import procs

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    procs.write(tmp_path / earlyrun.OWNER, procs.Record(gone.pid, 1, sys.executable))
    found = run_gate(monkeypatch, {"dir": str(tmp_path), "timeout": 5},
                     {"inventory_hostname": "vm1"})
    assert found["failed"] and "is gone" in found["msg"]
    # ... and it recorded its ansible-playbook (the worker's parent: here, this process)
    recorded = procs.read(tmp_path / earlyrun.RECORD)
    assert recorded.pid == os.getppid() and recorded.marker == str(tmp_path.parent)


def test_a_live_owner_keeps_the_gate_waiting(monkeypatch, tmp_path):
    me = os.getpid()
    from provisioner.host import procs

    procs.write(tmp_path / earlyrun.OWNER, procs.Record(me, procs.start_time(me),
                                                         procs.proc_argv(me)[0]))
    threading.Timer(0.3, lambda: (tmp_path / "vm1.json").write_text("{}")).start()
    found = run_gate(monkeypatch, {"dir": str(tmp_path)}, {"inventory_hostname": "vm1"})
    assert found == {"changed": False}


def test_destroy_stops_the_recorded_early_run_by_its_pid(tmp_path):
    """lifecycle's destroy stops the lab's helpers (labhelpers.stop_all): the process the gate
    recorded is ended (a real sleeping child whose argv names the lab's ansible directory, as
    ansible-playbook's inventory path does)."""
    import subprocess
    import sys

    from provisioner.host import labhelpers, procs

    gate = tmp_path / "ansible" / "gate"
    gate.mkdir(parents=True)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)",
                              str(tmp_path / "ansible" / "inventory" / "hosts.json")])
    while not procs.mentions(procs.proc_argv(child.pid) or [], str(tmp_path / "ansible")):
        time.sleep(0.01)                 # until the child has exec'd (its own argv)
    procs.write(gate / earlyrun.RECORD, procs.Record(child.pid, procs.start_time(child.pid),
                                                     str(tmp_path / "ansible")))
    labhelpers.stop_all(tmp_path, lambda m: None)
    assert child.wait(timeout=10) is not None and not (gate / earlyrun.RECORD).exists()


def fake_gate_run(gate: Path, seen: list, hosts=("vm1",)):
    """A run that does what the real playbook's first task does: wait at the gate per host."""
    def run():
        results = {}
        for vm in hosts:
            while not (gate / f"{vm}.json").exists():
                if (gate / "abort").exists():
                    return {}
                time.sleep(0.02)
            seen.append((vm, json.loads((gate / f"{vm}.json").read_text())))
            results[vm] = {"probes": {"0": {"observed": "pass"}}}
        return results
    return run


def test_an_early_run_gets_the_cells_only_when_verify_hands_them_over(tmp_path):
    seen: list = []
    gate = tmp_path / "gate"
    gate.mkdir()
    (gate / "vm1.json").write_text("{}")       # an earlier run's: must not open the gate
    run = earlyrun.EarlyRun(gate, fake_gate_run(gate, seen))
    time.sleep(0.3)
    assert seen == []                          # started, and waiting at the gate
    results = run.hand_over({"vm1": {"vnet_probes": [{"id": "0"}]}})
    assert seen == [("vm1", {"vnet_probes": [{"id": "0"}]})]
    assert results == {"vm1": {"probes": {"0": {"observed": "pass"}}}}


def test_a_run_nobody_takes_is_called_off(tmp_path):
    seen: list = []
    key = str(tmp_path)
    earlyrun.start(key, tmp_path / "gate", fake_gate_run(tmp_path / "gate", seen))
    run = earlyrun.take(key)
    assert run is not None and earlyrun.take(key) is None
    earlyrun.start(key, tmp_path / "gate", fake_gate_run(tmp_path / "gate", seen))
    earlyrun.cancel(key)
    assert seen == [] and earlyrun.take(key) is None
    run.call_off()
    assert not run.thread.is_alive()


def test_ansible_starts_the_real_playbook_with_a_gate_per_guest(tmp_path, monkeypatch):
    from provisioner.verify import ansible as guest_ansible
    started = []
    monkeypatch.setattr(earlyrun, "start", lambda key, gate, run: started.append((key, gate)))
    guest_ansible.start_early("lab", TARGET, Inventory(
        hosts={"vm1": {"ansible_host": "100.64.0.10"}}, mgmt_host_ip="100.64.0.1",
        work_dir=tmp_path))
    assert started == [(guest_ansible.early_key(TARGET, "lab"), tmp_path / "ansible" / "gate")]


def test_verify_takes_the_early_run_and_hands_it_the_cells(tmp_path, monkeypatch):
    from provisioner.verify import ansible as guest_ansible
    seen: list = []
    gate = tmp_path / "gate"
    lab = SimpleNamespace(name="lab", vms=[SimpleNamespace(name="vm1")], tunnels=[])
    monkeypatch.setattr(guest_ansible.tunnelcells, "write_guest_files", lambda lab, d: {})
    earlyrun.start(guest_ansible.early_key(TARGET, "lab"), gate, fake_gate_run(gate, seen))
    results = guest_ansible.run_guests(lab, TARGET, [], Inventory(
        hosts={"vm1": {"ansible_host": "100.64.0.10"}}, mgmt_host_ip="100.64.0.1",
        work_dir=tmp_path), lambda line: None)
    assert results == {"vm1": {"probes": {"0": {"observed": "pass"}}}}
    assert seen == [("vm1", {"vnet_probes": [], "vnet_nic_macs": [], "vnet_forwards": [],
                             "vnet_listening": {}, "vnet_failovers": []})]   # no connection vars


def test_the_run_starts_at_the_first_vm_event_and_every_line_and_event_passes_on():
    lines, events, starts = [], [], []

    class Printer:
        def __call__(self, line):
            lines.append(line)

        def event(self, event):
            events.append(event)
    progress = earlyrun.StartOnBoot(Printer(), lambda: starts.append(1))
    progress("defined")
    progress.event(Cells(0, 1))
    assert not starts
    progress.event(VmState("vm1", "defined"))
    progress.event(VmState("vm2", "defined"))
    assert starts == [1] and events == [Cells(0, 1), VmState("vm1", "defined"),
                                        VmState("vm2", "defined")]
    assert lines[0] == "defined" and "while the guests boot" in lines[-1]


def test_a_start_that_fails_only_means_ansible_starts_after_the_boot():
    lines: list = []

    def fails():
        raise OSError("no record yet")
    progress = earlyrun.StartOnBoot(lines.append, fails)
    progress.event(VmState("vm1", "booting"))
    assert lines == ["Ansible starts after the boot (no record yet)"]


def test_up_before_a_verify_starts_the_run_at_boot_and_calls_it_off_when_up_fails(monkeypatch):
    import pytest

    from provisioner import ops
    from provisioner.progress import emit
    calls = []

    class Driver:
        target = TARGET

        def inventory(self, lab):
            return "the inventory"

        def up(self, lab, progress, wait=True):
            emit(progress, VmState("vm1", "defined"))
            raise RuntimeError("the boot failed")
    monkeypatch.setattr(ops.labs, "driver", lambda *a: Driver())
    monkeypatch.setattr(earlyrun.os, "cpu_count", lambda: 4)      # a core to spare
    from provisioner.verify import ansible as guest_ansible
    monkeypatch.setattr(guest_ansible, "start_early", lambda *a: calls.append(("start",) + a))
    monkeypatch.setattr(guest_ansible, "cancel_early", lambda *a: calls.append(("cancel",) + a))
    lab = SimpleNamespace(name="lab", vms=[SimpleNamespace(cpus=1), SimpleNamespace(cpus=1)])
    with pytest.raises(RuntimeError):
        ops.labs.up(lab, "libvirt", None, None, lambda line: None, verify_next=True)
    assert calls == [("start", "lab", TARGET, "the inventory"), ("cancel", TARGET, "lab")]
    calls.clear()
    with pytest.raises(RuntimeError):           # no verify follows: nothing starts early
        ops.labs.up(lab, "libvirt", None, None, lambda line: None)
    monkeypatch.setattr(earlyrun.os, "cpu_count", lambda: 2)      # the guests take every core
    with pytest.raises(RuntimeError):
        ops.labs.up(lab, "libvirt", None, None, lambda line: None, verify_next=True)
    assert calls == []


def test_the_early_start_needs_a_core_the_booting_guests_leave_free():
    assert earlyrun.pays(2, host_cpus=3) and not earlyrun.pays(2, host_cpus=2)
