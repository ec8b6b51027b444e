"""Port forwards on libvirt: QEMU hostfwd rules for nat NICs, vnet's port proxy for
natnetwork. Host ports are checked before anything is created."""
from __future__ import annotations

import errno
import re
import socket
import sys
import time
from pathlib import Path

from . import procs
from ..errors import Unsupported, VnetError
from .netns import netns_argv, run_in_netns
from .portproxy import READY, Rule
from .state import Target

PROXY_PID = "portproxy.pid"
PROXY_SCRIPT = Path(__file__).resolve().with_name("portproxy.py")
# A proxy started by an older vnet: a bare PID in PROXY_PID, `-m provisioner.portproxy` in argv.
LEGACY_MARKER = "provisioner.portproxy"
HOST_RECORD = re.compile(r"portproxy-[a-z][a-z0-9-]*\.pid")


def _busy_ports(ports: list[tuple[str, str, int]]) -> list[tuple[str, str, int, str]]:
    """(proto, address, port, why) of each forward that cannot listen where it should."""
    busy = []
    for proto, address, port in ports:
        kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
        with socket.socket(socket.AF_INET, kind) as sock:
            # SO_REUSEADDR: closed connections in TIME_WAIT do not make a port busy; listeners do
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((address, port))
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    busy.append((proto, address, port, "already in use"))
                elif exc.errno == errno.EADDRNOTAVAIL:
                    busy.append((proto, address, port, "not an address of this host"))
                elif exc.errno == errno.EACCES:
                    busy.append((proto, address, port, "needs root (a port below 1024)"))
                else:
                    raise
    return busy


def check_host_ports(target: Target, lab_name: str, forwards: list[dict]) -> None:
    """Fail before creating anything when a forward cannot listen where it should."""
    ports = [(f["proto"], f["host_ip"], f["host_port"]) for f in forwards]
    if not ports:
        return
    busy = run_in_netns(target.netns, _busy_ports, ports) if target.netns else _busy_ports(ports)
    if busy:
        listed = ", ".join(f"{p}/{a}:{n} ({why})" for p, a, n, why in busy)
        raise Unsupported(f"lab {lab_name!r} cannot forward host port(s) {listed}",
                          hint="free them, or change host_port or host_ip in the lab file")


def add_hostfwds(driver, rules: list[dict]) -> None:
    """QEMU user networking forwards, added through the monitor once the domain runs."""
    for rule in rules:
        # "  TCP[HOST_FORWARD]  12   *  2221   10.0.2.15  22  0  0": already there on a re-run
        existing = driver.hmp(rule["domain"], "info usernet")
        if re.search(rf"{rule['proto'].upper()}\[HOST_FORWARD\]\s+\d+\s+\S+\s+"
                     rf"{rule['host_port']}\s", existing):
            continue
        spec = hostfwd_spec(rule)
        reply = driver.hmp(rule["domain"], f"hostfwd_add {rule['netdev']} {spec}").strip()
        if reply:
            raise VnetError(f"QEMU refused port forward {rule['name']} ({spec}): {reply}")


def hostfwd_spec(rule: dict) -> str:
    """QEMU's hostfwd=[tcp|udp]:[hostaddr]:hostport-[guestaddr]:guestport (qemu-options.hx,
    -netdev user), bound to the forward's address, never all of them."""
    return f"{rule['proto']}:{rule['host_ip']}:{rule['host_port']}-:{rule['guest_port']}"


def proxy_argv(lab_dir: Path, rules: list[dict]) -> list[str]:
    """The proxy runs by path under `python -I`: no PYTHONPATH, no user site, and neither the
    caller's directory nor the script's is put on sys.path (it needs the standard library)."""
    specs = [Rule(r["proto"], r["host_ip"], r["host_port"], r["guest_ip"], r["guest_port"]).spec()
             for r in rules]
    return [sys.executable, "-I", str(PROXY_SCRIPT), "--owner", str(lab_dir), *specs]


def start_proxy(target: Target, lab_dir: Path, rules: list[dict],
                host: str | None = None) -> int | None:
    """One port-proxy process for the lab's natnetwork forwards (per serving host in a lab with
    hosts:, `host` names it: its record is portproxy-HOST.pid), in the target's network
    namespace. Its record is written the moment it is spawned, so `destroy` (and the failure
    paths of `up`) can always stop it."""
    if not rules:
        return None
    if target.netns is None and target.uri.startswith(("qemu+ssh", "qemu+tcp", "qemu+tls")):
        raise Unsupported("natnetwork port forwards on a remote libvirt host are not supported "
                          "yet: vnet's port proxy runs on the local host")
    record = lab_dir / proxy_record_name(host)
    pid = procs.running(record, LEGACY_MARKER)
    if pid:
        return pid
    argv = proxy_argv(lab_dir, rules)
    if target.netns:
        argv = netns_argv(target.netns, argv)
    log = lab_dir / (f"portproxy-{host}.log" if host else "portproxy.log")
    log.unlink(missing_ok=True)
    proc = procs.spawn(argv, record, str(lab_dir), log_path=str(log), cwd="/")
    try:
        deadline = time.monotonic() + 10
        # the whole line: a traceback's "Address already in use" holds "ready" too
        while READY not in (log.read_text() if log.exists() else ""):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise VnetError(f"vnet's port proxy did not start"
                                f"{f' on {host}' if host else ''}: {log.read_text()[-300:]}")
            time.sleep(0.05)
    except BaseException:
        procs.stop(record, marker=LEGACY_MARKER)
        raise
    return proc.pid


def proxy_record_name(host: str | None = None) -> str:
    """The proxy's record in the lab directory: one per serving host in a lab with hosts:."""
    return f"portproxy-{host}.pid" if host else PROXY_PID


def proxy_pid(lab_dir: Path, host: str | None = None) -> int | None:
    return procs.running(lab_dir / proxy_record_name(host), LEGACY_MARKER)


def proxy_records(lab_dir: Path) -> list[Path]:
    """Every proxy record of a lab: the single host's, and one per serving host."""
    return sorted(p for p in Path(lab_dir).glob("portproxy*.pid")
                  if p.name == PROXY_PID or HOST_RECORD.fullmatch(p.name))


def stop_proxy(lab_dir: Path, warn=None) -> None:
    """Stop the lab's proxies (every host's) if they still run as recorded; a corrupt record
    is reported."""
    for record in proxy_records(lab_dir) or [Path(lab_dir) / PROXY_PID]:
        procs.stop(record, warn, marker=LEGACY_MARKER)
