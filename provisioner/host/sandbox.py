"""The isolated lab host: two network namespaces and a private libvirtd.

    root namespace (untouched)
    vnet-NAME-host  "the hypervisor host": libvirtd + its dnsmasq/QEMU, bridge lan0
        up0 203.0.113.2/24 ----------- up1 203.0.113.1/24    vnet-NAME-inet  "the Internet"
        lan0 198.51.100.2/24 [lan-in]- lan-out 198.51.100.1/24   HTTP on 203.0.113.1:80

libvirtd runs in the host namespace under its own mount namespace (see
sandbox_files/libvirtd-launcher.sh), so its firewall rules, bridges, dnsmasq and guests stay
in the sandbox. Everything vnet writes lives in state_dir; `down` removes it all.
"""
from __future__ import annotations

import os
import re
import shutil
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from . import locks, ovs, procs, runner
from ..errors import HypervisorError, NeedsRoot, NotFound, VnetError
from .paths import NAME_RE, state_root, validate_name
from .netns import NETNS_DIR, netns_argv, netns_inode, pids_in_netns, run_in_netns
from .procs import terminate
from .safepath import child, remove_tree

FILES = Path(__file__).resolve().with_name("sandbox_files")
LAUNCHER, HTTP_SERVER = FILES / "libvirtd-launcher.sh", FILES / "internet_http.py"
STATE_MARKER = ".vnet-sandbox"
STATE_MARKERS = (STATE_MARKER, "sandbox.json")
PID_FILES = ("libvirtd.pid", "libvirtd.spawn.pid", "http.pid", *ovs.PID_FILES)
ADDRESS_FIELDS = ("lan_bridge", "lan_subnet", "host_lan_ip", "lan_gateway", "host_uplink_ip",
                  "internet_ip")
LAN_SUBNET, HOST_LAN_IP, LAN_GATEWAY = "198.51.100.0/24", "198.51.100.2", "198.51.100.1"
HOST_UPLINK_IP, INTERNET_IP = "203.0.113.2", "203.0.113.1"
PRIVATE_RANGES = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10")
REQUIRED_TOOLS = {"ip": "iproute2", "unshare": "util-linux", "libvirtd": "libvirt-daemon-system",
                  "dnsmasq": "dnsmasq-base", "iptables": "iptables", "ip6tables": "iptables"}
START_TIMEOUT, STOP_TIMEOUT = 20.0, 5.0
# Processes in the sandbox host namespace that our libvirtd starts; `down` stops them.
LIBVIRT_CHILDREN = ("libvirtd", "dnsmasq", "passt", "libvirt_leaseshelper")


@dataclass(frozen=True)
class Sandbox:
    name: str
    state_dir: Path
    host_netns: str
    inet_netns: str
    uri: str
    lan_bridge: str = "lan0"
    lan_subnet: str = LAN_SUBNET
    host_lan_ip: str = HOST_LAN_IP
    lan_gateway: str = LAN_GATEWAY
    host_uplink_ip: str = HOST_UPLINK_IP
    internet_ip: str = INTERNET_IP


def describe(name: str = "default") -> Sandbox:
    """The Sandbox a name stands for (nothing is created; the name and path are checked)."""
    state_dir = child(state_root() / "sandboxes", validate_name(name))   # resolved, checked
    return Sandbox(name=name, state_dir=state_dir, host_netns=f"vnet-{name}-host",
                   inet_netns=f"vnet-{name}-inet",
                   uri=f"qemu:///system?socket={state_dir}/run/libvirt-sock")


def lab_defaults(name: str | None, bridge: str | None = None):
    """Lab-file defaults for labs in sandbox NAME (bridged networks sit on its LAN), or the
    plain defaults outside a sandbox. Needs no running sandbox: its addresses are fixed."""
    from ..lab import loader as labfile

    if name is None:
        return labfile.Defaults(bridge=bridge or labfile.Defaults.bridge)
    return labfile.sandbox_defaults(describe(name), bridge)


def exec_argv(sb: Sandbox, argv: list[str]) -> list[str]:
    """argv run on the sandbox host, with libvirt clients pointed at the private libvirtd."""
    return netns_argv(sb.host_netns, ["env", f"LIBVIRT_DEFAULT_URI={sb.uri}", *argv])


def list_names() -> list[str]:
    names: set[str] = set()
    root = state_root() / "sandboxes"
    if root.is_dir():
        names.update(p.name for p in root.iterdir() if p.is_dir() and NAME_RE.fullmatch(p.name))
    if os.path.isdir(NETNS_DIR):  # also sandboxes whose state dir is gone (crash, other root)
        for ns in os.listdir(NETNS_DIR):
            if m := re.fullmatch(r"vnet-([a-z][a-z0-9-]{0,11})-(?:host|inet)", ns):
                names.add(m.group(1))
    return sorted(names)


