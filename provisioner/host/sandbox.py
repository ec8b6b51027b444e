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
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from . import locks, ovs, procs, runner
from ..errors import NeedsRoot, NotFound, VnetError
from .paths import NAME_RE, state_root, validate_name
from .netns import (NETNS_DIR, foreign_namespaces, netns_argv, netns_inode, pids_in_netns,
                    untagged_namespaces)
from . import sandbox_hosts, sandbox_procs, sandbox_setup as setup
# Kept importable from here (`sandbox.FILES`, `sandbox.http_argv`) for their callers.
from .sandbox_setup import FILES, HTTP_SERVER, LAUNCHER, STATE_MARKER, http_argv  # noqa: F401
from .safepath import child, remove_tree

STATE_MARKERS = (STATE_MARKER, "sandbox.json")
ADDRESS_FIELDS = ("lan_bridge", "lan_subnet", "host_lan_ip", "lan_gateway", "host_uplink_ip",
                  "internet_ip")
LAN_SUBNET, HOST_LAN_IP, LAN_GATEWAY = "198.51.100.0/24", "198.51.100.2", "198.51.100.1"
HOST_UPLINK_IP, INTERNET_IP = "203.0.113.2", "203.0.113.1"
REQUIRED_TOOLS = {"ip": "iproute2", "unshare": "util-linux", "libvirtd": "libvirt-daemon-system",
                  "dnsmasq": "dnsmasq-base", "iptables": "iptables", "ip6tables": "iptables"}


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
            if m := re.fullmatch(r"vnet-([a-z][a-z0-9-]{0,11})-(?:host|inet|hv[2-9])", ns):
                names.add(m.group(1))
    from .state import REMOTE_HOSTS, VAGRANT_RUNS

    for kept in ("labs", VAGRANT_RUNS, REMOTE_HOSTS):  # and sandboxes gone but with state left
        if (root := state_root() / kept).is_dir():
            names.update(m.group(1) for p in root.iterdir() if p.is_dir() and not p.is_symlink()
                         and (m := re.fullmatch(r"sandbox-([a-z][a-z0-9-]{0,11})", p.name)))
    return sorted(names)


def left_state(name: str) -> list[Path]:
    """What sandbox NAME keeps beside its own state directory: its labs' state, its Vagrant
    runs and remote hosts (state.left_state)."""
    from . import state

    return state.left_state(state.Target(uri=describe(name).uri, sandbox=name))


def lab_state_dir(name: str) -> Path:
    """<state root>/labs/sandbox-NAME: the state of the labs that live in sandbox NAME."""
    from . import state

    return state.target_dir(state.Target(uri=describe(name).uri, sandbox=name))


def is_up(name: str) -> bool:
    """The sandbox's record, namespace and libvirtd are there (what `load` requires)."""
    sb = describe(name)
    return (sb.state_dir / "sandbox.json").is_file() and netns_inode(sb.host_netns) is not None \
        and _libvirtd_pid(sb) is not None


def load(name: str = "default") -> Sandbox:
    sb = describe(name)
    require_root(f"sandbox {name}")
    if not is_up(name):
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
        elif not setup.socket_answers(sock):
            problems.append(f"libvirtd (pid {libvirtd_pid}) does not answer on {sock}")
        if http_pid is None:
            problems.append(f"the Internet HTTP service on {INTERNET_IP}:80 is not running")
    hosts = _hosts_status(sb, problems)
    if foreign := _foreign(sb):
        problems.insert(0, foreign)
    if not sb.state_dir.exists() and (left := left_state(name)):
        problems.append(f"the sandbox is gone but left lab state in {', '.join(map(str, left))}"
                        f"; `vnet sandbox down {name}` (or `vnet gc --sandbox {name}`) removes it")
    return {"name": name, "up": sb.state_dir.exists() and not problems, "hosts": hosts,
            "libvirtd_pid": libvirtd_pid, "http_pid": http_pid, "uri": sb.uri,
            "state_dir": str(sb.state_dir), "namespaces": namespaces,
            "addresses": {k: getattr(sb, k) for k in ADDRESS_FIELDS},
            "problems": problems}


