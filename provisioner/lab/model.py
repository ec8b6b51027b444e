"""The typed lab: frozen dataclasses, no I/O. labfile.py builds them; drivers read them."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import Enum
from ipaddress import IPv4Address, IPv4Interface, IPv4Network

# Names reach libvirt XML, bridge names, file paths, hostnames and VBoxManage argv, so they are
# held to an alphabet that is safe in all of them.
# Always used with fullmatch: `$` would also accept a trailing newline.
NAME_RE = re.compile(r"[a-z](?:[a-z0-9-]{0,22}[a-z0-9])?")
NAME_RULE = "lowercase letters, digits and '-', starting with a letter, at most 24 characters"


def is_name(value: object) -> bool:
    """True for a lab, VM, network or forward name that is safe in paths, XML and argv."""
    return isinstance(value, str) and NAME_RE.fullmatch(value) is not None


def check_name(value: object, where: str) -> str:
    """`value` if it is a valid name; LabFileError (exit 2) naming the field otherwise. Used
    for names from lab files, argv and names read back from libvirt or VirtualBox alike."""
    if not is_name(value):
        from ..errors import LabFileError, quote

        raise LabFileError(where, f"{quote(value)} is not a valid name: use {NAME_RULE}")
    assert isinstance(value, str)      # is_name said so; this tells the type checker
    return value


class Backend(str, Enum):
    LIBVIRT = "libvirt"
    VIRTUALBOX = "virtualbox"


@dataclass(frozen=True)
class PortForward:
    name: str
    proto: str          # tcp | udp
    host_port: int
    vm: str
    guest_port: int
    network: str
    host_ip: IPv4Address = IPv4Address("127.0.0.1")   # where the host side listens
    allow_privileged: bool = False                      # host_port < 1024 was asked for


@dataclass(frozen=True)
class Network:
    name: str
    mode: str                              # a key of provisioner.lab.modes.MODES
    subnet: IPv4Network | None             # None: nat (one 10.0.2.0/24 per VM) or an unknown LAN
    dhcp: bool
    bridge: str | None = None              # bridged only: existing host bridge
    host_ip: IPv4Address | None = None     # the host's address on this network, where it has one
    router: IPv4Address | None = None      # the guests' default gateway, where the mode has one
    port_forwards: tuple[PortForward, ...] = ()
    home: str | None = None                # several hosts: where NAT, DHCP and host address live
    switch: str = "linux"                  # linux (a Linux bridge) | openvswitch (lab/openflow.py)
    flows: tuple[str, ...] = ()            # openvswitch: ovs-ofctl flows, installed in order
    controller: str = "none"               # openvswitch: none | learning (an OpenFlow controller)


@dataclass(frozen=True)
class Impairment:
    """A link impairment declared on one NIC (lab/impair.py reads it; None: not declared).
    Where each part is applied, and how the guests measure it, is in the README ("Impairment")."""
    delay_ms: float | None = None
    jitter_ms: float | None = None
    loss_pct: float | None = None
    rate_mbit: float | None = None

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass(frozen=True)
class Nic:
    network: str
    model: str                             # a key of provisioner.lab.nics.NIC_MODELS
    mac: str                               # 52:54:00:aa:bb:cc (colon form)
    ip: IPv4Interface | None = None        # address with prefix, None when unknown (LAN DHCP)
    pf: str | None = None                  # sriov: physical function netdev
    vf_address: str | None = None          # sriov: PCI address 0000:04:10.1
    device: str | None = None              # vdpa: /dev/vhost-vdpa-N
    bond: str | None = None                # the VM's bond this NIC is a member of (no ip then)
    impair: Impairment | None = None       # delay, jitter, loss, rate on this NIC's link


@dataclass(frozen=True)
class CloudImage:
    """A qcow2 cloud image (Debian/Ubuntu genericcloud...) pinned by its sha256. Downloaded once
    into the cache under that digest; each VM boots a copy-on-write overlay of it with a NoCloud
    seed ISO (provisioner/guest/cloudimages.py, provisioner/guest/seed.py). Wants >= 512 MiB of memory."""
    name: str                              # from the lab's `images:` or `cloud-<sha256[:12]>`
    url: str                               # https://, http:// or file://
    sha256: str                            # 64 lowercase hex digits


@dataclass(frozen=True)
class Bond:
    """A Linux bond in a tiny-image guest (lab/links.py validates it; the guest init builds it
    from `vnet.bond=` on the kernel command line). It carries the address, not its members."""
    name: str                              # the guest's interface name (bond0)
    mode: str                              # active-backup | balance-rr | balance-xor | 802.3ad
    network: str                           # the one network all its members are on
    members: tuple[str, ...]               # the member NICs' MACs, in NIC order
    ip: IPv4Interface | None = None

    @property
    def mac(self) -> str:
        """The bond takes its first member's MAC (the bonding driver's default)."""
        return self.members[0]


@dataclass(frozen=True)
class Route:
    """A route vnet adds to a guest: `destination` is reached only through router VM `router`,
    at `via` on a network both share."""
    destination: IPv4Network
    via: IPv4Address
    router: str


@dataclass(frozen=True)
class TunnelEnd:
    """One end of a point-to-point tunnel (lab/tunnels.py): the VM, its overlay address, the
    underlay address the tunnel's outer packets carry, and the lab network that address is on
    (whose bridge carries the outer frames; across a router each end names its own side)."""
    vm: str
    overlay_ip: IPv4Interface              # on the tunnel device, with the overlay's prefix
    underlay_ip: IPv4Address
    network: str


@dataclass(frozen=True)
class Tunnel:
    """A tunnel between two VMs (issue 17). `id` is the VXLAN VNI, the NVGRE VSID or the GRE
    key (None: a GRE tunnel without a key, and always for ipsec and wireguard). Per-lab keys
    are not here: lab/tunnels.py tunnel_secrets() reads them from the lab's state directory."""
    name: str                              # also the guest's interface name
    type: str                              # vxlan | nvgre | gretap | gre | ipsec | wireguard
    id: int | None
    subnet: IPv4Network                    # the overlay
    endpoints: tuple[TunnelEnd, ...]


