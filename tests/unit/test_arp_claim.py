"""nat VM<->VM: every VM is 10.0.2.15 on its own private NAT, so the cell asks the NIC's
layer-2 segment who holds that address (vnet_probe.probe_arp_claim). Before, it probed
10.0.2.15 over IP, which never left the prober: its own answer "proved" isolation, and the
cell could not go red. Here the probe runs in a real namespace on one end of a veth pair; the
other end plays the segment: an isolated NAT (only the gateway answers), a shared segment
(the peer holds the address too), a stranger holding it, and a segment where nothing answers."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest

from provisioner.verify import checks

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: it makes network "
                                                          "namespaces and packet sockets")
PROBER, PEER, STRANGER = "52:54:00:00:00:0a", "52:54:00:00:00:0b", "52:54:00:00:00:0c"


@pytest.fixture
def segment():
    """The prober's namespace (10.0.2.15 on a0) and the other end's (b0), made and deleted
    here. Yields a function: give b0 a MAC and addresses, run the cell's probe on a0."""
    tag = uuid.uuid4().hex[:6]
    a, b = f"utarp-{tag}-a", f"utarp-{tag}-b"
    ip = lambda *args: subprocess.run(["ip", *args], check=True)   # noqa: E731
    ip("netns", "add", a)
    ip("netns", "add", b)
    try:
        ip("-n", a, "link", "add", "a0", "address", PROBER, "type", "veth", "peer", "name",
           "b0", "netns", b)
        ip("-n", a, "addr", "add", "10.0.2.15/24", "dev", "a0")
        for ns, dev in ((a, "a0"), (b, "b0")):
            ip("-n", ns, "link", "set", dev, "up")

        def probe(mac: str, *addresses: str) -> dict:
            ip("-n", b, "link", "set", "b0", "address", mac)
            for address in addresses:
                ip("-n", b, "addr", "add", f"{address}/24", "dev", "b0")
            spec = dict(cell().probe, bind_mac=PROBER, arp_wait=1.0)
            ran = subprocess.run(
                ["ip", "netns", "exec", a, sys.executable, "-c",
                 "import json, sys; from provisioner.verify.run import probe_module; "
                 "print(json.dumps(probe_module().probe(json.loads(sys.argv[1]))))",
                 json.dumps(spec)], capture_output=True, text=True, check=True)
            return json.loads(ran.stdout)
        yield probe
    finally:
        subprocess.run(["ip", "netns", "del", a])
        subprocess.run(["ip", "netns", "del", b])


def cell():
    """vm1's nat VM<->VM cell towards vm2, with vm2's NIC given the PEER MAC."""
    from provisioner.lab import loader as labfile
    from provisioner.lab.defaults import default_lab
    from provisioner.lab.model import Backend

    data = default_lab("nat")
    data["vms"][1]["nics"][0]["mac"] = PEER
    lab = labfile.resolve(data)
    ends = checks.Endpoints(host_listener_port=20000, internet_ip=None,
                            host_uplink_ip="127.0.0.1", mgmt_host_ip="100.64.9.1")
    return next(c for c in checks.build(lab, Backend.LIBVIRT, ends)
                if c.kind == "vm_to_vm" and c.source == "vm1")


def judged(result: dict):
    c = cell()
    c.observed, c.detail = result["observed"], result["detail"]
    return c


def test_an_isolated_nat_is_green(segment):
    c = judged(segment(STRANGER, "10.0.2.2"))       # only the NAT's gateway on the segment
    assert c.observed == "fail" and c.ok, c.detail
    assert "the gateway 10.0.2.2 answered" in c.detail


def test_a_peer_on_the_same_segment_turns_the_cell_red(segment):
    c = judged(segment(PEER, "10.0.2.2", "10.0.2.15"))
    assert c.observed == "pass" and not c.ok
    assert c.detail.startswith(f"connected at layer 2: vm2 ({PEER})")


def test_a_stranger_holding_the_address_is_a_leak(segment):
    c = judged(segment(STRANGER, "10.0.2.2", "10.0.2.15"))
    assert c.observed == "error" and not c.ok and STRANGER in c.detail


def test_silence_without_the_gateways_answer_proves_nothing(segment):
    c = judged(segment(STRANGER))
    assert c.observed == "error" and not c.ok and "not proven to carry ARP" in c.detail
