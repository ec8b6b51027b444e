"""Where a multi-host lab's host-side commands run (README "Several hosts"): in a local network
namespace (a host of a vnet sandbox), on this machine itself (the first host of a lab outside a
sandbox, named by a `qemu:///system` URI: vnet runs there), or on a remote hypervisor host over
SSH, the host named by a `qemu+ssh://[USER@]HOST[:PORT]/system` libvirt URI.

The commands are the same argv either way (the VXLAN devices, an ICMP echo, the serial-log
directory); only the prefix differs: `ip netns exec NS` locally, none on this machine (vnet's
own network namespace), `ssh ... HOST` remotely, where
the argv travels as one shell-quoted string (ssh joins its arguments into a command line that
the remote login shell parses, ssh(1) "DESCRIPTION"). Everything goes through runner, the one
subprocess site.

SSH follows libvirt's own ssh transport (https://libvirt.org/uri.html#ssh-transport): the
URI's user and port, and its `keyfile=` and `command=` parameters (the ssh binary libvirt runs:
a vnet sandbox names a wrapper there). libvirt runs `command=` as root on this machine, so only
a program under vnet's state root is taken (vnet wrote it), and no other parameter is: the query
is the one libvirt reads (src/util/viruri.c virURIParseParams splits it on `&`, or on `;` when
no `&` is left, where Python splits on `&` only, so a `;` is refused outright).
Always BatchMode (no prompt can hang vnet); where vnet made the key (a keyfile under vnet's
state root with a known_hosts beside it) only that known_hosts is trusted, otherwise the user's
ssh configuration decides.
"""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from . import runner
from ..errors import Unsupported, VnetError
from ..lab.model import is_name
from .netns import netns_argv
from .paths import state_root

SCHEME = "qemu+ssh"
# A libvirtd on this machine (https://libvirt.org/uri.html#unix-transport): no host in the
# URI, the system instance; `socket=` may name its socket.
LOCAL_SCHEMES = ("qemu", "qemu+unix")
LOCAL = "qemu:///system (this machine's libvirtd; ?socket=PATH allowed)"
ACCEPTED = (f"{SCHEME}://[USER@]HOST[:PORT]/system for a remote host, or a host of this vnet "
            "sandbox (hv1..hvN)")
# On a remote host: <REMOTE_DIR>/<owner id>/<lab>/<vm>.serial.log (QEMU writes them there).
# The sandbox's SSH host mounts its own directory here (sandbox_files/*-launcher.sh).
REMOTE_DIR = "/var/lib/libvirt/vnet"
HOST_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?|[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*")
USER_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}")
OWNER_RE = re.compile(r"[0-9a-f]{16}")
PATH_RE = re.compile(r"/[A-Za-z0-9_./=-]*")
# The parameters vnet reads (the sandbox's own URI has all three: sandbox_hosts.ssh_uri).
QUERY_KEYS = ("keyfile", "command", "socket")
ACCEPTED_QUERY = ("?keyfile=/ABS/PATH&command=STATE_ROOT/PATH&socket=/ABS/PATH (each optional, "
                  "joined by '&'; command= a program under vnet's state root)")
SSH_TIMEOUT = 60.0              # seconds for one remote command, connection included


@dataclass(frozen=True)
class HostAccess:
    """How to run a command on one host: `netns` (local), `here` (this machine, in vnet's own
    network namespace: only ever said explicitly) or the `ssh` argv up to the host."""
    netns: str | None = None
    ssh: tuple[str, ...] = ()
    here: bool = False

    @property
    def remote(self) -> bool:
        return bool(self.ssh)

    def argv(self, argv: list[str]) -> list[str]:
        if self.ssh:
            return [*self.ssh, shlex.join(argv)]
        if self.here:
            return list(argv)
        if self.netns is None:
            raise ValueError("a local host needs its network namespace")
        return netns_argv(self.netns, argv)

    def run(self, argv: list[str], check: bool = True) -> runner.Result:
        return runner.run(self.argv(argv), check=check,
                          timeout=SSH_TIMEOUT if self.ssh else None)

    def run_all(self, argvs: list[list[str]]) -> None:
        """Each argv in order, stopping at the first that fails. On a remote host one SSH call
        carries them all, joined by `&&` (an SSH round trip costs ~0.1 s, a command ~3 ms)."""
        if self.ssh and argvs:
            runner.run([*self.ssh, " && ".join(map(shlex.join, argvs))], timeout=SSH_TIMEOUT)
        else:
            for argv in argvs:
                self.run(argv)

    def describe(self) -> str:
        if self.here:
            return "this machine"
        return self.ssh[-1] if self.ssh else f"network namespace {self.netns}"