@dataclass(frozen=True)
class Vm:
    name: str
    image: str | CloudImage                # a built-in image name ("tiny") or a cloud image
    memory: int                            # MiB
    cpus: int
    nics: tuple[Nic, ...]
    bonds: tuple[Bond, ...] = ()
    router: bool = False                   # forwards between its networks (ip_forward=1)
    routes: tuple[Route, ...] = ()         # added by vnet: subnets behind a router VM
    host: str | None = None                # several hosts: the hypervisor host it runs on


@dataclass(frozen=True)
class Host:
    """A hypervisor host of a multi-host lab (lab/hosts.py): reached at `uri`, joined to the
    other hosts' VXLAN segments from `underlay_ip`."""
    name: str
    uri: str
    underlay_ip: IPv4Address


@dataclass(frozen=True)
class DeclaredCheck:
    """A cell the lab file declares (`checks:`, lab/declared.py): `source` and `target` are a VM
    name, "host" or "internet"; `network` is the one network the probe uses."""
    source: str
    target: str
    port: int
    proto: str                             # tcp | udp
    expect: str                            # pass | fail
    network: str


@dataclass(frozen=True)
class Lab:
    name: str
    networks: tuple[Network, ...]
    vms: tuple[Vm, ...]
    source: str | None = None              # the file it came from, for messages
    tunnels: tuple[Tunnel, ...] = ()
    checks: tuple[DeclaredCheck, ...] = ()  # user-declared cells, added to the matrix
    meta: dict = field(default_factory=dict, compare=False, hash=False)
    hosts: tuple[Host, ...] = ()           # empty: one host, the target's (as before hosts:)

    def network(self, name: str) -> Network:
        return next(n for n in self.networks if n.name == name)

    def vm(self, name: str) -> Vm:
        return next(v for v in self.vms if v.name == name)

    def nics_on(self, network: str) -> list[tuple[Vm, Nic]]:
        return [(vm, nic) for vm in self.vms for nic in vm.nics if nic.network == network]
