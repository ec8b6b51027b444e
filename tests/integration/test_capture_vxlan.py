"""A real VXLAN pair on this machine's kernel (VXLAN is built in, see LAB-FACTS "Kernel
features"), captured by host/capture.py on the bridge between the two ends and judged by
verify/wire.py. No QEMU: three network namespaces of the test's own.

    ns left (vx0 VNI 4242, 10.99.0.1)   ns mid: bridge br0        ns right (vx0, 10.99.0.2)
      u0 192.0.2.1 ------------------ ul / ur ------------------ u0 192.0.2.2

A nonce sent over the overlay must appear inside VXLAN frames with VNI 4242 on br0 (a bridge
passes up the frames it forwards between its ports only when promiscuous: tcpdump makes it so);
the same capture judged with another VNI is red, and a frame sent on the underlay outside the
tunnel never counts as "inside"."""
import socket
import uuid

import pytest

from provisioner.host import capture, runner
from provisioner.host.netns import run_in_netns
from provisioner.verify import wire

pytestmark = pytest.mark.integration


def ip(*args):
    runner.run(["ip", *args])


@pytest.fixture
def vxlan_pair():
    if runner.which("tcpdump") is None or runner.which("ip") is None:
        pytest.skip("needs tcpdump and iproute2: apt-get install tcpdump iproute2")
    import os

    if os.geteuid() != 0:
        pytest.skip("needs root: creates network namespaces")
    tag = uuid.uuid4().hex[:6]
    left, mid, right = (f"vtcap-{tag}-{side}" for side in ("l", "m", "r"))
    for ns in (left, mid, right):
        ip("netns", "add", ns)
    try:
        ip("-n", mid, "link", "add", "br0", "type", "bridge")
        for ns, peer, addr in ((left, "ul", "192.0.2.1"), (right, "ur", "192.0.2.2")):
            ip("-n", mid, "link", "add", peer, "type", "veth", "peer", "name", "u0", "netns", ns)
            ip("-n", mid, "link", "set", peer, "master", "br0", "up")
            ip("-n", ns, "addr", "add", f"{addr}/24", "dev", "u0")
            ip("-n", ns, "link", "set", "u0", "up")
            ip("-n", ns, "link", "add", "vx0", "type", "vxlan", "id", "4242", "dstport", "4789",
               "local", addr, "remote", "192.0.2.2" if addr.endswith(".1") else "192.0.2.1",
               "dev", "u0")
            ip("-n", ns, "addr", "add", "10.99.0." + addr[-1] + "/24", "dev", "vx0")
            ip("-n", ns, "link", "set", "vx0", "up")
            ip("-n", ns, "link", "set", "lo", "up")
        ip("-n", mid, "link", "set", "br0", "up")
        wait_ready([(mid, "ul"), (mid, "ur"), (mid, "br0"), (left, "u0"), (right, "u0")])
        yield left, mid, right
    finally:
        for ns in (left, mid, right):
            runner.run(["ip", "netns", "del", ns], check=False)


def wait_ready(devices, limit: float = 30.0) -> None:
    """Each (namespace, device) transmits once the kernel's linkwatch has seen its carrier and
    given it a real qdisc (until then it is "noop", which drops every frame), and a bridge
    port forwards only from then on too. Linkwatch runs asynchronously and lags under load."""
    import json
    import time

    deadline = time.monotonic() + limit
    while True:
        waiting = {}
        for ns, dev in devices:
            info = json.loads(runner.run(["ip", "-n", ns, "-j", "-d", "link", "show", dev])
                              .stdout)[0]
            port = info.get("linkinfo", {}).get("info_slave_data", {}).get("state", "forwarding")
            if info.get("qdisc") == "noop" or info.get("operstate") != "UP" or port != "forwarding":
                waiting[f"{ns}/{dev}"] = (info.get("qdisc"), info.get("operstate"), port)
        if not waiting:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"links not ready after {limit:g}s: {waiting}")
        time.sleep(0.05)


def resolved(ns: str, addresses, limit: float = 30.0) -> None:
    """Send until the neighbours are resolved: a first ARP probe may leave a timer later than
    the datagram (the kernel queues the datagram meanwhile), and a capture stopped before it
    would hold nothing."""
    import time

    deadline = time.monotonic() + limit
    for address in addresses:
        while True:
            run_in_netns(ns, send, b"warm-up\n", address, 1)
            found = runner.run(["ip", "-n", ns, "neigh", "show", address]).stdout
            if any(s in found for s in ("REACHABLE", "STALE", "DELAY", "PROBE")):
                break
            if time.monotonic() > deadline:
                pytest.fail(f"{address} unresolved in {ns} after {limit:g}s: {found!r}")
            time.sleep(0.1)


def frames_with(pcap, nonce: bytes, least: int, limit: float = 30.0) -> None:
    """Wait until tcpdump has written the frames (-U: one write per frame) before stopping it."""
    import time

    deadline = time.monotonic() + limit
    while len(wire.frames_with(pcap, nonce)) < least and time.monotonic() < deadline:
        time.sleep(0.05)


def send(payload: bytes, target: str, count: int = 3) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _ in range(count):
            s.sendto(payload, (target, 7))


def test_a_real_vxlan_nonce_is_captured_on_the_bridge_and_decoded(vxlan_pair, tmp_path):
    left, mid, _ = vxlan_pair
    nonce = f"encap-{uuid.uuid4().hex[:16]}".encode()
    resolved(left, ("192.0.2.2", "10.99.0.2"))
    point = capture.CapturePoint("bridge br0", "br0", mid)
    cap = capture.start(point, tmp_path / "u.pcap", tmp_path)
    try:
        print(f"capture start latency {cap.started_in * 1000:.0f} ms")
        run_in_netns(left, send, b"VNET " + nonce + b"\n", "10.99.0.2")
        run_in_netns(left, send, b"plain " + nonce + b"\n", "192.0.2.2", 1)   # not tunnelled
        frames_with(tmp_path / "u.pcap", nonce, 4)
    finally:
        summary = cap.stop()
    print(summary)
    assert not cap.filter_file.exists() and not cap.record.exists()
    ok, detail = wire.check(tmp_path / "u.pcap", wire.Expectation("vxlan", nonce, id=4242))
    print(detail)
    assert ok, (detail, summary, cap.log.read_text())
    assert "VXLAN VNI 4242" in detail and "inside" in detail
    ok, detail = wire.check(tmp_path / "u.pcap", wire.Expectation("vxlan", nonce, id=4243))
    assert not ok and "no frame of the tunnel" in detail, detail


def test_a_filter_and_a_count_end_the_capture_by_themselves(vxlan_pair, tmp_path):
    left, mid, _ = vxlan_pair
    nonce = f"encap-{uuid.uuid4().hex[:16]}".encode()
    resolved(left, ("192.0.2.2", "10.99.0.2"))
    point = capture.CapturePoint("bridge br0", "br0", mid)
    cap = capture.start(point, tmp_path / "c.pcap", tmp_path, bpf="udp port 4789", count=2)
    run_in_netns(left, send, b"plain " + nonce + b"\n", "192.0.2.2", 2)   # filtered out
    run_in_netns(left, send, b"VNET " + nonce + b"\n", "10.99.0.2", 4)
    assert cap.wait(30) == 0
    cap.stop()
    frames = list(wire.read_pcap(tmp_path / "c.pcap"))
    assert len(frames) == 2 and all(f.find("vxlan") for f in frames)
