"""Port forwards on libvirt: QEMU hostfwd rules for nat NICs, vnet's port proxy for
natnetwork. Host ports are checked before anything is created."""
from __future__ import annotations

import errno
import os
import re
import signal
import socket
import sys
import time
from pathlib import Path

from . import runner
from .errors import Unsupported, VnetError
from .netns import netns_argv, run_in_netns
from .state import Target

PROXY_PID = "portproxy.pid"


def _busy_ports(ports: list[tuple[str, int]]) -> list[tuple[str, int]]:
    busy = []
    for proto, port in ports:
        kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
        with socket.socket(socket.AF_INET, kind) as sock:
            # SO_REUSEADDR: closed connections in TIME_WAIT do not make a port busy; listeners do
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("0.0.0.0", port))
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    busy.append((proto, port))
                else:
                    raise
    return busy


def check_host_ports(target: Target, lab_name: str, forwards: list[dict]) -> None:
    """Fail before creating anything when a forwarded host port is taken."""
    ports = [(f["proto"], f["host_port"]) for f in forwards]
    if not ports:
        return
    busy = run_in_netns(target.netns, _busy_ports, ports) if target.netns else _busy_ports(ports)
    if busy:
        listed = ", ".join(f"{p}/{n}" for p, n in busy)
        raise Unsupported(f"host port(s) {listed} already in use, so lab {lab_name!r} cannot "
                          "forward them", hint="free them, or change host_port in the lab file")


def add_hostfwds(driver, rules: list[dict]) -> None:
    """QEMU user networking forwards, added through the monitor once the domain runs."""
    for rule in rules:
        # "  TCP[HOST_FORWARD]  12   *  2221   10.0.2.15  22  0  0": already there on a re-run
        existing = driver.hmp(rule["domain"], "info usernet")
        if re.search(rf"{rule['proto'].upper()}\[HOST_FORWARD\]\s+\d+\s+\S+\s+"
                     rf"{rule['host_port']}\s", existing):
            continue
        spec = f"{rule['proto']}::{rule['host_port']}-:{rule['guest_port']}"
        reply = driver.hmp(rule["domain"], f"hostfwd_add {rule['netdev']} {spec}").strip()
        if reply:
            raise VnetError(f"QEMU refused port forward {rule['name']} ({spec}): {reply}")


def start_proxy(target: Target, lab_dir: Path, rules: list[dict]) -> int | None:
    """One port-proxy process for the lab's natnetwork forwards; its PID is kept in the lab dir."""
    if not rules:
        return None
    if target.uri.startswith(("qemu+ssh", "qemu+tcp", "qemu+tls")):
        raise Unsupported("natnetwork port forwards on a remote libvirt host are not supported "
                          "yet: vnet's port proxy runs on the local host")
    pid = proxy_pid(lab_dir)
    if pid:
        return pid
    specs = [f"{r['host_port']}={r['guest_ip']}:{r['guest_port']}" for r in rules]
    argv = [sys.executable, "-m", "provisioner.portproxy", *specs]
    if target.netns:
        argv = netns_argv(target.netns, argv)
    log = lab_dir / "portproxy.log"
    proc = runner.spawn(argv, log_path=str(log), env={"PYTHONPATH": _package_root()})
    deadline = time.monotonic() + 10
    while "ready" not in (log.read_text() if log.exists() else ""):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise VnetError(f"vnet's port proxy did not start: {log.read_text()[-300:]}")
        time.sleep(0.05)
    (lab_dir / PROXY_PID).write_text(str(proc.pid))
    return proc.pid


def proxy_pid(lab_dir: Path) -> int | None:
    path = lab_dir / PROXY_PID
    if not path.exists():
        return None
    pid = int(path.read_text())
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return pid if b"provisioner.portproxy" in cmdline else None


def stop_proxy(lab_dir: Path) -> None:
    pid = proxy_pid(lab_dir)
    if pid:
        os.kill(pid, signal.SIGTERM)
    (lab_dir / PROXY_PID).unlink(missing_ok=True)


def _package_root() -> str:
    return str(Path(__file__).resolve().parent.parent)