def up(name: str = "default", progress: Callable[[str], None] = print, hosts: int = 1, *,
       check: Callable[[Sandbox], None] | None = None,
       create: Callable[[Sandbox, Callable[[str], None]], Sandbox] | None = None) -> Sandbox:
    """Create the sandbox, or return it if it is already healthy; repairs a crashed one.
    Holds the sandbox's lock: a second `up` at the same time waits, then finds it up. check,
    create: the machine check before the lock and the work under it (the real ones by default;
    the lock tests pass fakes). hosts > 1: hypervisor hosts hv2..hvN beside it
    (sandbox_hosts.py)."""
    sb = describe(name)
    hosts = sandbox_hosts.check_count(hosts)
    (check or _check_machine)(sb)
    with locks.held("sandbox", name, progress):
        return create(sb, progress) if create else _up(sb, progress, hosts)


def _up(sb: Sandbox, progress: Callable[[str], None], hosts: int = 1) -> Sandbox:
    name = sb.name
    current = status(name)
    if current["up"] and len(current["hosts"]) != hosts:
        raise VnetError(f"sandbox {name} is up with {len(current['hosts'])} host(s), not "
                        f"{hosts}", hint=f"vnet sandbox down {name}, then up with --hosts {hosts}")
    if current["up"]:
        progress(f"sandbox {name} is already up (libvirtd pid {current['libvirtd_pid']})")
        return sb
    if current["problems"]:
        progress(f"sandbox {name} is half up ({'; '.join(current['problems'])}): cleaning up first")
        _down(sb, progress)
    if untagged := untagged_namespaces(sandbox_procs.namespaces(sb, all_names=True)):
        raise VnetError(f"sandbox {name}: namespace(s) {', '.join(untagged)} exist without "
                        "vnet's owner tag, so vnet cannot make or take them",
                        hint=f"`ip netns del {untagged[0]}` if it is yours (an older vnet's), "
                             "or choose another sandbox name")
    started = time.monotonic()
    try:
        progress(f"creating network namespaces {sb.host_netns} and {sb.inet_netns}")
        setup.write_state(sb)
        setup.create_network(sb)
        setup.start_http(sb)
        ovs.start(sb.state_dir, sb.host_netns, progress)    # before libvirtd: see host/ovs.py
        setup.start_libvirtd(sb, progress)
        sandbox_hosts.create(sb, hosts, progress)
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


def down(name: str = "default", progress: Callable[[str], None] = print, *,
         remove: Callable[[Sandbox, Callable[[str], None]], None] | None = None) -> None:
    """Stop everything the sandbox runs, delete its namespaces and state; safe to repeat.
    remove: the work under the lock (the real one by default; the lock tests pass a fake)."""
    sb = describe(name)
    require_root(f"vnet sandbox down {name}")
    with locks.held("sandbox", name, progress):
        (remove or _down)(sb, progress)
    locks.sweep()           # its own lock and its labs' (and any other that nothing holds)


def _down(sb: Sandbox, progress: Callable[[str], None]) -> None:
    name = sb.name
    started = time.monotonic()
    refuse_foreign(sb)
    _stop_lab_helpers(name, progress)
    for path in sandbox_procs.pid_paths(sb):   # a corrupt one is said; found by namespace
        try:
            procs.read(path, str(sb.state_dir))
        except procs.CorruptRecord as exc:
            progress(f"warning: {exc.message}")
    every = sandbox_procs.namespaces(sb, all_names=True)
    untagged = untagged_namespaces(every)             # looked up once: `down` makes no tag
    namespaces = [ns for ns in every if ns not in untagged]
    sandbox_procs.stop_all(sb, lab_state_dir(name), namespaces, progress)
    for ns in untagged:
        running = ", ".join(f"{pid} ({os.path.basename(argv[0])})"
                            for pid, argv in sorted(pids_in_netns([ns]).items()))
        progress(f"warning: namespace {ns} carries no vnet owner tag, so vnet leaves it and "
                 f"what runs in it alone ({running or 'nothing runs there'}; "
                 f"`ip netns del {ns}` if it is yours)")
    strangers = pids_in_netns(namespaces)
    for ns in namespaces:
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


def _foreign(sb: Sandbox) -> str | None:
    """Why this state root must leave the sandbox's namespaces alone, or None."""
    if foreign := foreign_namespaces(sandbox_procs.namespaces(sb, all_names=True)):
        return (f"its namespaces ({', '.join(sorted(foreign))}) belong to another vnet state "
                f"root (owner {sorted(set(foreign.values()))[0]}): this one "
                f"({state_root()}) leaves them alone")
    return None


