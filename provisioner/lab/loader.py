"""Lab file (YAML) -> Lab. Validates everything and fills defaults (the "resolve" phase), so a
driver never sees a lab it has to second-guess. Every error names its field path."""
from __future__ import annotations

import copy
import re
from dataclasses import dataclass, replace
from ipaddress import IPv4Address, IPv4Interface, IPv4Network, ip_network
from pathlib import Path
from typing import Any

from . import declared, forwardhosts, impair as impairs, links, modes, nics, openflow, tunnels
from ..errors import LabFileError, quote
from .forwards import check_host_ports, with_forwards
from .hosts import place
from .labyaml import parse
from .model import Bond, CloudImage, Lab, Network, Nic, Vm
from .fields import _choice, _int, _list, _mapping, _name
from .images import _images, _vm_image
from .naming import mgmt_subnet_for, nic_mac

# Every pattern is used with fullmatch (`$` with re.match would accept a trailing newline).
MAC_RE = re.compile(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}")
PCI_RE = re.compile(r"[0-9a-fA-F]{4}:[0-9a-fA-F]{2}:[0-9a-fA-F]{2}\.[0-7]")
NETDEV_RE = re.compile(r"[A-Za-z0-9_.-]{1,15}")
VDPA_RE = re.compile(r"/dev/vhost-vdpa-[0-9]+")
FIRST_AUTO = 150
FIRST_HOST = 10
CLOUD_MEMORY = 512                   # default MiB for a cloud-image VM (tiny: 128)

LAB_KEYS = {"name", "networks", "vms", "images", "tunnels", "checks", "hosts"}
NET_KEYS = {"name", "mode", "subnet", "dhcp", "bridge", "port_forwards", "switch", "flows",
            "controller", "home"}
VM_KEYS = {"name", "image", "memory", "cpus", "nics", "bonds", "router", "host"}
NIC_KEYS = {"network", "model", "mac", "ip", "pf", "vf_address", "device", "bond", "impair"}


@dataclass(frozen=True)
class Defaults:
    """What the environment decides: the sandbox fills bridged networks from its LAN."""
    bridge: str = "br0"
    bridged_subnet: IPv4Network | None = None
    bridged_host_ip: IPv4Address | None = None
    bridged_router: IPv4Address | None = None
    # where port forwards listen unless a forward names host_ip: loopback only, or the
    # sandbox host's uplink address (its own namespace, so nothing outside reaches it)
    forward_host_ip: IPv4Address = IPv4Address("127.0.0.1")
    # hosts a lab may name without uri/underlay_ip (a sandbox's hv1..hvN): name -> (uri, ip)
    hosts: tuple[tuple[str, str, IPv4Address], ...] = ()
    # where a forward served on each host listens unless it names host_ip (lab/forwardhosts.py)
    forward_host_ips: tuple[tuple[str, IPv4Address], ...] = ()


def sandbox_defaults(sb, bridge: str | None = None) -> Defaults:
    """Inside a vnet sandbox (provisioner.host.sandbox.Sandbox), bridged networks sit on its LAN
    and its hypervisor hosts are hv1..hvN."""
    from ..host import sandbox_hosts

    return Defaults(bridge=bridge or sb.lan_bridge, bridged_subnet=IPv4Network(sb.lan_subnet),
                    bridged_host_ip=IPv4Address(sb.host_lan_ip),
                    bridged_router=IPv4Address(sb.lan_gateway),
                    forward_host_ip=IPv4Address(sb.host_uplink_ip),
                    hosts=sandbox_hosts.lab_hosts(sb),
                    forward_host_ips=forwardhosts.sandbox_listen_addresses(
                        sandbox_hosts.lab_hosts(sb), IPv4Address(sb.host_uplink_ip)))


def load(path: str | Path, defaults: Defaults = Defaults()) -> Lab:
    """Read, parse (labyaml: strict YAML) and resolve a lab file; LabFileError on any fault."""
    return resolve(parse(Path(path)), defaults, source=str(path))


