"""Tunnels between VMs (issue 17): the lab file's `tunnels:`, validated into Tunnel records.

    tunnels:
      - {name: l2x, type: vxlan, id: 4242, subnet: 10.99.0.0/24, endpoints: [a, b]}

Point to point only: a tunnel has exactly two endpoints (VM names, or {vm, ip} to pick the
overlay address; by default the first gets .1, the second .2). The endpoints' underlay
addresses must reach each other: on one shared network, or through a router VM (lab/links.py
adds the routes). The guests build the tunnels (playbooks/library/vnet_tunnel.py, the first
task of the verify playbook), so both backends get the same configuration; the per-lab keys
live in the lab's state directory (host/tunnelkeys.py, tunnel_secrets), never in the lab file.
"""
from __future__ import annotations

from ipaddress import IPv4Address, IPv4Interface, IPv4Network, ip_network
from typing import Any

from ..errors import LabFileError, quote
from . import modes
from .links import IFNAME_MAX, KERNEL_NAMES, addresses
from .fields import _mapping
from .model import Lab, Network, Tunnel, TunnelEnd, Vm, check_name
from .naming import mgmt_subnet_for

TYPES = ("vxlan", "nvgre", "gretap", "gre", "ipsec", "wireguard")
KEYS = {"name", "type", "id", "subnet", "endpoints"}
END_KEYS = {"vm", "ip"}
# What `id` means per type, and its range: VXLAN's VNI is 24 bits (RFC 7348 section 5);
# NVGRE's VSID is the GRE key's upper 24 bits, 0-0xFFF and 0xFFFFFF reserved (RFC 7637
# section 3.2); a GRE key is 32 bits (RFC 2890 section 2.1).
ID_RANGE = {"vxlan": ("VNI", 1, 2**24 - 1), "nvgre": ("VSID", 0x1000, 2**24 - 2),
            "gretap": ("key", 0, 2**32 - 1), "gre": ("key", 0, 2**32 - 1)}
ID_REQUIRED = ("vxlan", "nvgre")
VXLAN_PORT = 4789                  # IANA's VXLAN port (RFC 7348 section 5)
# The fallback devices the kernel makes in every namespace when it loads a tunnel module
# (ip_gre.c: gre0, gretap0, erspan0; ipip.c: tunl0; sit.c: sit0; ip6_tunnel.c: ip6tnl0;
# ip6_gre.c: ip6gre0; ip_vti.c: ip_vti0; ip6_vti.c: ip6_vti0). vnet_tunnel keeps a device
# that exists, so a tunnel named like one would never be built. Not bond0: the guest loads
# bonding with max_bonds=0 (guest/kernel.py), and not wg*: WireGuard makes no fallback.
FALLBACK_DEVICES = ("gre0", "gretap0", "erspan0", "tunl0", "sit0", "ip6tnl0", "ip6gre0",
                    "ip_vti0", "ip6_vti0")
# No overlay in these: loopback, link-local and multicast are no unicast subnet for a tunnel
# (RFC 6890); the sandbox's simulated Internet and its LAN are routed by the sandbox itself
# (host/sandbox.py: INTERNET_IP's /24, LAN_SUBNET; written out here because host/sandbox
# imports the lab loader; tests/unit/test_tunnels_labfile.py checks they agree).
RESERVED_SUBNETS = tuple((IPv4Network(net), what) for net, what in (
    ("127.0.0.0/8", "loopback"), ("169.254.0.0/16", "link-local"), ("224.0.0.0/4", "multicast"),
    ("203.0.113.0/24", "the sandbox's simulated Internet"),
    ("198.51.100.0/24", "the sandbox's LAN")))


def nvgre_key(vsid: int, flow_id: int = 0) -> int:
    """The GRE key an NVGRE frame carries: VSID << 8 | FlowID (RFC 7637 section 3.2)."""
    return vsid << 8 | flow_id


def gre_key(tunnel: Tunnel) -> int | None:
    """The key in the GRE header of this tunnel's frames (None: no key)."""
    if tunnel.type == "nvgre" and tunnel.id is not None:     # always: nvgre needs an id
        return nvgre_key(tunnel.id)
    return tunnel.id if tunnel.type in ("gre", "gretap") else None


