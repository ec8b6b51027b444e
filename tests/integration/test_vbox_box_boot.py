"""The VirtualBox box (`vnet image box --provider virtualbox`) booted the way VirtualBox would
boot it, with QEMU standing in for VirtualBox (it cannot be installed here): the box's
streamOptimized VMDK on an AHCI disk, a per-VM boot ISO written by the box's own Vagrantfile
(Ruby, VnetTinyBox.boot_iso) on the DVD, an e1000 adapter 1 with Vagrant's base MAC on a
private NAT (SLIRP, restrict=on) whose SSH port is forwarded to 127.0.0.1 as Vagrant's is, and
an adapter 2 whose static address comes from the per-VM ISO.
Then SSH with the box's key through that forward, as `vagrant ssh` would. QEMU is killed by
its PID; nothing leaves loopback."""
from __future__ import annotations

import shutil
import socket
import subprocess
import tarfile
import time

import pytest

from provisioner.guest import vagrantbox

pytestmark = pytest.mark.integration
BOOT_TIMEOUT = 180.0
NIC = "08:00:27:16:00:0a,static,192.168.56.10/24"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_virtualbox_box_boots_from_its_vmdk_and_per_vm_iso(tmp_path):
    for tool, package in (("qemu-system-x86_64", "qemu-system-x86"), ("ruby", "ruby"),
                          ("ssh", "openssh-client"), ("qemu-img", "qemu-utils")):
        if not shutil.which(tool):
            pytest.skip(f"{tool} is not installed (apt-get install {package})")
    box = vagrantbox.build("virtualbox", tmp_path / "boxes", progress=print)
    unpacked = tmp_path / "box"
    with tarfile.open(box.path) as tar:
        tar.extractall(unpacked, filter="data")
    iso = tmp_path / "project" / ".vagrant" / "vnet-boot-vm1.iso"
    script = tmp_path / "per_vm.rb"
    script.write_text("module Vagrant\n  def self.configure(_v); end\nend\nload ARGV[0]\n"
                      "puts VnetTinyBox.boot_iso(ARGV[1], 'vm1', ARGV[2])\n")
    subprocess.run(["ruby", str(script), str(unpacked / "Vagrantfile"), str(iso), NIC],
                   check=True, timeout=60)
    port = free_port()
    log = tmp_path / "serial.log"
    argv = ["qemu-system-x86_64", "-M", "q35", "-accel", "tcg", "-m", "128", "-nographic",
            "-no-user-config", "-no-reboot", "-boot", "d", "-cdrom", str(iso),
            "-drive", f"file={unpacked / vagrantbox.DISK_FILE},if=none,id=r,format=vmdk,snapshot=on",
            "-device", "ahci,id=ahci", "-device", "ide-hd,drive=r,bus=ahci.0",
            "-netdev", f"user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:{port}-:22",
            "-device", f"e1000,netdev=n0,mac={vagrantbox.BASE_MAC}",
            # adapter 2, the lab NIC the slot names (a second private SLIRP, restrict=on)
            "-netdev", "user,id=n1,restrict=on,net=192.168.56.0/24",
            "-device", f"e1000,netdev=n1,mac={NIC.split(',')[0]}",
            "-serial", f"file:{log}"]
    start = time.monotonic()
    qemu = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        text = ""
        while time.monotonic() - start < BOOT_TIMEOUT:
            text = log.read_text(errors="replace") if log.exists() else ""
            # READY does not wait for DHCP (vnet's boot wait reads each NIC's VNET-ADDR line):
            # wait for adapter 1's lease line too, which may come after READY on a busy host.
            leased = f"VNET-ADDR {vagrantbox.BASE_MAC} " in text
            if ("VNET-READY" in text and leased) or "VNET-ERROR" in text or qemu.poll() is not None:
                break
            time.sleep(0.2)
        seconds = time.monotonic() - start
        print(f"\nTIMING VirtualBox box (QEMU as VirtualBox): BIOS -> VNET-READY {seconds:.1f}s")
        detail = f"\n--- serial ---\n{text[-3000:]}"
        assert "ISOLINUX" in text and "VNET-READY vm1" in text, detail
        assert f"VNET-ADDR {vagrantbox.BASE_MAC} 10.0.2.15/24" in text, detail
        ssh = subprocess.run(
            ["ssh", "-i", str(unpacked / "vagrant_private_key"), "-p", str(port),
             "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
             "-o", "BatchMode=yes", "-o", "ConnectTimeout=20", "root@127.0.0.1",
             "cat /proc/cmdline; ip -o -4 addr"], capture_output=True, text=True, timeout=120)
        assert ssh.returncode == 0, ssh.stderr + detail
        assert "vnet.host=vm1" in ssh.stdout and f"vnet.if={NIC}" in ssh.stdout, ssh.stdout
        assert "192.168.56.10/24" in ssh.stdout, ssh.stdout        # adapter 2 as the slot says
    finally:
        qemu.kill()                                   # only the QEMU this test started
        qemu.communicate(timeout=30)