def of(where: "HostAccess | str") -> HostAccess:
    """A HostAccess as is; a string names a local network namespace (the older callers)."""
    return where if isinstance(where, HostAccess) else HostAccess(netns=where)


def is_ssh_uri(uri: str) -> bool:
    return uri.partition("://")[0] == SCHEME


def is_remote(target) -> bool:
    """A host vnet reaches only over SSH: a qemu+ssh:// URI and no network namespace here (a
    sandbox host named by such a URI is still entered by its namespace)."""
    return target.netns is None and is_ssh_uri(target.uri)


def is_local_uri(uri: str) -> bool:
    """A URI of the system libvirtd on this machine (no host part): `qemu:///system`."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return False
    return parts.scheme in LOCAL_SCHEMES and not parts.netloc and parts.path == "/system"


def for_uri(uri: str, where: str = "uri") -> HostAccess:
    """The SSH access to the host of a qemu+ssh:// URI. Unsupported (exit 2), naming `where`,
    when the URI is not that form or names a host, user or file that could be read as an
    option (a host starting with '-' would be an ssh option, not a host)."""
    if not is_ssh_uri(uri):
        raise Unsupported(f"{where}: {uri} is not a remote host; accepted: {ACCEPTED}")
    try:
        parts = urlsplit(uri)
        host, user, port = parts.hostname, parts.username, parts.port
    except ValueError as exc:
        raise Unsupported(f"{where}: {uri}: {exc}; accepted: {ACCEPTED}") from exc
    if not host or not HOST_RE.fullmatch(host):
        raise Unsupported(f"{where}: {uri}: host {host!r} is not a host name or address; "
                          f"accepted: {ACCEPTED}")
    if user is not None and not USER_RE.fullmatch(user):
        raise Unsupported(f"{where}: {uri}: user {user!r} is not a user name; "
                          f"accepted: {ACCEPTED}")
    if parts.path != "/system":
        raise Unsupported(f"{where}: {uri}: path {parts.path or '(none)'!r} is not /system "
                          "(vnet needs the host's system libvirtd)")
    query = _query(parts.query, f"{where}: {uri}")
    argv = [query.get("command", "ssh"), "-o", "BatchMode=yes", "-o", "ConnectTimeout=10"]
    if "keyfile" in query:
        argv += ["-i", query["keyfile"], *_vnet_known_hosts(Path(query["keyfile"]))]
    if port is not None:
        argv += ["-p", str(port)]
    if user is not None:
        argv += ["-l", user]
    return HostAccess(ssh=(*argv, "--", host))


def _query(query: str, where: str) -> dict[str, str]:
    """The URI's parameters, each one vnet reads and checks; Unsupported (exit 2) otherwise."""
    if ";" in query:
        raise Unsupported(f"{where}: ';' in the query (libvirt would split it there); "
                          f"accepted: {ACCEPTED_QUERY}")
    params: dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key not in QUERY_KEYS or key in params:
            raise Unsupported(f"{where}: parameter {key!r} is "
                              + ("repeated" if key in params else "not one vnet reads")
                              + f"; accepted: {ACCEPTED_QUERY}")
        params[key] = value
        if not PATH_RE.fullmatch(value):
            raise Unsupported(f"{where}: {key}= must be an absolute path; "
                              f"accepted: {ACCEPTED_QUERY}")
    if "command" in params and not _under_state_root(Path(params["command"])):
        raise Unsupported(f"{where}: command= {params['command']} is not under vnet's state "
                          f"root (libvirt runs it as root here); accepted: {ACCEPTED_QUERY}")
    return params


def _under_state_root(path: Path) -> bool:
    return path.resolve().is_relative_to(state_root().resolve())   # no `..` out of the root


def _vnet_known_hosts(keyfile: Path) -> list[str]:
    """vnet made this key (under its state root, a known_hosts beside it): trust only that."""
    known = keyfile.resolve().parent / "known_hosts"
    if _under_state_root(keyfile) and known.is_file():
        return ["-o", f"UserKnownHostsFile={known}", "-o", "StrictHostKeyChecking=yes"]
    return []


