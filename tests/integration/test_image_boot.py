"""Boot the tiny image under plain QEMU (TCG, 128 MiB) and check the guest contract.

No host networking at all: NICs use SLIRP with restrict=on and no host forwards. Checks inside
the guest run on its serial console (vnet.console=shell); the Ansible test reaches dropbear
through a virtio-serial port backed by a Unix socket. Every QEMU is killed by its PID.
"""
from __future__ import annotations

import base64
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from provisioner.guest import images
from provisioner.guest.cmdline import QEMU_PC_ARGS

pytestmark = pytest.mark.integration
MAC = "52:54:00:12:34:56"
TIMINGS: dict[str, float] = {}


@pytest.fixture(scope="module")
def image():
    for tool in ("qemu-system-x86_64", "apt-get", "dpkg-deb", "mksquashfs"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} is not installed")
    start = time.monotonic()
    built = images.build_tiny(progress=lambda line: print(f"  [image] {line}"))
    TIMINGS["build_tiny"] = time.monotonic() - start
    start = time.monotonic()
    assert images.build_tiny(progress=lambda line: None) == built
    TIMINGS["build_tiny (cached)"] = time.monotonic() - start
    yield built
    print("\n" + "\n".join(f"TIMING {k}: {v:.2f}s" for k, v in TIMINGS.items()))


@pytest.fixture(scope="module")
def keypair(tmp_path_factory):
    if not shutil.which("ssh-keygen"):
        pytest.skip("ssh-keygen (openssh-client) is not installed")
    key = tmp_path_factory.mktemp("key") / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    return key, key.with_suffix(".pub").read_text().strip()


