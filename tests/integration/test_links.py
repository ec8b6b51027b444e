"""Bonds and routers in a real sandbox (issue 17): the example lab boots; its route cells and
the bond's failover (vnet cuts the active member's link through libvirt) are green; the
router's forwarding off turns the route cells red, and only them; a bond whose other member's
link is down too turns bond_failover red, and only it."""
import re
import time
from pathlib import Path

import pytest

from provisioner.drivers.base import driver_class
from provisioner.drivers.libvirt import lifecycle
from provisioner.lab import loader as labfile
from provisioner.lab.model import Backend
from provisioner.verify import run as verifier
from tests.integration.conftest import guest_ssh


pytestmark = pytest.mark.integration
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "bonds-and-router.yaml"


def say(message):
    print(message, flush=True)


def settled_off(target, lab, mac: str, seconds: float = 60) -> None:
    """Wait until a's bond has an active member other than the NIC with `mac`."""
    deadline = time.monotonic() + seconds
    while True:
        text = guest_ssh(target, lab.name, "a", "cat /proc/net/bonding/bond0")
        members = dict(re.findall(r"Slave Interface: (\S+).*?Permanent HW addr: (\S+)", text,
                                  re.S))
        active = re.search(r"Currently Active Slave: (\S+)", text)
        if active and members.get(active.group(1), mac) != mac:
            return
        assert time.monotonic() < deadline, f"the bond kept {mac} active:\n{text}"
        time.sleep(0.2)


def red(result):
    return {(c["kind"], c["source"], c["target"]): c["detail"]
            for c in result["checks"] if not c["ok"]}


def test_bond_failover_and_route_green_then_their_negative_controls(lab_sandbox):
    lab = labfile.load(EXAMPLE, labfile.sandbox_defaults(lab_sandbox))
    target = lifecycle.target_for(lab_sandbox.name, None)
    started = time.monotonic()
    try:
        record = lifecycle.up(lab, target, say)
        say(f"boot to ready: {time.monotonic() - started:.0f}s ({record['timings']})")
        say(guest_ssh(target, lab.name, "a", "cat /proc/net/bonding/bond0; ip -4 route"))

        result = verifier.verify(lab, target, say, timings=record["timings"])
        say(verifier.matrix_text(result))
        assert result["ok"], red(result)
        cells = {c["kind"]: c for c in result["checks"]}
        assert {"route", "bond_failover"} <= set(cells)
        detail = cells["bond_failover"]["detail"]
        moved = re.search(r"active member (eth\d+) -> (eth\d+); cut \1 ", detail)
        assert moved and moved.group(1) != moved.group(2) and " ms " in detail, detail
        assert "vnet cut the link of NIC 0" in detail and "restored" in detail, detail

        # negative control 1: the router stops forwarding -> the route cells, and only them
        guest_ssh(target, lab.name, "r", "echo 0 > /proc/sys/net/ipv4/ip_forward")
        result = verifier.verify(lab, target, say, timings=record["timings"])
        assert {k for k, _, _ in red(result)} == {"route"}, red(result)
        assert all(c["observed"] == "fail" for c in result["checks"] if c["kind"] == "route")
        guest_ssh(target, lab.name, "r", "echo 1 > /proc/sys/net/ipv4/ip_forward")

        # negative control 2: the other member's link is down too (NIC 1 is active since the
        # failover, so NIC 0 is the backup) -> no failover: bond_failover, and only it
        driver = driver_class(Backend.LIBVIRT)(target)
        driver.set_link(lab.name, "a", 0, False)
        # that cut is the test's, not a cell's: the bond settles on the other member first,
        # or the VM<->VM cells race its failover (a loaded TCG guest takes seconds)
        settled_off(target, lab, lab.vm("a").nics[0].mac)
        result = verifier.verify(lab, target, say, timings=record["timings"])
        driver.set_link(lab.name, "a", 0, True)
        assert set(red(result)) == {("bond_failover", "a", "host (10.71.1.1) over bond0")}, \
            red(result)
    finally:
        lifecycle.destroy(lab.name, target, say)