def resolve(data: Any, defaults: Defaults = Defaults(), source: str | None = None) -> Lab:
    lab = _mapping(data, "", LAB_KEYS, required={"name", "networks", "vms"})
    name = _name(lab["name"], "name")
    networks = _networks(lab["networks"], defaults)
    _check_mgmt_overlap(name, networks)
    images = _images(lab.get("images"))
    vms = _vms(lab["vms"], networks, name, images)
    resolved = tuple(with_forwards(net, raw, vms, defaults.forward_host_ip)
                     for net, raw in networks)
    check_host_ports(resolved)
    hosts, resolved, vms = place(lab, resolved, vms,
                                 {name: (uri, ip) for name, uri, ip in defaults.hosts})
    resolved = forwardhosts.listen_where_served(resolved, lab["networks"], vms, hosts,
                                                defaults.forward_host_ips)
    checks = declared.checks(lab.get("checks"), vms, resolved)
    # The raw data is kept so a lab can be rebuilt later exactly (it resolves deterministically).
    return Lab(name=name, networks=resolved, vms=vms, source=source, checks=checks,
               tunnels=tunnels.parse(lab.get("tunnels"), name, resolved, vms),
               meta={"raw": copy.deepcopy(data)}, hosts=hosts)


# --- networks -------------------------------------------------------------------------------

def _networks(raw: Any, defaults: Defaults) -> list[tuple[Network, dict]]:
    items = _list(raw, "networks", non_empty=True)
    seen: dict[str, int] = {}
    result: list[tuple[Network, dict]] = []
    for i, item in enumerate(items):
        net = _mapping(item, f"networks[{i}]", NET_KEYS, required={"name", "mode"})
        name = _name(net["name"], f"networks[{i}].name")
        where = f"networks.{name}"
        if name in seen:
            raise LabFileError(f"{where}.name", f"duplicate network name {quote(name)}")
        seen[name] = i
        result.append((_network(net, where, name, defaults), net))
    _assign_subnets(result)
    return result


def _network(net: dict, where: str, name: str, defaults: Defaults) -> Network:
    mode_name = _choice(net["mode"], f"{where}.mode", modes.names(), "mode", "valid modes")
    mode = modes.MODES[mode_name]
    switch = openflow.switch_fields(net, where, mode.name)     # {} for a Linux bridge
    dhcp = net.get("dhcp", switch.get("dhcp", mode.has_dhcp_server))
    if not isinstance(dhcp, bool):
        raise LabFileError(f"{where}.dhcp", "must be true or false")
    if dhcp and not mode.host_on_network:
        raise LabFileError(f"{where}.dhcp", f"{mode.name} networks have no DHCP server (no host "
                           "on the network); remove dhcp or use mode hostonly")
    bridge = net.get("bridge")
    on_lan = mode.subnet == "lan"      # the host's LAN, reached through a host bridge
    if bridge is not None and not on_lan:
        raise LabFileError(f"{where}.bridge", f"only bridged networks take a bridge, not {mode.name}")
    if on_lan:
        bridge = bridge if bridge is not None else defaults.bridge
        if not isinstance(bridge, str) or not NETDEV_RE.fullmatch(bridge):
            raise LabFileError(f"{where}.bridge", "must be a host interface name "
                               "(letters, digits, '_', '.', '-'; at most 15 characters)")
    subnet = None
    if "subnet" in net:
        if mode.subnet == "fixed":
            raise LabFileError(f"{where}.subnet", "nat gives every VM its own private "
                               "10.0.2.0/24, as VirtualBox does, so a subnet does not apply; "
                               "use mode natnetwork for a shared, addressable NAT network")
        subnet = _subnet(net["subnet"], f"{where}.subnet")
    host_ip = router = None
    if mode.subnet == "fixed":
        subnet = mode.fixed_subnet
        host_ip = router = IPv4Address("10.0.2.2")
    elif mode.subnet == "lan":
        if subnet is None:
            subnet = defaults.bridged_subnet
        if subnet is not None and subnet == defaults.bridged_subnet:
            host_ip, router = defaults.bridged_host_ip, defaults.bridged_router
    return _addressed(Network(name=name, mode=mode.name, subnet=subnet, dhcp=dhcp,
                              bridge=bridge, host_ip=host_ip, router=router,
                              **{k: v for k, v in switch.items() if k != "dhcp"}))


def _addressed(net: Network) -> Network:
    """Networks whose host is their router (natnetwork, hostonly) take the subnet's first address.
    hostonly gets a router too: whether traffic may leave is the host's firewall's decision, and
    the verifier must see that decision rather than a guest with no route."""
    if modes.MODES[net.mode].subnet != "auto" or net.subnet is None:
        return net
    host_ip = net.subnet.network_address + 1 if modes.MODES[net.mode].host_on_network else None
    return replace(net, host_ip=host_ip, router=host_ip)