class Guest:
    """One QEMU with its serial console on stdio; output is collected by a thread."""

    def __init__(self, image, append: str, devices: list[str], mem: int = 128):
        self.argv = ["qemu-system-x86_64", "-M", "pc", "-accel", "tcg", "-m", str(mem),
                     "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
                     "-serial", "stdio", "-kernel", str(image.kernel), "-initrd", str(image.initrd),
                     "-drive", f"file={image.rootdisk},if=virtio,readonly=on,format=raw",
                     *devices, "-append", append]
        self.start = time.monotonic()
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        self._buf = bytearray()
        self._quiet = False
        self._lock = threading.Lock()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self):
        while chunk := os.read(self.proc.stdout.fileno(), 65536):
            with self._lock:
                self._buf += chunk

    @property
    def text(self) -> str:
        with self._lock:
            return self._buf.decode(errors="replace").replace("\r", "")

    def wait_for(self, pattern: str, timeout: float = 60, since: int = 0) -> tuple[re.Match, float]:
        end = time.monotonic() + timeout
        while True:
            exited = self.proc.poll() is not None
            if exited:
                time.sleep(0.3)  # let the reader drain the pipe
            match = re.search(pattern, self.text[since:], re.M)
            if match:
                return match, time.monotonic() - self.start
            if exited or time.monotonic() > end:
                why = f"qemu exited ({self.proc.returncode})" if exited else f"{timeout}s passed"
                raise AssertionError(f"{why} without {pattern!r}; console:\n{self.text[-4000:]}")
            time.sleep(0.05)

    def sh(self, command: str, timeout: float = 60) -> tuple[str, int]:
        """Run a command in the console shell (vnet.console=shell); (output, exit status)."""
        if not self._quiet:
            self._quiet = True
            self.sh("stty -echo")
        tag = time.monotonic_ns()
        since = len(self.text)
        sep = " " if command.rstrip().endswith("&") else "; "
        self.proc.stdin.write(f"echo BE''GIN{tag}; {command}{sep}echo EN''D{tag} $?\n".encode())
        self.proc.stdin.flush()
        # Not anchored at line starts: the shell's prompt may land on the BEGIN line when this
        # command is written before the previous prompt arrives (that made the test flaky).
        match, _ = self.wait_for(rf"BEGIN{tag}\r?\n((?s:.*?))END{tag} (\d+)", timeout, since)
        return match.group(1), int(match.group(2))

    def kill(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


@pytest.fixture
def boot(image):
    guests: list[Guest] = []

    def _boot(append: str, devices: list[str], **kw) -> Guest:
        guests.append(Guest(image, append, devices, **kw))
        return guests[-1]
    yield _boot
    for guest in guests:
        guest.kill()


def cmdline(image, host: str, nics=(), pubkey: str | None = None) -> str:
    """The vnet.* kernel parameters the lead's driver appends (see provisioner/guest/files/)."""
    words = [image.cmdline_base, QEMU_PC_ARGS, f"vnet.host={host}",
             *(f"vnet.if={nic}" for nic in nics)]
    if pubkey:
        words.append("vnet.key=" + ":".join(pubkey.split()[:2]))
    return " ".join(words)


def slirp(nic: str, mac: str = MAC, netdev: str = "n0", net: str = "") -> list[str]:
    opts = f"user,id={netdev},restrict=on" + (f",net={net}" if net else "")
    return ["-netdev", opts, "-device", f"{nic},netdev={netdev},mac={mac}"]


def test_probe_boot_prints_booted_and_powers_off(image, boot):
    guest = boot(f"{image.cmdline_base} vnet.probe=boot", ["-nic", "none"])
    _, seconds = guest.wait_for(r"^VNET-BOOTED$", timeout=60)
    TIMINGS["probe boot to VNET-BOOTED"] = seconds
    assert guest.proc.wait(timeout=20) == 0  # poweroff -f ends QEMU by itself


def test_virtio_static_ssh_echo_python(image, boot, keypair):
    key, pub = keypair
    append = cmdline(image, "web1", [f"{MAC},static,10.0.2.15/24,10.0.2.2"], pub)
    guest = boot(append + " vnet.console=shell", slirp("virtio-net-pci"))
    _, t_addr = guest.wait_for(rf"^VNET-ADDR {MAC} 10\.0\.2\.15/24 eth0$")
    _, t_ready = guest.wait_for(r"^VNET-READY web1$")
    TIMINGS["virtio static: VNET-ADDR"], TIMINGS["virtio static: VNET-READY"] = t_addr, t_ready
    assert t_addr <= t_ready
    assert "VNET-ERROR" not in guest.text

    out, rc = guest.sh("ip route")
    assert rc == 0 and "default via 10.0.2.2 dev eth0" in out
    out, _ = guest.sh("hostname; grep MemTotal /proc/meminfo; mount | grep ' / '")
    assert out.startswith("web1\n") and "squashfs (ro" in out

    # echo service: a slow client does not block a fast one; several at once all answer
    out, rc = guest.sh("(sleep 3; echo 'VNET slow') | nc 127.0.0.1 7 > /tmp/slow & sleep 0.3; "
                       "echo 'VNET fast' | nc 10.0.2.15 7; cat /tmp/slow; wait; cat /tmp/slow")
    assert out.split() == ["VNET", "fast", "web1", "VNET", "slow", "web1"], out
    out, _ = guest.sh("for i in 1 2 3 4 5 6; do (echo VNET n$i | nc 10.0.2.15 7 >/tmp/e$i) & done;"
                      " wait; cat /tmp/e*")
    assert sorted(re.findall(r"VNET n\d web1", out)) == [f"VNET n{i} web1" for i in range(1, 7)]

    # the key from vnet.key logs in (with a pty), another key does not
    secret = base64.b64encode(key.read_bytes()).decode()
    out, rc = guest.sh(f"echo {secret} | base64 -d > /tmp/k && /usr/lib/dropbear/dropbearconvert"
                       " openssh dropbear /tmp/k /tmp/k.db >/dev/null 2>&1 && echo converted")
    assert "converted" in out
    # (no dbclient -t here: it would read the console this shell reads its commands from)
    out, rc = guest.sh("dbclient -y -i /tmp/k.db root@10.0.2.15 'echo SSH-OK $(id -u) $HOME' "
                       "</dev/null 2>/dev/null")
    assert rc == 0 and "SSH-OK 0 /root" in out, out
    # setsid: with no controlling terminal, a refused key cannot fall back to a password
    # prompt on the console (that hung the test now and then); timeout bounds it anyway.
    # (in a subshell, and not as its last command, so setsid need not fork and rc is dbclient's)
    out, rc = guest.sh("dropbearkey -t ed25519 -f /tmp/other >/dev/null 2>&1; (timeout 15 "
                       "setsid dbclient -y -i /tmp/other root@127.0.0.1 'echo SHOULD-NOT-RUN' "
                       "</dev/null 2>&1; echo rc=$?)")
    assert "rc=0" not in out and "rc=" in out and "SHOULD-NOT-RUN" not in out, out
    out, rc = guest.sh("python3 -c 'import os, pty; print(os.ttyname(pty.openpty()[1]))'")
    assert rc == 0 and "/dev/pts/" in out, out  # devpts is mounted: ssh -tt gets a pty

    start = time.monotonic()
    out, rc = guest.sh("python3 -c 'import json, subprocess, hashlib, ssl, zlib; print(\"py\", 6*7)'")
    TIMINGS["python3 json+subprocess+ssl import in guest"] = time.monotonic() - start
    assert rc == 0 and "py 42" in out, out


def test_e1000_dhcp(image, boot):
    append = cmdline(image, "db1", [f"{MAC},dhcp"])
    guest = boot(append, slirp("e1000"))
    _, t_ready = guest.wait_for(r"^VNET-READY db1$")
    _, t_addr = guest.wait_for(rf"^VNET-ADDR {MAC} 10\.0\.2\.15/24 eth0$", timeout=30)
    TIMINGS["e1000 dhcp: VNET-READY"], TIMINGS["e1000 dhcp: VNET-ADDR"] = t_ready, t_addr
    assert "VNET-ERROR" not in guest.text


UDHCPD = """\
start 10.9.{n}.100
end 10.9.{n}.110
interface eth{n}
lease_file /tmp/leases{n}
option subnet 255.255.255.0
option router 10.9.{n}.1
"""


def test_two_guests_dhcp_router_only_with_gw(image, boot, tmp_path):
    """Guest A serves DHCP (with a router option) on two links; guest B takes the router as
    default route only on the NIC marked gw, then reaches A's echo service over the link.
    The links are QEMU stream netdevs on Unix sockets: no host network is involved."""
    links = [tmp_path / "link0.sock", tmp_path / "link1.sock"]
    a_macs, b_macs = ["52:54:00:0a:00:00", "52:54:00:0a:00:01"], ["52:54:00:0b:00:00", "52:54:00:0b:00:01"]
    dev_a = []
    for n, (link, mac) in enumerate(zip(links, a_macs)):
        dev_a += ["-netdev", f"stream,id=n{n},server=on,addr.type=unix,addr.path={link}",
                  "-device", f"virtio-net-pci,netdev=n{n},mac={mac}"]
    a = boot(cmdline(image, "srv", [f"{a_macs[0]},static,10.9.0.1/24",
                                                   f"{a_macs[1]},static,10.9.1.1/24"])
             + " vnet.console=shell", dev_a)
    a.wait_for(r"^VNET-READY srv$")
    for n in (0, 1):
        conf = base64.b64encode(UDHCPD.format(n=n).encode()).decode()
        out, rc = a.sh(f"echo {conf} | base64 -d > /tmp/udhcpd{n}.conf; touch /tmp/leases{n}; "
                       f"udhcpd -f /tmp/udhcpd{n}.conf </dev/null >/dev/null 2>&1 &")
        assert rc == 0, out
    dev_b = []
    for n, (link, model, mac) in enumerate(zip(links, ("e1000", "virtio-net-pci"), b_macs)):
        dev_b += ["-netdev", f"stream,id=n{n},server=off,addr.type=unix,addr.path={link}",
                  "-device", f"{model},netdev=n{n},mac={mac}"]
    b = boot(cmdline(image, "cli", [f"{b_macs[0]},dhcp", f"{b_macs[1]},dhcp,gw"])
             + " vnet.console=shell", dev_b)
    b.wait_for(r"^VNET-READY cli$")
    b.wait_for(rf"VNET-ADDR {b_macs[0]} 10\.9\.0\.1\d\d/24 eth\d$", timeout=30)
    b.wait_for(rf"VNET-ADDR {b_macs[1]} 10\.9\.1\.1\d\d/24 eth\d$", timeout=30)
    out, _ = b.sh("ip route")
    assert re.findall(r"^default via (\S+)", out, re.M) == ["10.9.1.1"], out
    out, rc = b.sh("echo 'VNET across' | nc 10.9.0.1 7")
    assert rc == 0 and "VNET across srv" in out, out


GUEST_RELAY = """\
import os, select, socket, sys, time
dev = sys.argv[1]
while True:
    fd = os.open(dev, os.O_RDWR)
    first = os.read(fd, 65536)
    if not first:  # nobody on the host side yet
        os.close(fd); time.sleep(0.1); continue
    s = socket.create_connection(("127.0.0.1", 22)); s.sendall(first)
    while True:
        ready = select.select([fd, s], [], [])[0]
        data = os.read(fd, 65536) if fd in ready else s.recv(65536)
        if not data: break
        s.sendall(data) if fd in ready else os.write(fd, data)
    s.close(); os.close(fd)
"""

HOST_RELAY = """\
import os, socket, sys, threading
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
def up():
    while data := os.read(0, 65536): s.sendall(data)
threading.Thread(target=up, daemon=True).start()
while data := s.recv(65536): os.write(1, data)
"""


def test_ansible_ping_and_command_through_dropbear(image, boot, keypair, tmp_path):
    ansible = Path(sys.executable).with_name("ansible")
    if not ansible.exists():
        pytest.skip("ansible is not installed in this Python environment")
    key, pub = keypair
    sock = tmp_path / "ssh.sock"
    devices = ["-device", "virtio-serial-pci",
               "-chardev", f"socket,id=ssh0,path={sock},server=on,wait=off",
               "-device", "virtserialport,chardev=ssh0,name=vnet.ssh", *slirp("virtio-net-pci")]
    append = cmdline(image, "app1", [f"{MAC},static,10.0.2.15/24"], pub)
    guest = boot(append + " vnet.console=shell", devices)
    guest.wait_for(r"^VNET-READY app1$")
    guest.sh(f"echo {base64.b64encode(GUEST_RELAY.encode()).decode()} | base64 -d >/tmp/relay.py")
    out, rc = guest.sh("for p in /sys/class/virtio-ports/*; do [ $(cat $p/name) = vnet.ssh ] && "
                       "python3 /tmp/relay.py /dev/${p##*/} </dev/null >/dev/null 2>&1 & done; echo ok")
    assert rc == 0
    (tmp_path / "relay.py").write_text(HOST_RELAY)
    proxy = f"{sys.executable} {tmp_path / 'relay.py'} {sock}"
    (tmp_path / "hosts").write_text(textwrap.dedent(f"""\
        app1 ansible_host=app1 ansible_user=root ansible_ssh_private_key_file={key} \
        ansible_python_interpreter=/usr/bin/python3.11 \
        ansible_ssh_common_args='-o ProxyCommand="{proxy}" -o ControlMaster=no \
        -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null'
        """))
    (tmp_path / "ansible.cfg").write_text(textwrap.dedent(f"""\
        [defaults]
        host_key_checking = False
        remote_tmp = /tmp/.ansible
        local_tmp = {tmp_path / "atmp"}
        nocolor = True
        [ssh_connection]
        pipelining = True
        transfer_method = piped
        """))
    env = {**os.environ, "ANSIBLE_CONFIG": str(tmp_path / "ansible.cfg")}
    for name, args in (("ping", ["-m", "ping"]),
                       ("command", ["-m", "command", "-a", "grep MemTotal /proc/meminfo"])):
        start = time.monotonic()
        res = subprocess.run([str(ansible), "app1", "-i", str(tmp_path / "hosts"), *args],
                             capture_output=True, text=True, env=env, timeout=180)
        TIMINGS[f"ansible -m {name} (128 MiB guest)"] = time.monotonic() - start
        assert res.returncode == 0, res.stdout + res.stderr + guest.text[-2000:]
        assert ("pong" if name == "ping" else "MemTotal") in res.stdout
