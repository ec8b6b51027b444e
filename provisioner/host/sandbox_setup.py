"""Building a sandbox (sandbox.py): its state directory and the private libvirtd's
configuration, the two namespaces and the links between them, the Internet's HTTP service and
libvirtd itself, each waited for until it answers. `sandbox.up` calls these in order, under
the sandbox's lock, and removes everything again when one fails. Each takes that
sandbox.Sandbox as `sb`."""
from __future__ import annotations

import os
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import Callable

from . import ovs, procs, runner
from ..errors import HypervisorError
from .netns import add_owned_netns, netns_argv, run_in_netns
from .paths import state_root

FILES = Path(__file__).resolve().with_name("sandbox_files")
LAUNCHER, HTTP_SERVER = FILES / "libvirtd-launcher.sh", FILES / "internet_http.py"
STATE_MARKER = ".vnet-sandbox"
PRIVATE_RANGES = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10")
START_TIMEOUT = 20.0


def write_state(sb) -> None:
    d = sb.state_dir
    (d / "run").mkdir(parents=True, exist_ok=True)
    (d / STATE_MARKER).touch()           # `down` removes only a directory that holds it
    d.chmod(0o700)
    # /etc/libvirt for the private daemon: the machine's nwfilter definitions, our own
    # libvirtd.conf and qemu.conf; no hooks, no domains or networks (no `default` network).
    etc = d / "etc-libvirt"
    etc.mkdir(exist_ok=True)
    if os.path.isdir("/etc/libvirt/nwfilter") and not (etc / "nwfilter").exists():
        shutil.copytree("/etc/libvirt/nwfilter", etc / "nwfilter")
    conf = (FILES / "libvirtd.conf").read_text().replace("@RUN_DIR@", str(d / "run"))
    (etc / "libvirtd.conf").write_text(conf)
    shutil.copyfile(FILES / "qemu.conf", etc / "qemu.conf")
    (d / "resolv.conf").write_text(f"# vnet sandbox {sb.name}: DNS stays in the lab\n"
                                   f"nameserver {sb.internet_ip}\n")
    (d / "www").mkdir(exist_ok=True)
    (d / "www" / "index.html").write_text(f"vnet sandbox {sb.name}: the Internet\n")


def create_network(sb) -> None:
    h, i, br = sb.host_netns, sb.inet_netns, sb.lan_bridge
    for ns in (h, i):
        add_owned_netns(ns)
    commands = [
        [h, "link", "add", "up0", "type", "veth", "peer", "name", "up1", "netns", i],
        [h, "link", "add", "lan-in", "type", "veth", "peer", "name", "lan-out", "netns", i],
        [h, "link", "add", br, "type", "bridge", "stp_state", "0", "forward_delay", "0"],
        [h, "link", "set", "lan-in", "master", br],
        [h, "addr", "add", f"{sb.host_uplink_ip}/24", "dev", "up0"],
        [h, "addr", "add", f"{sb.host_lan_ip}/24", "dev", br],
        [i, "addr", "add", f"{sb.internet_ip}/24", "dev", "up1"],
        [i, "addr", "add", f"{sb.lan_gateway}/24", "dev", "lan-out"],
        *([h, "link", "set", dev, "up"] for dev in ("lo", "up0", "lan-in", br)),
        *([i, "link", "set", dev, "up"] for dev in ("lo", "up1", "lan-out")),
        [h, "route", "add", "default", "via", sb.internet_ip],
        *([i, "route", "add", net, "via", sb.host_uplink_ip] for net in PRIVATE_RANGES),
    ]
    for ns, *args in commands:
        runner.run(["ip", "-n", ns, *args])
    for ns in (h, i):
        run_in_netns(ns, _write_sysctls, {"net.ipv4.ip_forward": "1"})


def _write_sysctls(values: dict[str, str]) -> None:
    """Runs inside the namespace: /proc/sys/net belongs to the caller's network namespace."""
    for key, value in values.items():
        Path("/proc/sys", *key.split(".")).write_text(value)


def start_http(sb) -> None:
    www = sb.state_dir / "www"
    argv = http_argv(sb.internet_ip, 80, www)
    log = sb.state_dir / "http.log"
    proc = procs.spawn(netns_argv(sb.inet_netns, argv), sb.state_dir / "http.pid", str(www),
                       log_path=str(log), cwd=str(www))
    _wait_until(lambda: run_in_netns(sb.host_netns, _tcp_answers, sb.internet_ip, 80),
                10.0, f"the HTTP service on {sb.internet_ip}:80", proc, log)


def http_argv(address: str, port: int, www: Path) -> list[str]:
    """By path under -I: nothing is imported from the caller's directory or PYTHONPATH."""
    return [sys.executable, "-I", str(HTTP_SERVER), address, str(port), str(www)]


def start_libvirtd(sb, progress: Callable[[str], None]) -> None:
    d = sb.state_dir
    # QEMU capability probes cost ~4 s per fresh libvirtd; keep them across sandboxes, inside
    # vnet's own state root (libvirt revalidates them against the QEMU binary).
    caps = state_root() / "cache" / "libvirt-qemu"
    caps.mkdir(parents=True, exist_ok=True)
    argv = netns_argv(sb.host_netns, ["unshare", "--mount", "--propagation", "private",
                                      "sh", str(LAUNCHER), str(d), str(caps)])
    log = d / "libvirtd.log"
    proc = procs.spawn(argv, d / "libvirtd.spawn.pid", str(d), log_path=str(log),
                       env={"LC_ALL": "C", **ovs.env_for_libvirtd(d)})
    progress(f"starting libvirtd in {sb.host_netns} (pid {proc.pid}), waiting for its socket")
    took = _wait_until(lambda: socket_answers(d / "run" / "libvirt-sock") and _opens(sb.uri),
                       START_TIMEOUT, "libvirtd", proc, log, progress)
    progress(f"libvirtd answers after {took:.1f}s")


def _wait_until(check: Callable[[], bool], timeout: float, what: str, proc, log: Path,
                progress: Callable[[str], None] | None = None) -> float:
    """Poll check() at short, growing intervals; fail fast when the process dies."""
    start, delay, next_note = time.monotonic(), 0.02, 5.0
    while True:
        if check():
            return time.monotonic() - start
        waited = time.monotonic() - start
        if proc.poll() is not None:
            raise HypervisorError(f"{what} exited with status {proc.returncode}: {_tail(log)}")
        if waited > timeout:
            raise HypervisorError(f"{what} did not answer within {timeout:g}s: {_tail(log)}")
        if progress and waited >= next_note:
            progress(f"still waiting for {what} ({waited:.0f}s)")
            next_note += 5.0
        time.sleep(delay)
        delay = min(delay * 1.5, 0.25)


def _tail(log: Path, lines: int = 3) -> str:
    try:
        text = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "(no log)"
    return " | ".join(text[-lines:]) or "(empty log)"


def socket_answers(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(1.0)
        try:
            s.connect(str(path))
            return True
        except OSError:
            return False


def _tcp_answers(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=1.0).close()
        return True
    except OSError:
        return False


def _opens(uri: str) -> bool:
    try:
        import libvirt
    except ImportError:  # the socket answers; clients without libvirt-python use virsh
        return True
    try:
        libvirt.open(uri).close()
        return True
    except libvirt.libvirtError:
        return False