def _subnet(value: Any, where: str) -> IPv4Network:
    try:
        subnet = ip_network(str(value), strict=True)
    except ValueError as exc:
        raise LabFileError(where, f"{quote(value)} is not a valid IPv4 CIDR such as "
                           f"192.168.150.0/24 ({quote(str(exc))})") from None
    if subnet.version != 4:
        raise LabFileError(where, "only IPv4 subnets are supported")
    if not 16 <= subnet.prefixlen <= 28:
        raise LabFileError(where, f"prefix /{subnet.prefixlen} is out of range: use /16 to /28")
    return subnet


def _check_mgmt_overlap(lab: str, networks: list[tuple[Network, dict]]) -> None:
    """libvirt gives every lab a management network (lab/naming.py, mgmt_subnet_for): a lab
    subnet on top of it is refused here, not by libvirt after the lab's state was saved."""
    mgmt = mgmt_subnet_for(lab)
    for net, _ in networks:
        if net.subnet is not None and net.subnet.overlaps(mgmt):
            raise LabFileError(f"networks.{net.name}.subnet", f"{net.subnet} overlaps {mgmt}, "
                               f"the management network of lab {quote(lab)} (it follows from "
                               "the lab name, in 100.64.0.0/16); pick another subnet")


def _assign_subnets(result: list[tuple[Network, dict]]) -> None:
    """Give auto-subnet networks without one the next free /24, and refuse overlaps."""
    taken = [(n.subnet, n.name) for n, _ in result
             if n.subnet is not None and modes.MODES[n.mode].subnet != "fixed"]
    for j, (b, b_name) in enumerate(taken):
        for a, a_name in taken[:j]:
            if a.overlaps(b):
                raise LabFileError(f"networks.{b_name}.subnet",
                                   f"{b} overlaps {a} of network {quote(a_name)}")
    for i, (net, raw) in enumerate(result):
        mode = modes.MODES[net.mode]
        if net.subnet is None and mode.subnet == "auto":
            candidates = [*map(IPv4Network, mode.preferred_subnets),
                          *(IPv4Network(f"192.168.{k}.0/24") for k in range(FIRST_AUTO, 256))]
            subnet = next((c for c in candidates if not any(c.overlaps(t) for t, _ in taken)),
                          None)
            if subnet is None:
                raise LabFileError(f"networks.{net.name}.subnet", "no free /24 is left for this "
                                   "network; give it a subnet")
            taken.append((subnet, net.name))
            result[i] = (_addressed(replace(net, subnet=subnet)), raw)


# --- VMs and NICs ---------------------------------------------------------------------------

def _vms(raw: Any, networks: list[tuple[Network, dict]], lab_name: str,
         images: dict[str, CloudImage]) -> tuple[Vm, ...]:
    items = _list(raw, "vms", non_empty=True)
    by_name = {n.name: n for n, _ in networks}
    names: set[str] = set()
    macs: dict[str, str] = {}
    ips: dict[tuple[str, IPv4Address], str] = {}
    next_host = {n.name: FIRST_HOST for n, _ in networks}
    reserved = _requested_ips(items)
    vms = []
    for i, item in enumerate(items):
        vm = _mapping(item, f"vms[{i}]", VM_KEYS, required={"name", "nics"})
        name = _name(vm["name"], f"vms[{i}].name")
        where = f"vms.{name}"
        if name in names:
            raise LabFileError(f"{where}.name", f"duplicate VM name {quote(name)}")
        names.add(name)
        image = _vm_image(vm.get("image", "tiny"), f"{where}.image", images)
        default_memory = CLOUD_MEMORY if isinstance(image, CloudImage) else 128
        memory = _int(vm.get("memory", default_memory), f"{where}.memory", 64, 65536)
        cpus = _int(vm.get("cpus", 1), f"{where}.cpus", 1, 64)
        nic_items = _list(vm["nics"], f"{where}.nics", non_empty=True)
        specs = links.bond_specs(vm.get("bonds"), where)
        built = []
        for k, nic_item in enumerate(nic_items):
            nwhere = f"{where}.nics[{k}]"
            nic = _nic(nic_item, nwhere, by_name, lab_name, name, k, next_host, reserved, specs)
            if nic.mac.lower() in macs:
                raise LabFileError(f"{nwhere}.mac", f"MAC {nic.mac} is already used by "
                                   f"{macs[nic.mac.lower()]}")
            macs[nic.mac.lower()] = nwhere
            net = by_name[nic.network]
            if nic.ip is not None and modes.MODES[net.mode].subnet != "fixed":
                key = (net.name, nic.ip.ip)
                if key in ips or nic.ip.ip == net.host_ip:
                    owner = ips.get(key, "the host")
                    raise LabFileError(f"{nwhere}.ip", f"{nic.ip.ip} is already used by {owner}")
                ips[key] = nwhere
            built.append(nic)
        bonds = _bonds(specs, built, by_name, next_host, reserved, ips)
        built_vm = Vm(name=name, image=image, memory=memory, cpus=cpus, nics=tuple(built),
                      bonds=tuple(bonds), router=links.router_flag(vm.get("router", False), where))
        links.check_tiny(built_vm, where)
        links.check_router(built_vm, where)
        vms.append(built_vm)
    return links.with_routes(tuple(vms), by_name)