def refuse_foreign(sb: Sandbox) -> None:
    if why := _foreign(sb):
        raise VnetError(f"sandbox {sb.name}: {why}", hint="run vnet with the VNET_STATE_DIR "
                        "that created the sandbox, or choose another sandbox name")


def clear_left_state(name: str, progress: Callable[[str], None]) -> bool:
    """For `vnet gc --sandbox NAME` of a sandbox that is not up: no libvirt object of it can
    exist (its libvirtd and namespaces are gone), so what can be left is lab state (a lab's
    key, written by an `up` that outlived its sandbox), removed as `down` would, under the
    sandbox's lock. Returns False, doing nothing, while the sandbox is up; a half-up one is
    `vnet sandbox down`'s to clean, and this says so."""
    sb = describe(name)
    require_root(f"vnet gc --sandbox {name}")
    if is_up(name):          # the usual case, without waiting for the labs' shared locks
        return False
    with locks.held("sandbox", name, progress):
        if is_up(name):      # it came up while this waited
            return False
        refuse_foreign(sb)
        if sb.state_dir.exists() or any(netns_inode(ns) is not None
                                        for ns in sandbox_procs.namespaces(sb)):
            raise VnetError(f"sandbox {name} is half up", hint=f"vnet sandbox down {name}")
        if left := left_state(name):
            from . import state

            progress(f"sandbox {name} is down: removing the lab state it left in "
                     + ", ".join(map(str, left)))
            _stop_lab_helpers(name, progress)
            state.remove_all(state.Target(uri=sb.uri, sandbox=name), progress)
        return True


def _stop_lab_helpers(name: str, progress: Callable[[str], None]) -> None:
    """The host-side processes of the labs in this sandbox (labhelpers: proxies, controllers,
    early Ansible runs, captures), by the records in each lab's directory."""
    from .labhelpers import stop_all
    from .state import MARKERS

    labs = lab_state_dir(name)
    for lab_dir in sorted(labs.iterdir()) if labs.is_dir() else ():
        if lab_dir.is_dir() and not lab_dir.is_symlink() \
                and any((lab_dir / marker).is_file() for marker in MARKERS):   # a lab's only
            stop_all(lab_dir, progress)


# ------------------------------------- before building the sandbox (the building: sandbox_setup.py)

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


def _record(sb: Sandbox) -> str:
    import json

    fields = {k: str(v) for k, v in vars(sb).items()}
    return json.dumps({**fields, "created": time.time(), "libvirtd_pid": _libvirtd_pid(sb)},
                      indent=2) + "\n"


def _libvirtd_pid(sb: Sandbox) -> int | None:
    # libvirtd writes this pid file itself (a bare PID): recognised by argv alone
    return procs.running(sb.state_dir / "libvirtd.pid", str(sb.state_dir), "libvirtd")


def _http_pid(sb: Sandbox) -> int | None:
    return procs.running(sb.state_dir / "http.pid", str(sb.state_dir / "www"), "python")


def _hosts_status(sb: Sandbox, problems: list[str]) -> list[dict]:
    """hv1 (the sandbox host) and each extra host: its namespace, URI, underlay address and
    libvirtd; a missing piece of an extra host is one more problem."""
    hosts = []
    for index in [1, *sandbox_hosts.present(sb)]:
        view = sandbox_hosts.host_view(sb, index)
        pid = _libvirtd_pid(view)
        entry = {"name": sandbox_hosts.host_name(index), "netns": view.host_netns,
                 "uri": view.uri, "underlay_ip": str(sandbox_hosts.underlay_ip(sb, index)),
                 "libvirtd_pid": pid}
        if index == sandbox_hosts.SSH_HOST:
            entry["ssh_uri"] = sandbox_hosts.ssh_uri(sb, index)
        if index > 1:
            if netns_inode(view.host_netns) is None:
                problems.append(f"network namespace {view.host_netns} is missing")
            if pid is None:
                problems.append(f"libvirtd of {entry['name']} is not running")
            if index == sandbox_hosts.SSH_HOST and procs.running(
                    view.state_dir / sandbox_hosts.SSH_PID, str(view.state_dir)) is None:
                problems.append(f"the SSH server of {entry['name']} is not running")
        hosts.append(entry)
    return hosts
