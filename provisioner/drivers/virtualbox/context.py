"""What a VirtualBox plan depends on besides the lab: the machine's VBoxContext (version, host
OS, disk, serial dir, owner), vnet's extradata keys, and the names and tokens its argv carries
(VM and network names, host-only interface tokens bound at apply time, MACs as VBoxManage
wants them); and what the machine decides: where VirtualBox labs' records live (TARGET), its
host OS and the host-only ranges /etc/vbox/networks.conf allows."""
from __future__ import annotations

import re
import sys
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from ipaddress import ip_network
from pathlib import Path, PurePosixPath

from ...errors import VnetError
from ...host.owner import PLACEHOLDER
from ...host.state import Target
from ...lab.naming import object_name

def vm_uuid(owner: str, lab: str, vm: str) -> str:
    """The UUID `createvm --uuid` gives a lab's VM, derived from its owner, lab and name: vnet
    records it before createvm runs, so a VM whose tags were never set (a Ctrl-C between
    createvm and setextradata) is still known as this lab's by `destroy`."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"vnet:{owner}:{lab}:{vm}"))


TAG_KEY = "vnet/lab"              # setextradata <vm> vnet/lab <lab>: how teardown/gc find our VMs
OWNER_KEY = "vnet/owner"          # ... and vnet/owner <state root's id> (provisioner/host/owner.py)
NETWORKS_CONF = "/etc/vbox/networks.conf"
PLACEHOLDER_RE = re.compile(r"\{hostonlyif:[a-z0-9_-]+\}")
CREATED_RE = re.compile(r"Interface '([^']+)' was successfully created")
TARGET = Target(uri="vbox://local", sandbox=None)   # where VirtualBox labs' records live
DEFAULT_RANGES = ("192.168.56.0/21",)       # VirtualBox >= 6.1.28 without networks.conf
HOST_OS = {"linux": "linux", "darwin": "darwin", "win32": "windows", "sunos5": "solaris"}


@dataclass(frozen=True)
class VBoxContext:
    """What the machine decides, not the lab. The defaults render a readable dry-run.

    disk: the VDI the VMs boot from. A `{vm}` in it names one file per VM; without it every VM
    attaches the same base image as `--mtype multiattach` (VirtualBox refuses one normal disk in
    two VMs, and `unregistervm --delete` would delete a normal one): each VM then writes to its
    own differencing image and teardown leaves the base alone.
    seed_iso: the cloud-init `cidata` ISO attached as a DVD; `{vm}` in it is the VM's name.
    serial_dir: the lab's state dir: serial logs and the tiny image's per-VM boot ISOs.
    ssh_pubkey, cmdline_base: what goes into the boot ISOs' kernel command lines.
    owner: the owner id each VM carries in its vnet/owner extradata beside vnet/lab.
    hostonly_ranges: what /etc/vbox/networks.conf allows (VirtualBox's default when it is absent).
    mgmt_subnet: the lab-owned host-only network of the control path (host at its first
    address); inside VirtualBox's default host-only range 192.168.56.0/21.
    """
    version: tuple[int, int, int] = (7, 0, 0)
    host_os: str = "linux"                      # linux | darwin | windows | solaris
    disk: str = "/var/cache/vnet/images/tiny/root.vdi"
    seed_iso: str | None = None
    basefolder: str | None = None
    serial_dir: str = "/var/lib/vnet/labs/LAB"
    hostonly_ranges: tuple[str, ...] = ("192.168.56.0/21",)
    ssh_pubkey: str = "ssh-ed25519 GENERATED-AT-UP"
    cmdline_base: str = "console=ttyS0 quiet panic=-1"
    mgmt_subnet: str = "192.168.63.0/24"
    owner: str = PLACEHOLDER                    # the state root's id; `up` sets the real one


def vbox_name(lab: str, item: str) -> str:
    """VMs, NAT networks, internal networks and host-only networks: vnet-<lab>-<item>."""
    return object_name(lab, item)


def boot_iso_path(serial_dir: str, vm: str) -> str:
    """Where a tiny-image VM's boot ISO lives: the lab's state dir."""
    return str(PurePosixPath(serial_dir) / f"{vm}.boot.iso")


def hostonlyif_token(network: str) -> str:
    return "{hostonlyif:" + network + "}"


def vbox_mac(mac: str) -> str:
    """52:54:00:aa:bb:01 -> 525400AABB01: --macaddressN takes exactly 12 hex digits."""
    return mac.replace(":", "").upper()


def created_interface(stdout: str) -> str:
    """The vboxnetN name in the output of `VBoxManage hostonlyif create`."""
    match = CREATED_RE.search(stdout)
    if match is None:
        raise ValueError(f"no \"Interface '...' was successfully created\" line in: {stdout!r}")
    return match.group(1)


def substitute(argv: tuple[str, ...], bound: Mapping[str, str]) -> tuple[str, ...]:
    """argv with every `{hostonlyif:<net>}` token replaced by its bound interface name."""
    def one(match: re.Match) -> str:
        try:
            return bound[match.group(0)]
        except KeyError:
            raise KeyError(f"{match.group(0)} is not bound yet (run its `hostonlyif create` "
                           f"first): {' '.join(argv)}") from None
    return tuple(PLACEHOLDER_RE.sub(one, arg) for arg in argv)


# --- the machine --------------------------------------------------------------------------------

def hostonly_ranges(path: Path = Path(NETWORKS_CONF)) -> tuple[str, ...]:
    """What /etc/vbox/networks.conf allows ('* 10.0.0.0/8 192.168.0.0/16' lines; '#' comments;
    an empty file allows nothing); VirtualBox's default when the file is absent."""
    if not path.exists():
        return DEFAULT_RANGES
    ranges: list[str] = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        words = line.split("#", 1)[0].split()
        if not words or words[0] != "*":
            continue
        for word in words[1:]:
            try:
                ranges.append(str(ip_network(word, strict=False)))
            except ValueError:
                raise VnetError(f"{path}:{number}: {word!r} is not a network range") from None
    return tuple(ranges)


def detect_context(version: tuple[int, int, int], disk: str, serial_dir: str,
                   networks_conf: Path = Path(NETWORKS_CONF)) -> VBoxContext:
    return VBoxContext(version=version, host_os=HOST_OS.get(sys.platform, sys.platform),
                       disk=disk, serial_dir=serial_dir,
                       hostonly_ranges=hostonly_ranges(networks_conf))
