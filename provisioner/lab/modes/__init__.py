"""Network modes as data. Each mode is one small module in this package that defines MODE;
adding a mode is adding a file (plus its libvirt network template)."""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from ipaddress import IPv4Network

from ..model import Backend

CELLS = ("vm_to_host", "host_to_vm", "vm_to_vm", "vm_to_internet", "internet_to_vm")
VALUES = ("yes", "no", "port-forward")


@dataclass(frozen=True)
class Reachability:
    """One row of the mode table: what a mode promises, cell by cell."""
    vm_to_host: str
    host_to_vm: str
    vm_to_vm: str
    vm_to_internet: str
    internet_to_vm: str

    def __post_init__(self):
        for cell in CELLS:
            if getattr(self, cell) not in VALUES:
                raise ValueError(f"{cell}={getattr(self, cell)!r} is not one of {VALUES}")

    def as_dict(self) -> dict[str, str]:
        return {cell: getattr(self, cell) for cell in CELLS}


@dataclass(frozen=True)
class Mode:
    name: str
    rank: int                      # position in the mode table
    summary: str
    has_dhcp_server: bool          # dhcp defaults to this
    subnet: str                    # "auto": vnet picks one; "fixed": per-VM 10.0.2.0/24; "lan": the LAN's
    host_on_network: bool          # the host has an address the guests can reach
    port_forwards: bool            # port_forwards are allowed
    expected: dict[Backend, Reachability]
    # Why a backend's row differs from VirtualBox's table, stated as data so reports can say it.
    differences: dict[Backend, str] = field(default_factory=dict)
    fixed_subnet: IPv4Network | None = None
    # Where automatic subnets come from first (VirtualBox 6.1.28+ allows host-only networks
    # only in 192.168.56.0/21); then 192.168.150.0/24 upward.
    preferred_subnets: tuple[str, ...] = ()
    # How the backends realize the mode (the drivers read these, never the mode's name):
    vbox_adapter: str = ""         # VBoxManage --nicN: nat, natnetwork, hostonly, intnet, bridged
    libvirt_interface: str = "network"  # <interface type>: user (QEMU NAT), bridge, network
    libvirt_forward: str | None = None  # <forward mode> of its libvirt network
    per_vm_nat: bool = False       # each VM NIC has a private NAT (guest 10.0.2.15, no leases)
    host_forwards: str | None = None    # port forwards: "hostfwd" (QEMU) or "proxy" (vnet's)
    # VirtualBox's DHCP server for this adapter cannot reserve an address per MAC (the NAT
    # network's cannot; the host-only one can): its guests take their planned addresses
    # statically, so that port forwards aim at them.
    vbox_static_addresses: bool = False
    # Frames between its guests cross a host bridge that libvirt adds no ACCEPT rule for: a
    # FORWARD policy of DROP drops them when br_netfilter is on (doctor's forward-policy).
    unrouted_bridge: bool = False
    # The guests sit on the host's physical LAN, the only network a host device (an SR-IOV VF,
    # a vDPA device) can attach to: it joins the physical network of its device.
    physical_lan: bool = False
    # Its network is a bridge vnet owns end to end, so an Open vSwitch bridge can stand in
    # for it (nat is QEMU's user network, natnetwork's bridge is libvirt's with its NAT and
    # dnsmasq, bridged is the host's LAN bridge).
    openflow_switch: bool = False
    bridge_owner: str = ""         # who owns its bridge when vnet does not (said in refusals)


def _load() -> dict[str, Mode]:
    modes = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        mode = importlib.import_module(f"{__name__}.{info.name}").MODE
        modes[mode.name] = mode
    return dict(sorted(modes.items(), key=lambda kv: kv[1].rank))


MODES: dict[str, Mode] = _load()


def names() -> list[str]:
    return list(MODES)


def expected(mode: str, backend: Backend | str) -> Reachability:
    return MODES[mode].expected[Backend(backend)]


def host_device_refusal(model: str, needs_hardware: str | None, mode: str) -> str | None:
    """Why a NIC model that passes a host device through cannot sit on this mode's network,
    or None when it can (one message for the lab loader and the renderers)."""
    if not needs_hardware or MODES[mode].physical_lan:
        return None
    return (f"{model} NICs attach to the physical network of their device, so they need a "
            f"bridged network, not {mode}; models for {mode}: virtio, e1000")
