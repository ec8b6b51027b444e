"""The UDP nonce exchange across real namespaces (a sandbox's host and Internet, joined by a
veth pair; no guest): vnet's listener answers UDP as well as TCP, an ICMP port unreachable is
a "fail", and silence is an "error" unless a positive control saw the same listener up, in
which case it is a "fail" (the path dropped the datagram)."""
import random
import sys
import time

import pytest

from provisioner.verify import checks
from provisioner.host import netns, runner
from provisioner.verify import run as verifier
from provisioner.resources import data_dir

pytestmark = pytest.mark.integration


@pytest.fixture
def internet_listener(lab_sandbox, tmp_path):
    """vnet's own listener in the sandbox's Internet, as verify starts it."""
    port = random.randint(30000, 39999)
    log = tmp_path / "listener.log"
    script = str(data_dir("playbooks") / "library" / "vnet_probe.py")
    proc = runner.spawn(netns.netns_argv(lab_sandbox.inet_netns, [
        sys.executable, script, "--serve", str(port), "internet"]), log_path=str(log))
    try:
        deadline = time.monotonic() + 10
        while "ready" not in (log.read_text() if log.exists() else ""):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait()


def test_udp_and_tcp_through_the_sandbox(lab_sandbox, internet_listener):
    probe = verifier.probe_module()
    ip, port = lab_sandbox.internet_ip, internet_listener
    results = netns.run_in_netns(lab_sandbox.host_netns, probe.run_all, [
        {"id": "udp", "target": ip, "port": port, "proto": "udp", "expect_name": "internet"},
        {"id": "tcp", "target": ip, "port": port, "expect_name": "internet"},
        {"id": "closed", "target": ip, "port": port + 1, "proto": "udp",
         "expect_name": "internet"},
        {"id": "wrong", "target": ip, "port": port, "proto": "udp", "expect_name": "vm1"}])
    assert results["udp"] == {"observed": "pass", "detail": f"nonce echoed by internet (seen "
                                                            f"from {lab_sandbox.host_uplink_ip})"}
    assert results["tcp"]["observed"] == "pass"
    assert results["closed"] == {"observed": "fail", "detail": "refused (ICMP port unreachable)",
                                 "refused": True}
    assert results["wrong"] == {"observed": "error", "reached": True,
                                "detail": "leak: answered by internet instead of vm1"}


def test_udp_silence_is_a_fail_only_when_a_control_saw_the_listener(lab_sandbox,
                                                                    internet_listener):
    """The Internet drops UDP to the listener from outside (not from itself): the host's probe
    meets silence, the Internet's own probe of the same listener passes."""
    probe = verifier.probe_module()
    ip, port = lab_sandbox.internet_ip, internet_listener
    drop = ["INPUT", "!", "-i", "lo", "-p", "udp", "--dport", str(port), "-j", "DROP"]
    spec = {"target": ip, "port": port, "proto": "udp", "expect_name": "internet",
            "listener": "internet-udp", "timeout": 2.0}
    cells = [checks.Check("vm_to_internet", "n", "x", "internet", "itself", "pass", "internet",
                          dict(spec)),
             checks.Check("internet_to_vm", "n", "x", "host", "internet", "fail", "host",
                          dict(spec))]
    checks.link_controls(cells)
    runner.run(netns.netns_argv(lab_sandbox.inet_netns, ["iptables", "-I", *drop]))
    try:
        sides = {}
        for i, (cell, place) in enumerate(zip(cells, (lab_sandbox.inet_netns,
                                                      lab_sandbox.host_netns))):
            r = netns.run_in_netns(place, probe.run_all, [dict(cell.probe, id=str(i))])
            sides[f"{cell.runner}:{i}"] = r[str(i)]
        assert sides["host:1"]["observed"] == "error" and sides["host:1"]["silent"]
        verifier.record(cells, {}, sides)
        assert [c.observed for c in cells] == ["pass", "fail"]
        assert cells[1].ok and "listener is up" in cells[1].detail
        # without the control, the same silence proves nothing
        verifier.record(cells, {}, dict(sides, **{"internet:0": {"observed": "fail",
                                                                 "detail": "refused"}}))
        assert cells[1].observed == "error" and not cells[1].ok
    finally:
        runner.run(netns.netns_argv(lab_sandbox.inet_netns, ["iptables", "-D", *drop]),
                   check=False)
