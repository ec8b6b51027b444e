"""A UDP port forward on a real natnetwork lab: vnet's port proxy relays a datagram from the
sandbox host namespace (and from its Internet) to a guest service and the answer back. The lab
comes from the pytest plugin's vnet_lab fixture (labs/udpfwd.yaml)."""
import secrets
import shlex
import socket
import time

import pytest

from provisioner.host import netns, runner

pytestmark = pytest.mark.integration
HOST_PORT, GUEST_PORT = 15353, 5353    # labs/udpfwd.yaml's "dns" forward
# A UDP service in the guest: answers each datagram with itself and the guest's name.
GUEST_SERVICE = (
    "import socket\n"
    "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
    f"s.bind(('0.0.0.0', {GUEST_PORT}))\n"
    "name = open('/proc/sys/kernel/hostname', 'rb').read().strip()\n"
    "while True:\n"
    "    data, peer = s.recvfrom(2048)\n"
    "    s.sendto(data + b' ' + name, peer)\n")


def ask_udp(address: str, port: int, payload: bytes, patience: float) -> bytes | None:
    """Runs in a namespace: send until an answer comes (the guest's service may still be
    starting), from one socket, so one proxy session."""
    deadline = time.monotonic() + patience
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(1.0)
        while time.monotonic() < deadline:
            s.sendto(payload, (address, port))
            try:
                return s.recvfrom(2048)[0]
            except socket.timeout:
                continue
    return None


def test_udp_forward_on_natnetwork_relays_both_ways(lab_sandbox, vnet_lab):
    lab = vnet_lab("labs/udpfwd.yaml", sandbox=lab_sandbox.name)
    lab.ssh("vm1", f"setsid python3 -c {shlex.quote(GUEST_SERVICE)} </dev/null >/dev/null 2>&1 &")
    for ns in (lab_sandbox.host_netns, lab_sandbox.inet_netns):
        nonce = secrets.token_hex(8).encode()
        answer = netns.run_in_netns(ns, ask_udp, lab_sandbox.host_uplink_ip, HOST_PORT,
                                    nonce, 60.0)
        assert answer == nonce + b" vm1", f"from {ns}: {answer!r}"
    lab.destroy()
    assert runner.run(["pgrep", "-f", f"portproxy.py .*udp:.*:{HOST_PORT}="],
                      check=False).stdout.strip() == ""
