"""`vnet capture` on a real two-VM lab in the sandbox (issue 18, point 3): a capture of vm2's
NIC written to a file and one streamed to stdout (`-w -`, as for `| wireshark -k -i -`) both
hold the frames of a nonce probe from the sandbox host to vm2's echo service, found by
verify/wire.py; a wrong NIC is refused with exit 2."""
import os
import socket
import subprocess
import sys
import time
import uuid

import pytest

from provisioner.drivers.libvirt import lifecycle
from provisioner.host.netns import run_in_netns
from provisioner.lab import loader as labfile
from provisioner.lab.defaults import ECHO_PORT, default_lab
from provisioner.verify import wire

pytestmark = pytest.mark.integration
VNET = os.path.join(os.path.dirname(sys.executable), "vnet")


def say(message):
    print(message, flush=True)


def probe(address: str, nonce: str) -> str:
    """Runs in the sandbox host namespace: one nonce exchange with the guest's echo service."""
    with socket.create_connection((address, ECHO_PORT), timeout=10) as sock:
        sock.sendall(f"VNET {nonce}\n".encode())
        sock.settimeout(10)
        return sock.recv(200).decode(errors="replace")


def start_capture(argv, out):
    proc = subprocess.Popen([VNET, "capture", *argv], stdout=out, stderr=subprocess.PIPE,
                            text=False)
    line = proc.stderr.readline().decode()
    assert "capturing on" in line, line + proc.stderr.read().decode()
    return proc, line


def test_vnet_capture_writes_and_streams_a_probes_frames(lab_sandbox, tmp_path):
    if not os.path.exists(VNET):
        pytest.skip(f"the vnet command is not installed beside {sys.executable}: pip install .")
    lab = labfile.resolve(default_lab("hostonly", "virtio", 2, "capt"),
                          labfile.sandbox_defaults(lab_sandbox))
    target = lifecycle.target_for(lab_sandbox.name, None)
    vm2 = str(lab.vm("vm2").nics[0].ip.ip)
    began = time.monotonic()
    try:
        lifecycle.up(lab, target, say)
        say(f"lab up in {time.monotonic() - began:.0f}s")
        common = ["--sandbox", lab_sandbox.name]
        bad = subprocess.run([VNET, "capture", "capt", "vm2:3", *common], capture_output=True,
                             text=True)
        assert bad.returncode == 2 and bad.stderr.count("\n") == 1, bad.stderr
        assert "vms.vm2.nics[3]: lab capt has no such NIC" in bad.stderr

        to_file = tmp_path / "vm2.pcap"
        streamed = tmp_path / "streamed.pcap"
        with open(streamed, "wb") as out:
            file_cap, line = start_capture(["capt", "vm2:0", "-w", str(to_file), "--duration",
                                            "60", *common], subprocess.DEVNULL)
            say(line.strip())
            stream_cap, _ = start_capture(["capt", "vm2", "-w", "-", "--filter",
                                           f"tcp port {ECHO_PORT}", *common], out)
            nonce = f"capture-{uuid.uuid4().hex[:12]}"
            answer = run_in_netns(lab_sandbox.host_netns, probe, vm2, nonce)
            assert answer.startswith(f"VNET {nonce} vm2"), answer
            time.sleep(1)                  # tcpdump writes each frame at once (-U); margin
            for proc in (file_cap, stream_cap):
                proc.send_signal(2)        # Ctrl-C: the usual end of a capture
            for proc in (file_cap, stream_cap):
                assert proc.wait(30) == 0, proc.stderr.read().decode()
                say(proc.stderr.read().decode().strip())
        for pcap in (to_file, streamed):
            found = wire.frames_with(pcap, nonce.encode())
            say(f"{pcap.name}: {pcap.stat().st_size} bytes, {len(found)} frames with the nonce")
            assert len(found) >= 2          # the probe and the echo's answer
            assert {f.find("tcp")[0].fields["dport"] for f in found} & {ECHO_PORT}
        assert all(f.find("tcp") for f in wire.read_pcap(streamed))   # the filter held
    finally:
        lifecycle.destroy(lab.name, target, say)