def _bonds(specs: dict[str, dict], built: list[Nic], by_name: dict[str, Network],
           next_host: dict[str, int], reserved: set[tuple[str, str]],
           ips: dict[tuple[str, IPv4Address], str]) -> list[Bond]:
    """One VM's bonds (lab/links.py checks their members), each with its address."""
    bonds = []
    for bond_name, spec in specs.items():
        network, members = links.bond_members(bond_name, spec, built)
        if modes.MODES[by_name[network].mode].subnet == "fixed":
            raise LabFileError(spec["where"], "nat gives every NIC its own private network, so "
                               "its NICs cannot be bonded; valid modes for a bond's network: "
                               + ", ".join(m for m in modes.names()
                                           if modes.MODES[m].subnet != "fixed"))
        ip = _nic_ip(spec["ip"], f"{spec['where']}.ip", by_name[network], next_host, reserved)
        if ip is not None:
            if ip.ip == by_name[network].host_ip or (network, ip.ip) in ips:
                raise LabFileError(f"{spec['where']}.ip", f"{ip.ip} is already used by "
                                   f"{ips.get((network, ip.ip), 'the host')}")
            ips[(network, ip.ip)] = spec["where"]
        bonds.append(Bond(name=bond_name, mode=spec["mode"], network=network, members=members,
                          ip=ip))
    return bonds


def _requested_ips(vm_items: list) -> set[tuple[str, str]]:
    """The (network, ip) pairs the file asks for, so automatic addresses step around them."""
    asked = {(str(nic.get("network")), str(nic["ip"]))
             for vm in vm_items if isinstance(vm, dict) and isinstance(vm.get("nics"), list)
             for nic in vm["nics"] if isinstance(nic, dict) and nic.get("ip") is not None}
    for vm in vm_items:       # a bond's address, on its members' network
        if isinstance(vm, dict) and isinstance(vm.get("bonds"), list) \
                and isinstance(vm.get("nics"), list):
            for bond in vm["bonds"]:
                if isinstance(bond, dict) and bond.get("ip") is not None:
                    asked |= {(str(nic.get("network")), str(bond["ip"])) for nic in vm["nics"]
                              if isinstance(nic, dict) and nic.get("bond") == bond.get("name")}
    return asked


