"""The host side of each host of a multi-host lab, local or remote (README "Several hosts").

A sandbox host is entered through its network namespace and shares vnet's file system: its
guests' serial logs sit in the lab's state dir. So does this machine, the first host of a lab
outside a sandbox, whose host side runs in vnet's own namespace. A remote host (qemu+ssh://) is reached over SSH
(host/hostaccess.py): its QEMU writes the serial logs on that machine, in a per-lab directory
under hostaccess.REMOTE_DIR that vnet creates before the domains start and removes with the lab,
and vnet reads them with `cat` over SSH. (libvirt's console stream, virDomainOpenConsole, was
the other way: it shows only what the guest prints while a client is attached and admits one
client at a time, so an `up` that attaches late, or a `status` while `up` waits, would miss the
VNET-ADDR lines the file keeps.)

Each remote URI a lab used is remembered under the target, so `gc` finds the hosts of a lab
whose record is gone."""
from __future__ import annotations

import hashlib
import json
import shlex
from pathlib import Path
from urllib.parse import urlsplit

from ...errors import Unsupported, VnetError
from ...host import hostaccess, locks, state, vxlan
from ...host.hostaccess import HostAccess
from ...host.paths import state_root
from ...host.safepath import child
from ...host.state import Target
from ...lab.model import Lab
from ...progress import Progress
from .. import boot
from . import lifecycle
from .connection import LibvirtDriver

POLL = 1.0                          # seconds between console reads: each is an SSH round trip


def is_remote(t: Target) -> bool:
    return t.netns is None and hostaccess.is_ssh_uri(t.uri)


def is_here(t: Target) -> bool:
    """This machine: a host with no namespace named by a local URI (the first host of a lab
    outside a sandbox, multihost.host_targets): its host side runs in vnet's own namespace."""
    return t.netns is None and hostaccess.is_local_uri(t.uri)


def access(t: Target) -> HostAccess:
    if is_remote(t):
        return hostaccess.for_uri(t.uri)
    return HostAccess(here=True) if is_here(t) else HostAccess(netns=t.netns)


def target_of(entry: dict) -> Target:
    """A host's Target from its entry in the lab record ({"uri", "netns"})."""
    return Target(uri=entry["uri"], netns=entry.get("netns"))


def log_dir(t: Target, owner: str, lab: str, local_dir: Path) -> str:
    """Where the host's QEMU writes the lab's serial logs."""
    return hostaccess.remote_lab_dir(owner, lab) if is_remote(t) else str(local_dir)


def prepare(t: Target, owner: str, lab: str) -> None:
    """Before the domains start: the remote log directory exists (QEMU does not create it)."""
    if is_remote(t):
        hostaccess.prepare_log_dir(access(t), owner, lab)


def console(t: Target, directory: str, vm: str) -> str:
    if is_remote(t):
        return hostaccess.read_log(access(t), directory, vm)
    return boot.read_console(boot.serial_log(directory, vm))


def reported(entry: dict, lab_dir: Path, vm: str) -> dict[str, str]:
    """{mac: ip/prefix} from the console of a VM whose host has `entry` in the lab record."""
    return boot.console_addresses(console(target_of(entry), entry.get("log_dir", str(lab_dir)),
                                          vm))


class RemoteBoot(lifecycle.LibvirtBoot):
    """The guests of one remote host: the same readiness, the console read over SSH."""
    poll = POLL

    def __init__(self, lab: Lab, driver: LibvirtDriver, t: Target, directory: str):
        super().__init__(lab, driver, Path(directory))
        self.t, self.directory = t, directory

    def console(self, vm: str) -> str:
        return console(self.t, self.directory, vm)


def wait_for_addresses(lab: Lab, t: Target, directory: str, progress: Progress) -> None:
    driver = LibvirtDriver(t)
    if not is_remote(t):
        lifecycle.wait_for_addresses(lab, t, driver, Path(directory), progress)
        return
    boot.wait(RemoteBoot(lab, driver, t, directory), [vm.name for vm in lab.vms], progress,
              lifecycle.ADDRESS_TIMEOUT)


def clean(t: Target, owner: str, lab: str, legacy: bool = False,
          networks: tuple[str, ...] = ()) -> list[str]:
    """The lab's host-side traces on one host: its VXLAN devices and (remote) its log dir
    (`legacy`: the record predates the owner in the VXLAN alias; `networks`: the lab's, so a
    device a crash left without its alias goes too: vxlan.remove)."""
    removed = vxlan.remove(access(t), owner, lab, legacy, networks)
    if is_remote(t):
        removed.append(hostaccess.remove_log_dir(access(t), owner, lab))
    return removed


