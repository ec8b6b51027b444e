"""Boot a real cloud image (Debian/Ubuntu genericcloud qcow2) with vnet's overlay and NoCloud
seed under plain QEMU, and check the guest contract vnet relies on: the VNET-ADDR/VNET-READY
console lines, the echo listener on TCP 7, root SSH with the lab's key only, one default route.

No cloud image can be downloaded here, so this runs only when a local one is given, for example
the Debian 12 image `vnet image build --cloud debian12` builds (it prints the path and sha256):
  VNET_CLOUD_IMAGE=/path/to/disk.qcow2 \\
  VNET_CLOUD_IMAGE_SHA256=<its sha256> pytest tests/integration/test_cloud_image.py
NICs are QEMU user networking with restrict=on: the guest reaches nothing; the host reaches the
listener and SSH through two hostfwd ports. QEMU is killed by its PID.
"""
from __future__ import annotations

import importlib.util
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from provisioner import accel, cloudimages, labfile, seed
from provisioner.drivers.libvirt_render import Context, LibvirtRenderer
from provisioner.resources import data_dir

SKIP_REASON = ("set VNET_CLOUD_IMAGE=/path/to/image.qcow2 and VNET_CLOUD_IMAGE_SHA256 to boot a "
               "cloud image (none is available offline)")
IMAGE = os.environ.get("VNET_CLOUD_IMAGE")
SHA256 = os.environ.get("VNET_CLOUD_IMAGE_SHA256")
BOOT_TIMEOUT = 900          # a whole distribution with cloud-init, possibly under TCG

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not (IMAGE and SHA256), reason=SKIP_REASON)]


def qemu_accel() -> str:
    """KVM only when vnet has seen it boot a guest here (VNET_ACCEL, or accel's cached verdict):
    on some hosts /dev/kvm opens and guests then fail. Otherwise TCG."""
    choice = os.environ.get("VNET_ACCEL") or (accel.cached() or {}).get("accel") or "qemu"
    return {"qemu": "tcg"}.get(choice, choice)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def keypair(tmp_path_factory):
    for tool in ("qemu-system-x86_64", "qemu-img", "ssh", "ssh-keygen"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} is not installed")
    key = tmp_path_factory.mktemp("key") / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    return key, key.with_suffix(".pub").read_text().strip()


@pytest.fixture(scope="module")
def guest(tmp_path_factory, keypair):
    key, pub = keypair
    work = tmp_path_factory.mktemp("cloud")
    lab = labfile.resolve({
        "name": "cloudit",
        "networks": [{"name": "out", "mode": "nat"}],
        "vms": [{"name": "c1", "memory": 1024, "nics": [{"network": "out"}],
                 "image": {"url": Path(IMAGE).absolute().as_uri(), "sha256": SHA256}}]})
    plan = LibvirtRenderer(Context(ssh_pubkey=pub, log_dir=str(work))).plan(lab)
    cloud = plan.extra["cloud"]["c1"]
    base = cloudimages.fetch(cloud["image"], print)
    overlay = cloudimages.overlay(base, Path(cloud["overlay"]))
    iso = seed.build(cloud["seed"], cloud["seed_iso"])
    nat, mgmt = cloud["seed"].nics
    mgmt_ip = mgmt.address.split("/")[0]
    mgmt_net = re.sub(r"\.\d+/", ".0/", mgmt.address)
    echo_port, ssh_port = free_port(), free_port()
    argv = ["qemu-system-x86_64", "-M", "pc", "-accel", qemu_accel(), "-m", "1024",
            "-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio",
            "-drive", f"file={overlay},if=virtio,format=qcow2",
            # as the domain XML: IDE on the pc machine's PIIX (Debian's cloud kernel has no AHCI)
            "-drive", f"file={iso},if=ide,index=2,format=raw,media=cdrom,readonly=on",
            "-netdev", f"user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:{echo_port}-:7",
            "-device", f"virtio-net-pci,netdev=n0,mac={nat.mac}",
            "-netdev", f"user,id=n1,restrict=on,net={mgmt_net},"
                       f"hostfwd=tcp:127.0.0.1:{ssh_port}-{mgmt_ip}:22",
            "-device", f"virtio-net-pci,netdev=n1,mac={mgmt.mac}",
            "-device", "virtio-rng-pci"]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    console = bytearray()

    def pump():
        while chunk := os.read(proc.stdout.fileno(), 65536):
            console.extend(chunk)
    threading.Thread(target=pump, daemon=True).start()

    def wait_for(pattern: str) -> re.Match:
        end = time.monotonic() + BOOT_TIMEOUT
        while True:
            text = console.decode(errors="replace").replace("\r", "")
            match = re.search(pattern, text, re.M)
            if match:
                return match
            if proc.poll() is not None or time.monotonic() > end:
                raise AssertionError(f"no {pattern!r} on the console; last lines:\n{text[-4000:]}")
            time.sleep(0.5)

    try:
        yield {"wait_for": wait_for, "nat": nat, "mgmt": mgmt, "mgmt_ip": mgmt_ip, "key": key,
               "echo_port": echo_port, "ssh_port": ssh_port}
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()


def ssh(g, command: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ssh", "-i", str(g["key"]), "-p", str(g["ssh_port"]),
                           "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
                           "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=20",
                           "root@127.0.0.1", command], capture_output=True, text=True, timeout=60)


def test_console_reports_addresses_then_ready(guest):
    guest["wait_for"](rf"^VNET-ADDR {guest['nat'].mac} 10\.0\.2\.15/24 nic0\s*$")
    guest["wait_for"](rf"^VNET-ADDR {guest['mgmt'].mac} {re.escape(guest['mgmt'].address)} mgmt\s*$")
    guest["wait_for"](r"^VNET-READY c1\s*$")


def test_echo_listener_answers_the_verifier_protocol(guest):
    guest["wait_for"](r"^VNET-READY c1\s*$")
    path = data_dir("playbooks") / "library" / "vnet_probe.py"
    spec = importlib.util.spec_from_file_location("vnet_probe", path)
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    result = probe.probe({"target": "127.0.0.1", "port": guest["echo_port"], "expect_name": "c1"})
    assert result["observed"] == "pass", result


def test_root_ssh_with_the_lab_key_and_one_default_route(guest):
    guest["wait_for"](r"^VNET-READY c1\s*$")
    out = ssh(guest, "id -u; hostname; ip -4 route show default; python3 -c 'print(6*7)'; "
                     "sshd -T 2>/dev/null | grep -i '^passwordauthentication'")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "0" and lines[1] == "c1" and "42" in lines
    assert [l for l in lines if l.startswith("default")] == \
        [l for l in lines if l.startswith("default via 10.0.2.2 dev nic0")]
    assert "passwordauthentication no" in out.stdout.lower()