def parse(raw: Any, lab_name: str, networks: tuple[Network, ...],
          vms: tuple[Vm, ...]) -> tuple[Tunnel, ...]:
    """The lab file's `tunnels:` -> Tunnels; LabFileError (exit 2) naming the field."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise LabFileError("tunnels", "must be a list of {name, type, id, subnet, endpoints}")
    by_vm = {vm.name: vm for vm in vms}
    # nat gives each VM a private network of its own: two VMs on "one" nat network share none
    private = {n.name for n in networks if modes.MODES[n.mode].subnet == "fixed"}
    taken = [(n.subnet, f"network {n.name}") for n in networks if n.subnet is not None]
    taken.append((mgmt_subnet_for(lab_name), f"the management network of lab {lab_name}"))
    tunnels: list[Tunnel] = []
    for i, item in enumerate(raw):
        tunnel = _tunnel(item, f"tunnels[{i}]", by_vm, private, taken, tunnels)
        taken.append((tunnel.subnet, f"tunnel {tunnel.name}"))
        tunnels.append(tunnel)
    return tuple(tunnels)


def _tunnel(item: Any, at: str, by_vm: dict[str, Vm], private: set[str], taken: list,
            earlier: list[Tunnel]) -> Tunnel:
    item = _mapping(item, at, KEYS, required={"name", "type", "subnet", "endpoints"})
    name = check_name(item["name"], f"{at}.name")
    where = f"tunnels.{name}"
    if len(name) > IFNAME_MAX or KERNEL_NAMES.fullmatch(name):
        raise LabFileError(f"{where}.name", f"{quote(name)} cannot name a guest interface: use "
                           f"at most {IFNAME_MAX} characters and no NIC name (eth0, lo)")
    if name in FALLBACK_DEVICES:
        raise LabFileError(f"{where}.name", f"{quote(name)} is a device the kernel makes itself "
                           f"when it loads a tunnel module ({', '.join(FALLBACK_DEVICES)}); "
                           "name the tunnel otherwise, e.g. gre1")
    if any(t.name == name for t in earlier):
        raise LabFileError(f"{where}.name", f"duplicate tunnel name {quote(name)}")
    kind = item["type"]
    if not isinstance(kind, str) or kind not in TYPES:
        raise LabFileError(f"{where}.type", f"unknown tunnel type {quote(kind)}; valid types: "
                           f"{', '.join(TYPES)}")
    tid = _id(item.get("id"), kind, f"{where}.id")
    subnet = _subnet(item["subnet"], f"{where}.subnet", taken)
    ends = _endpoints(item["endpoints"], f"{where}.endpoints", subnet, by_vm, name, private)
    tunnel = Tunnel(name=name, type=kind, id=tid, subnet=subnet, endpoints=ends)
    _check_reuse(tunnel, earlier, where)
    return tunnel


def _id(value: Any, kind: str, where: str) -> int | None:
    if kind not in ID_RANGE:
        if value is not None:
            raise LabFileError(where, f"{kind} tunnels take no id (vnet generates their keys); "
                               f"types with an id: {', '.join(ID_RANGE)}")
        return None
    what, low, high = ID_RANGE[kind]
    if value is None:
        if kind in ID_REQUIRED:
            raise LabFileError(where, f"is required: the {kind} {what}, {low}..{high}")
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise LabFileError(where, f"{quote(value)} is not a valid {kind} {what}: use an "
                           f"integer {low}..{high}")
    return value


def _subnet(value: Any, where: str, taken: list) -> IPv4Network:
    try:
        subnet = ip_network(str(value), strict=True)
    except ValueError:
        raise LabFileError(where, f"{quote(value)} is not an IPv4 CIDR such as "
                           "10.99.0.0/24") from None
    if subnet.version != 4 or not 8 <= subnet.prefixlen <= 30:
        raise LabFileError(where, f"{value} is out of range: use an IPv4 subnet /8 to /30")
    for other, what in RESERVED_SUBNETS:
        if subnet.overlaps(other):
            raise LabFileError(where, f"{subnet} overlaps {other} ({what}); an overlay needs a "
                               "private subnet of its own, such as 10.99.0.0/24")
    for other, owner in taken:
        if subnet.overlaps(other):
            raise LabFileError(where, f"{subnet} overlaps {other} of {owner}; an overlay "
                               "needs a subnet of its own")
    return subnet


def _endpoints(raw: Any, where: str, subnet: IPv4Network, by_vm: dict[str, Vm],
               name: str, private: set[str]) -> tuple[TunnelEnd, ...]:
    if not isinstance(raw, list) or len(raw) != 2:
        raise LabFileError(where, "must list exactly 2 endpoints (vnet's tunnels are point to "
                           "point): VM names, or {vm: NAME, ip: ADDRESS}")
    picked: list[tuple[Vm, IPv4Address | None]] = []
    for k, item in enumerate(raw):
        at = f"{where}[{k}]"
        ip = None
        if isinstance(item, dict):
            unknown = sorted(set(map(str, item)) - END_KEYS)
            if unknown or "vm" not in item:
                raise LabFileError(f"{at}.{unknown[0] if unknown else 'vm'}",
                                   "an endpoint is a VM name or {vm: NAME, ip: ADDRESS}")
            ip = _overlay_ip(item.get("ip"), f"{at}.ip", subnet)
            item = item["vm"]
        if not isinstance(item, str) or item not in by_vm:
            raise LabFileError(f"{at}", f"no VM named {quote(item)}; VMs in this lab: "
                               f"{', '.join(by_vm)}")
        vm = by_vm[item]
        if vm.image != "tiny":
            raise LabFileError(f"{at}", f"{vm.name} runs a cloud image; tunnels are built by the "
                               "tiny image's tools; valid images for an endpoint: tiny")
        if any(b.name == name for b in vm.bonds):
            raise LabFileError(f"{where.rsplit('.', 1)[0]}.name", f"{vm.name} has a bond named "
                               f"{name}; give the tunnel another name")
        picked.append((vm, ip))
    if picked[0][0] is picked[1][0]:
        raise LabFileError(where, f"both endpoints are {picked[0][0].name}; a tunnel joins two "
                           "different VMs")
    chosen = [ip if ip is not None else _nth_host(subnet, k, f"{where}[{k}]")
              for k, (_, ip) in enumerate(picked)]
    if chosen[0] == chosen[1]:
        raise LabFileError(f"{where}[1].ip", f"{chosen[1]} is already the other endpoint's")
    under = _underlay(picked[0][0], picked[1][0], where, private)
    return tuple(TunnelEnd(vm=vm.name, overlay_ip=IPv4Interface(f"{ip}/{subnet.prefixlen}"),
                           underlay_ip=u_ip, network=u_net)
                 for (vm, _), ip, (u_ip, u_net) in zip(picked, chosen, under))


def _nth_host(subnet: IPv4Network, k: int, where: str) -> IPv4Address:
    """The subnet's k-th host address (0: .1), by arithmetic: listing a /8's hosts costs ~1 GB."""
    ip = subnet.network_address + 1 + k
    if ip >= subnet.broadcast_address:
        raise LabFileError(where, f"{subnet} has no host address {k + 1}; use a larger subnet")
    return ip


def _overlay_ip(value: Any, where: str, subnet: IPv4Network) -> IPv4Address | None:
    if value is None:
        return None
    try:
        ip = IPv4Address(str(value))
    except ValueError:
        raise LabFileError(where, f"{quote(value)} is not an IPv4 address") from None
    if ip not in subnet or ip in (subnet.network_address, subnet.broadcast_address):
        raise LabFileError(where, f"{ip} is not a host address of the overlay {subnet}")
    return ip


def _underlay(a: Vm, b: Vm, where: str, private: set[str]) -> list[tuple[IPv4Address, str]]:
    """[(address, network)] of each end: on a network both share, else across a router VM
    (one of a's routes, lab/links.py, leads to a subnet b has an address on)."""
    mine, theirs = ({net: ips for net, ips in addresses(vm).items() if net not in private}
                    for vm in (a, b))
    for net, ips in mine.items():
        if net in theirs:
            return [(ips[0].ip, net), (theirs[net][0].ip, net)]
    for route in a.routes:
        for net, ips in theirs.items():
            if ips[0].ip in route.destination:
                near = next((n for n, own in mine.items()
                             if any(route.via in o.network for o in own)), None)
                if near is not None:
                    return [(mine[near][0].ip, near), (ips[0].ip, net)]
    raise LabFileError(where, f"no route reaches from {a.name} to {b.name}: the endpoints must "
                       "have addresses on a shared network, or a router VM (router: true) "
                       "must connect their networks")


def _demux(tunnel: Tunnel) -> tuple[str, int] | None:
    """What the receiving kernel tells this tunnel's frames apart by, besides the addresses:
    VXLAN's VNI (one UDP port for all), a GRE key per GRE device kind (gretap: nvgre too)."""
    if tunnel.type == "vxlan":
        return ("vxlan", tunnel.id or 0)
    if tunnel.type in ("nvgre", "gretap"):
        return ("gretap", gre_key(tunnel) or 0)
    if tunnel.type == "gre":
        return ("gre", tunnel.id or 0)
    return None


def _check_reuse(tunnel: Tunnel, earlier: list[Tunnel], where: str) -> None:
    """A VXLAN VNI or NVGRE VSID names one segment on its underlay: reused there, two overlays
    would be one. Between one pair of VMs, two tunnels the kernel demultiplexes alike (same
    GRE key, or VNI) would take each other's frames. GRE keys may repeat between other pairs."""
    key = _demux(tunnel)
    nets = {e.network for e in tunnel.endpoints}
    pair = {e.vm for e in tunnel.endpoints}
    for other in earlier:
        shared = nets & {e.network for e in other.endpoints}
        if tunnel.type == other.type in ("vxlan", "nvgre") and tunnel.id == other.id and shared:
            what = "VNI" if tunnel.type == "vxlan" else "VSID"
            raise LabFileError(f"{where}.id", f"{tunnel.type} {what} {tunnel.id} is already "
                               f"used by tunnel {other.name} on underlay network "
                               f"{sorted(shared)[0]}; give each {tunnel.type} tunnel there its "
                               "own id")
        if key is not None and _demux(other) == key and {e.vm for e in other.endpoints} == pair:
            what = f"VNI {tunnel.id}" if key[0] == "vxlan" else f"GRE key {key[1]}"
            raise LabFileError(f"{where}.id", f"{what} is already used by tunnel {other.name} "
                               f"between {' and '.join(sorted(pair))}; give it another id")


DEFAULT_IDS = {"vxlan": 4242, "nvgre": 5001, "gretap": 42, "gre": 42}


def default_tunnel(kind: str, vms: list[str]) -> dict:
    """`vnet create --tunnel KIND`: one tunnel of that type between the first two VMs."""
    where = "--tunnel"
    if len(vms) < 2:
        raise LabFileError(where, "a tunnel joins two VMs; use --vms 2 or more")
    if kind not in TYPES:
        raise LabFileError(where, f"unknown tunnel type {quote(kind)}; valid types: "
                           f"{', '.join(TYPES)}")
    name = f"{kind}0" if f"{kind}0" not in FALLBACK_DEVICES else f"{kind}1"   # gre0: the kernel's
    item: dict[str, object] = {"name": name, "type": kind, "subnet": "10.99.0.0/24", "endpoints": vms[:2]}
    if kind in DEFAULT_IDS:
        item["id"] = DEFAULT_IDS[kind]
    return item


def tunnels_of(lab: Lab, vm: str) -> list[tuple[Tunnel, int]]:
    """(tunnel, index of `vm`'s end) for every tunnel `vm` ends."""
    return [(t, k) for t in lab.tunnels for k, e in enumerate(t.endpoints) if e.vm == vm]