def _nic(item: Any, where: str, networks: dict[str, Network], lab: str, vm: str, index: int,
         next_host: dict[str, int], reserved: set[tuple[str, str]],
         bonds: dict[str, dict] | None = None) -> Nic:
    nic = _mapping(item, where, NIC_KEYS, required={"network"})
    net_name = nic["network"]
    if not isinstance(net_name, str) or net_name not in networks:
        raise LabFileError(f"{where}.network", f"no network named {quote(net_name)}; "
                           f"networks in this lab: {', '.join(networks)}")
    net = networks[net_name]
    model = _choice(nic.get("model", "virtio"), f"{where}.model", nics.names(), "NIC model",
                    "valid models")
    mac = nic["mac"] if nic.get("mac") is not None else nic_mac(lab, vm, index)
    if not isinstance(mac, str) or not MAC_RE.fullmatch(mac):
        raise LabFileError(f"{where}.mac", f"{quote(mac)} is not a MAC address like "
                           "52:54:00:aa:bb:01")
    if int(mac[:2], 16) & 1:
        raise LabFileError(f"{where}.mac", f"{mac} is a multicast address (first octet must be even)")
    bond = links.member_of(nic.get("bond"), where, bonds or {}, nic.get("ip"))
    ip = None if bond else _nic_ip(nic.get("ip"), f"{where}.ip", net, next_host, reserved)
    pf, vf, device = nic.get("pf"), nic.get("vf_address"), nic.get("device")
    kind = nics.NIC_MODELS[model].libvirt_interface       # what the model attaches as
    if kind == "hostdev":
        if (pf is None) == (vf is None):
            raise LabFileError(where, "an sriov NIC needs exactly one of pf (the PF netdev) "
                               "or vf_address (PCI address like 0000:04:10.1)")
        if pf is not None and (not isinstance(pf, str) or not NETDEV_RE.fullmatch(pf)):
            raise LabFileError(f"{where}.pf", "must be a host interface name")
        if vf is not None and (not isinstance(vf, str) or not PCI_RE.fullmatch(vf)):
            raise LabFileError(f"{where}.vf_address", f"{quote(vf)} is not a PCI address like "
                               "0000:04:10.1")
    elif pf is not None or vf is not None:
        raise LabFileError(where, f"pf and vf_address belong to sriov NICs, not {model}")
    if kind == "vdpa":
        if not isinstance(device, str) or not VDPA_RE.fullmatch(device):
            raise LabFileError(f"{where}.device", "a vdpa NIC needs device: /dev/vhost-vdpa-N")
    elif device is not None:
        raise LabFileError(f"{where}.device", f"device belongs to vdpa NICs, not {model}")
    refusal = modes.host_device_refusal(model, nics.NIC_MODELS[model].needs_hardware, net.mode)
    if refusal:
        raise LabFileError(f"{where}.model", refusal)
    impair = impairs.parse(nic.get("impair"), f"{where}.impair")
    if impair is not None and bond:
        raise LabFileError(f"{where}.impair", f"a member of bond {bond} carries no address of "
                           "its own to measure from; impair a NIC that is no bond's member")
    if impair is not None and net.host_ip is None:
        raise LabFileError(f"{where}.impair", f"network {net_name} ({net.mode}) has no host "
                           "address, and the guest measures the impairment against vnet's "
                           "listener on the host; impair a NIC on a network with a host "
                           "(nat, natnetwork, hostonly, or bridged on a known LAN)")
    return Nic(network=net_name, model=model, mac=mac.lower(), ip=ip, pf=pf, vf_address=vf,
               device=device, bond=bond, impair=impair)


def _nic_ip(value: Any, where: str, net: Network, next_host: dict[str, int],
            reserved: set[tuple[str, str]]) -> IPv4Interface | None:
    mode = modes.MODES[net.mode]
    if mode.subnet == "fixed":
        if value is not None:
            raise LabFileError(where, "a nat NIC always gets 10.0.2.15 from its private NAT; "
                               "remove ip or use mode natnetwork")
        return IPv4Interface("10.0.2.15/24")
    if value is None:
        if net.subnet is None:
            return None          # bridged onto a LAN vnet does not know: its DHCP decides
        host = net.subnet.network_address + next_host[net.name]
        while (net.name, str(host)) in reserved or host == net.host_ip or host == net.router:
            host += 1
        next_host[net.name] = int(host) - int(net.subnet.network_address) + 1
        if host not in net.subnet or host == net.subnet.broadcast_address:
            raise LabFileError(where, f"subnet {net.subnet} has no free address left")
        return IPv4Interface(f"{host}/{net.subnet.prefixlen}")
    try:
        addr = IPv4Address(str(value))
    except ValueError:
        raise LabFileError(where, f"{quote(value)} is not an IPv4 address") from None
    if net.subnet is None:
        raise LabFileError(where, f"network {quote(net.name)} has no subnet to place {addr} in; "
                           "give the network a subnet")
    if addr not in net.subnet or addr in (net.subnet.network_address, net.subnet.broadcast_address):
        raise LabFileError(where, f"{addr} is not a host address of subnet {net.subnet}")
    return IPv4Interface(f"{addr}/{net.subnet.prefixlen}")


# --- small typed readers --------------------------------------------------------------------