def load(name: str = "default") -> Sandbox:
    sb = describe(name)
    require_root(f"sandbox {name}")
    if not (sb.state_dir / "sandbox.json").is_file() or netns_inode(sb.host_netns) is None \
            or _libvirtd_pid(sb) is None:
        raise NotFound(f"sandbox {name} is not up", hint=f"vnet sandbox up {name}")
    return sb


def status(name: str = "default") -> dict:
    sb = describe(name)
    namespaces = {ns: netns_inode(ns) is not None for ns in (sb.host_netns, sb.inet_netns)}
    libvirtd_pid, http_pid = _libvirtd_pid(sb), _http_pid(sb)
    sock = sb.state_dir / "run" / "libvirt-sock"
    problems: list[str] = []
    if sb.state_dir.exists() or any(namespaces.values()):
        if not (sb.state_dir / "sandbox.json").is_file():
            problems.append(f"{sb.state_dir}/sandbox.json is missing (setup did not finish)")
        problems += [f"network namespace {ns} is missing"
                     for ns, present in namespaces.items() if not present]
        if libvirtd_pid is None:
            problems.append("libvirtd is not running")
        elif not _socket_answers(sock):
            problems.append(f"libvirtd (pid {libvirtd_pid}) does not answer on {sock}")
        if http_pid is None:
            problems.append(f"the Internet HTTP service on {INTERNET_IP}:80 is not running")
    return {"name": name, "up": sb.state_dir.exists() and not problems,
            "libvirtd_pid": libvirtd_pid, "http_pid": http_pid, "uri": sb.uri,
            "state_dir": str(sb.state_dir), "namespaces": namespaces,
            "addresses": {k: getattr(sb, k) for k in ADDRESS_FIELDS},
            "problems": problems}


def up(name: str = "default", progress: Callable[[str], None] = print) -> Sandbox:
    """Create the sandbox, or return it if it is already healthy; repairs a crashed one.
    Holds the sandbox's lock: a second `up` at the same time waits, then finds it up."""
    sb = describe(name)
    _check_machine(sb)
    with locks.held("sandbox", name, progress):
        return _up(sb, progress)


def _up(sb: Sandbox, progress: Callable[[str], None]) -> Sandbox:
    name = sb.name
    current = status(name)
    if current["up"]:
        progress(f"sandbox {name} is already up (libvirtd pid {current['libvirtd_pid']})")
        return sb
    if current["problems"]:
        progress(f"sandbox {name} is half up ({'; '.join(current['problems'])}): cleaning up first")
        _down(sb, progress)
    started = time.monotonic()
    try:
        progress(f"creating network namespaces {sb.host_netns} and {sb.inet_netns}")
        _write_state(sb)
        _create_network(sb)
        _start_http(sb)
        ovs.start(sb.state_dir, sb.host_netns, progress)    # before libvirtd: see host/ovs.py
        _start_libvirtd(sb, progress)
    except BaseException:
        progress(f"setting up sandbox {name} failed: removing what was created")
        try:
            _down(sb, progress=lambda _msg: None)
        except Exception as exc:  # noqa: BLE001 - the first error is the one to report
            progress(f"warning: cleaning up failed too: {exc}")
        raise
    locks.write_atomic(sb.state_dir / "sandbox.json", _record(sb))
    progress(f"sandbox {name} is up in {time.monotonic() - started:.1f}s: {sb.uri}")
    return sb


def down(name: str = "default", progress: Callable[[str], None] = print) -> None:
    """Stop everything the sandbox runs, delete its namespaces and state; safe to repeat."""
    sb = describe(name)
    require_root(f"vnet sandbox down {name}")
    with locks.held("sandbox", name, progress):
        _down(sb, progress)


def _down(sb: Sandbox, progress: Callable[[str], None]) -> None:
    name = sb.name
    started = time.monotonic()
    _stop_lab_proxies(name, progress)
    for pid_file in PID_FILES:      # a corrupt one is said; its process is found by namespace
        try:
            procs.read(sb.state_dir / pid_file, str(sb.state_dir))
        except procs.CorruptRecord as exc:
            progress(f"warning: {exc.message}")
    for _ in range(3):  # a second look catches a child started while libvirtd stopped
        if not (victims := _our_processes(sb)):
            break
        progress("stopping " + ", ".join(f"{what} ({pid})"
                                        for pid, what in sorted(victims.items())))
        terminate(list(victims), STOP_TIMEOUT)
    strangers = pids_in_netns([sb.host_netns, sb.inet_netns])
    for ns in (sb.host_netns, sb.inet_netns):
        if netns_inode(ns) is not None or os.path.lexists(os.path.join(NETNS_DIR, ns)):
            runner.run(["ip", "netns", "del", ns])
    for pid, argv in strangers.items():
        progress(f"warning: pid {pid} ({' '.join(argv)[:60]}) was not started by vnet and "
                 f"still runs in a deleted namespace of sandbox {name}")
    remove_tree(sb.state_dir.parent, sb.name, STATE_MARKERS)
    # The labs that lived in this sandbox went with it; so does their state.
    from . import state

    state.remove_all(state.Target(uri=sb.uri, sandbox=sb.name), progress)
    progress(f"sandbox {name} is down ({time.monotonic() - started:.1f}s)")