# --------------------------------------------------------- the serial logs on a remote host

def remote_lab_dir(owner: str, lab: str) -> str:
    """<REMOTE_DIR>/<owner>/<lab>: both parts checked, so the path is what it says."""
    if not OWNER_RE.fullmatch(owner) or not is_name(lab):
        raise ValueError(f"not an owner id and lab name: {owner!r}, {lab!r}")
    return f"{REMOTE_DIR}/{owner}/{lab}"


def prepare_log_dir(access: HostAccess, owner: str, lab: str) -> str:
    path = remote_lab_dir(owner, lab)
    access.run(["mkdir", "-p", "-m", "0755", "--", path])
    return path


def read_log(access: HostAccess, log_dir: str, vm: str) -> str:
    """A VM's serial console so far ("" before QEMU created it, or when the host is silent).
    `log_dir` (from the lab record) must be exactly a lab's directory: no `..` reaches `cat`."""
    owner, _, lab = log_dir.removeprefix(REMOTE_DIR + "/").partition("/")
    if not is_name(vm) or not OWNER_RE.fullmatch(owner) or not is_name(lab) \
            or remote_lab_dir(owner, lab) != log_dir:
        raise ValueError(f"not a remote serial log: {log_dir!r}, {vm!r}")
    result = access.run(["cat", "--", f"{log_dir}/{vm}.serial.log"], check=False)
    return result.stdout if result.returncode == 0 else ""


SERIAL_LOG_RE = re.compile(r"[a-z](?:[a-z0-9-]{0,22}[a-z0-9])?\.serial\.log")  # <vm>.serial.log


def remove_log_dir(access: HostAccess, owner: str, lab: str) -> str:
    """The serial logs QEMU wrote in the lab's log directory (each <vm>.serial.log, one by one:
    nothing recursive), then the directory, the owner's when that was its last lab, and
    REMOTE_DIR (which prepare_log_dir's `mkdir -p` made) when that was the last owner. A file
    vnet did not name stays, and so does its directory (said in the answer). The last rmdir
    may fail (a mount point, as on a sandbox's SSH host): that is fine."""
    path = remote_lab_dir(owner, lab)
    listed = access.run(["ls", "-1", "--", path], check=False)
    if listed.returncode != 0:
        # gone, or unreadable, or no answer: asked by exit status (1: not a directory), since
        # ls's message follows the locale the SSH session passed on (SendEnv LANG LC_*)
        if access.run(["test", "-d", path], check=False).returncode != 1:
            raise VnetError(f"cannot list {path} on {access.describe()}: "
                            f"{listed.stderr.strip()[-200:] or f'exit {listed.returncode}'}")
        # never made (an `up` that stopped early) or removed already (a repeated destroy)
        for emptied in (path.rsplit("/", 1)[0], REMOTE_DIR):
            access.run(["rmdir", "--ignore-fail-on-non-empty", "--", emptied], check=False)
        return f"log directory {path} (gone already)"
    names = listed.stdout.split()
    logs = [n for n in names if SERIAL_LOG_RE.fullmatch(n)]
    access.run_all([*(["rm", "-f", "--", f"{path}/{n}"] for n in logs),
                    ["rmdir", "--ignore-fail-on-non-empty", "--", path],
                    ["rmdir", "--ignore-fail-on-non-empty", "--", path.rsplit("/", 1)[0]]])
    access.run(["rmdir", "--ignore-fail-on-non-empty", "--", REMOTE_DIR], check=False)
    left = len(names) - len(logs)
    return f"log directory {path}" + (f" (left in place: {left} file(s) vnet did not write)"
                                      if left else "")


def log_dir_labs(access: HostAccess, owner: str) -> list[str]:
    """The labs of this owner that have a log directory on the host (gc's trace of a lab)."""
    if not OWNER_RE.fullmatch(owner):
        raise ValueError(f"not an owner id: {owner!r}")
    result = access.run(["ls", "-1", "--", f"{REMOTE_DIR}/{owner}"], check=False)
    return sorted(n for n in result.stdout.split() if is_name(n)) if result.returncode == 0 \
        else []