def refuse_shared_lab(target: Target, lab: str, targets: dict[str, Target]) -> None:
    """Before anything is created: a lab of this name that another target (another sandbox,
    another URI) records on one of these remote hosts would be taken for this one's, as libvirt
    tags and VXLAN aliases name the owner and the lab, not the target; exit 2."""
    mine = {_host_of(t.uri): name for name, t in targets.items() if is_remote(t)}
    for key in state.targets_recording(lab):
        if key == target.key:
            continue
        try:
            record = json.loads((child(state_root() / "labs", key) / lab / state.RECORD)
                                .read_text())
            theirs = {_host_of(h["uri"]) for h in record.get("hosts", {}).values()
                      if hostaccess.is_ssh_uri(h["uri"])}
        except (OSError, ValueError, AttributeError, KeyError, TypeError):
            theirs = set(mine)          # cannot tell: say so rather than share
        for host in sorted(set(mine) & theirs):
            raise Unsupported(f"lab name: {lab} is also a lab of {key} on remote host {host} "
                              f"(hosts.{mine[host]}); choose another lab name, or destroy that "
                              "one first")


def _host_of(uri: str) -> str:
    """The host a remote URI names (user, port and parameters aside: one machine)."""
    try:
        return urlsplit(uri).hostname or uri
    except ValueError:
        return uri


# ------------------------------------------------------------- remote hosts for `gc`

def _remembered_dir(target: Target) -> Path:
    return state.remote_hosts_dir(target)


def _remembered_lock(target: Target):
    """remember and forget_unused of one target, one at a time: a forget must neither remove
    the directory between a remember's mkdir and its write, nor drop an entry an `up` writes
    while it reads the records (the up saved its record first, so a forget after sees it)."""
    return locks.held("remote-hosts", target.key)


def remember(target: Target, t: Target) -> None:
    if is_remote(t):
        with _remembered_lock(target):
            d = _remembered_dir(target)
            d.mkdir(parents=True, exist_ok=True)
            locks.write_atomic(d / hashlib.sha256(t.uri.encode()).hexdigest()[:16], t.uri)


def forget_unused(target: Target, uris: list[str] | None = None) -> None:
    """Forget the remote hosts (those of `uris`, else all) that no lab recorded on `target`
    uses any more: after a destroy, or a gc that cleaned them."""
    with _remembered_lock(target):
        _forget_unused(target, uris)


def _forget_unused(target: Target, uris: list[str] | None) -> None:
    d = _remembered_dir(target)
    if not d.is_dir():
        return
    used = set()
    for lab in state.labs_of(target):
        try:
            used |= {h["uri"] for h in (state.read(target, lab) or {}).get("hosts", {}).values()}
        except state.CorruptState:
            return                       # cannot tell: keep them all
    for entry in _entries(d):
        uri = entry.read_text()
        if uri not in used and (uris is None or uri in uris):
            entry.unlink()
    if not any(d.iterdir()):
        d.rmdir()


def _entries(d: Path) -> list[Path]:
    """The remembered URIs' files (not a temporary file of locks.write_atomic)."""
    return [p for p in d.iterdir() if not p.name.startswith(".")] if d.is_dir() else []


def remembered(target: Target) -> list[str]:
    with _remembered_lock(target):
        uris = sorted(p.read_text() for p in _entries(_remembered_dir(target)))
    return [u for u in uris if hostaccess.is_ssh_uri(u)]


def gc_remote(target: Target, progress: Progress) -> list[str]:
    """On each remembered remote host: the labs of this owner (libvirt objects tagged with the
    owner id, log directories under the owner's directory, VXLAN devices whose alias names the
    owner) that have no record on `target`."""
    known = set(state.labs_of(target))
    removed: list[str] = []
    for uri in remembered(target):
        try:      # an older vnet remembered it: libvirt opens only what up would take now
            hostaccess.for_uri(uri, f"remembered remote host {uri}")
        except Unsupported as exc:
            progress(f"left alone: {exc.message}")
            continue
        t = Target(uri=uri)
        driver = LibvirtDriver(t)
        try:
            labs = set(lifecycle.tagged_labs(driver, progress)) | \
                set(hostaccess.log_dir_labs(access(t), driver.owner)) | \
                vxlan.owner_labs(access(t), driver.owner)
            for lab in sorted(labs - known):
                if state.targets_recording(lab):    # a lab of another target on this host
                    continue
                removed += driver.destroy(lab, progress)
                removed += clean(t, driver.owner, lab)
            forget_unused(target, [uri])
        except VnetError as exc:
            progress(f"left for later: host {uri} ({exc.message}); once it answers: vnet gc"
                     + (f" --sandbox {target.sandbox}" if target.sandbox
                        else f" --uri {shlex.quote(target.uri)}"))
    return removed