def _stop_lab_proxies(name: str, progress: Callable[[str], None]) -> None:
    """The port proxies of the labs in this sandbox (forwarding.PROXY_PID in each lab dir)."""
    from .forwarding import stop_proxy

    labs = state_root() / "labs" / f"sandbox-{name}"
    for lab_dir in sorted(labs.iterdir()) if labs.is_dir() else ():
        if lab_dir.is_dir() and not lab_dir.is_symlink():
            stop_proxy(lab_dir, progress)


# ---------------------------------------------------------------- building the sandbox

def require_root(what: str) -> None:
    """One line, exit 2, before anything is read or written: network namespaces, mounts and
    the private libvirtd need root."""
    if os.geteuid() != 0:
        raise NeedsRoot(f"{what} needs root (network namespaces, mounts, libvirtd); you are "
                        f"uid {os.geteuid()}", hint="run vnet as root, e.g. with sudo")


def _check_machine(sb: Sandbox) -> None:
    require_root(f"vnet sandbox up {sb.name}")
    missing = {tool: pkg for tool, pkg in REQUIRED_TOOLS.items() if runner.which(tool) is None}
    if missing:
        raise VnetError(f"the sandbox needs these commands: {', '.join(missing)}",
                        hint="apt-get install " + " ".join(sorted(set(missing.values()))))
    path = str(sb.state_dir)
    if not re.fullmatch(r"/[A-Za-z0-9_./-]+", path) or re.match(r"/(var/)?run(/|$)", path):
        raise VnetError(f"state directory {path} must be a plain path outside /run",
                        hint="set VNET_STATE_DIR to a path such as /var/lib/vnet")
    if len(path) + len("/run/libvirt-admin-sock") >= 108:
        raise VnetError(f"state directory {path} is too long for a unix socket path",
                        hint="set VNET_STATE_DIR to a shorter path")


def _write_state(sb: Sandbox) -> None:
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


def _create_network(sb: Sandbox) -> None:
    h, i, br = sb.host_netns, sb.inet_netns, sb.lan_bridge
    for ns in (h, i):
        runner.run(["ip", "netns", "add", ns])
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


def _start_http(sb: Sandbox) -> None:
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


def _start_libvirtd(sb: Sandbox, progress: Callable[[str], None]) -> None:
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
    took = _wait_until(lambda: _socket_answers(d / "run" / "libvirt-sock") and _opens(sb.uri),
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


def _socket_answers(path: Path) -> bool:
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


def _record(sb: Sandbox) -> str:
    import json

    fields = {k: str(v) for k, v in vars(sb).items()}
    return json.dumps({**fields, "created": time.time(), "libvirtd_pid": _libvirtd_pid(sb)},
                      indent=2) + "\n"


# ---------------------------------------------------------------- finding our processes

_mentions = procs.mentions


def _libvirtd_pid(sb: Sandbox) -> int | None:
    # libvirtd writes this pid file itself (a bare PID): recognised by argv alone
    return procs.running(sb.state_dir / "libvirtd.pid", str(sb.state_dir), "libvirtd")


def _http_pid(sb: Sandbox) -> int | None:
    return procs.running(sb.state_dir / "http.pid", str(sb.state_dir / "www"), "python")


def _our_processes(sb: Sandbox) -> dict[int, str]:
    """pid -> label for everything `down` may stop: pids from our pid files whose command
    line names our state dir, and libvirt's children (QEMU, dnsmasq) in our namespaces."""
    state = str(sb.state_dir)
    labs = str(state_root() / "labs" / f"sandbox-{sb.name}")    # lab proxies whose record is lost
    victims: dict[int, str] = {}
    for pid_file in PID_FILES:
        if pid := procs.running(sb.state_dir / pid_file, state):
            victims[pid] = pid_file.split(".")[0]
    for pid, argv in pids_in_netns([sb.host_netns, sb.inet_netns]).items():
        prog = os.path.basename(argv[0])
        if prog.startswith("qemu-system-") or prog in LIBVIRT_CHILDREN or _mentions(argv, state) \
                or _mentions(argv, labs):
            victims.setdefault(pid, prog)
    return victims
