"""Bonds and router VMs in a lab file (issue 17): their validation and the routes vnet adds.

A VM's `bonds:` name Linux bonds its NICs join (`bond:` on a NIC); the bond, not its members,
carries the address. A VM with `router: true` forwards between its networks; every other VM
on one of those networks gets a route to each subnet it reaches only through that router
(one hop: a subnet behind two routers is not routed). Both are realized by the tiny image's
init from the kernel command line (guest/cmdline.py), so they need the tiny image; a cloud-image
VM gets its routes in its seed's network-config (guest/seed.py).
"""
from __future__ import annotations

import re
from dataclasses import replace
from typing import Any

from ..errors import LabFileError, quote
from .fields import _mapping
from .model import Lab, Network, Nic, Route, Vm, check_name

BOND_MODES = ("active-backup", "balance-rr", "balance-xor", "802.3ad")
BOND_KEYS = {"name", "mode", "ip"}
IFNAME_MAX = 15                       # Linux caps interface names (IFNAMSIZ - 1)
# the guest's own NIC names, which a bond must not take
KERNEL_NAMES = re.compile(r"lo|(eth|ens|enp|eno)[0-9a-z]*")


def bond_specs(raw: Any, where: str) -> dict[str, dict]:
    """The `bonds:` list of one VM -> {name: {"mode", "ip", "where"}}, names and modes checked."""
    if raw is None:
        return {}
    if not isinstance(raw, list):
        raise LabFileError(f"{where}.bonds", "must be a list of {name, mode, ip}")
    specs: dict[str, dict] = {}
    for i, item in enumerate(raw):
        at = f"{where}.bonds[{i}]"
        item = _mapping(item, at, BOND_KEYS, required={"name"})
        name = check_name(item["name"], f"{at}.name")
        if len(name) > IFNAME_MAX or KERNEL_NAMES.fullmatch(name):
            raise LabFileError(f"{at}.name", f"{quote(name)} cannot name a guest interface: use "
                               f"at most {IFNAME_MAX} characters and no NIC name (eth0, lo); "
                               "e.g. bond0")
        if name in specs:
            raise LabFileError(f"{at}.name", f"duplicate bond name {quote(name)}")
        mode = item.get("mode", "active-backup")
        if not isinstance(mode, str) or mode not in BOND_MODES:
            raise LabFileError(f"{at}.mode", f"unknown bond mode {quote(mode)}; valid modes: "
                               f"{', '.join(BOND_MODES)}")
        specs[name] = {"mode": mode, "ip": item.get("ip"), "where": f"{where}.bonds.{name}"}
    return specs


def member_of(value: Any, where: str, specs: dict[str, dict], ip: Any) -> str | None:
    """A NIC's `bond:` -> the bond's name (None: not a member); a member has no own address."""
    if value is None:
        return None
    if not isinstance(value, str) or value not in specs:
        raise LabFileError(f"{where}.bond", f"no bond named {quote(value)}; bonds of this VM: "
                           f"{', '.join(specs) or 'none (add bonds: [{name: bond0, mode: ...}])'}")
    if ip is not None:
        raise LabFileError(f"{where}.ip", f"a member of bond {value} has no address of its own; "
                           f"give the bond its ip (bonds: [{{name: {value}, ip: ...}}])")
    return value


def bond_members(name: str, spec: dict, nics: list[Nic]) -> tuple[str, tuple[str, ...]]:
    """(network, member MACs) of one bond: at least two NICs, all on one network."""
    members = [n for n in nics if n.bond == name]
    if len(members) < 2:
        raise LabFileError(spec["where"], f"has {len(members)} member NIC(s); a bond needs at "
                           f"least 2 NICs with bond: {name}, on one network")
    networks = sorted({n.network for n in members})
    if len(networks) > 1:
        raise LabFileError(spec["where"], f"members are on different networks "
                           f"({', '.join(networks)}); all NICs of a bond must be on one network")
    return networks[0], tuple(n.mac for n in members)


def router_flag(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise LabFileError(f"{where}.router", f"{quote(value)} must be true or false")
    return value


def check_tiny(vm: Vm, where: str) -> None:
    """Bonds and forwarding are set up by the tiny image's init."""
    if (vm.bonds or vm.router) and vm.image != "tiny":
        field_ = "bonds" if vm.bonds else "router"
        raise LabFileError(f"{where}.{field_}", "bonds and routers are configured by the tiny "
                           "image's init; valid images for them: tiny")


def check_router(vm: Vm, where: str) -> None:
    networks = sorted({n.network for n in vm.nics})
    if vm.router and len(networks) < 2:
        raise LabFileError(f"{where}.router", f"a router forwards between networks, but "
                           f"{vm.name} is on {len(networks)} ({', '.join(networks)}); give it "
                           "NICs on at least 2 networks, or remove router: true")


def addresses(vm: Vm) -> dict[str, list]:
    """{network: [IPv4Interface]} of one VM: its plain NICs' and its bonds' addresses."""
    found: dict[str, list] = {}
    for nic in vm.nics:
        if nic.bond is None and nic.ip is not None:
            found.setdefault(nic.network, []).append(nic.ip)
    for bond in vm.bonds:
        if bond.ip is not None:
            found.setdefault(bond.network, []).append(bond.ip)
    return found


def with_routes(vms: tuple[Vm, ...], networks: dict[str, Network]) -> tuple[Vm, ...]:
    """Each VM with the routes it needs: a subnet of a router's network that the VM is not on,
    via the router's address on a network both share (the first router listed wins)."""
    routers = [v for v in vms if v.router]
    result = []
    for vm in vms:
        mine = addresses(vm)
        routes: dict[str, Route] = {}
        for router in routers:
            if router is vm:
                continue
            theirs = addresses(router)
            shared = [net for net in theirs if net in mine]
            if not shared:
                continue
            via = theirs[shared[0]][0].ip
            for net in theirs:
                subnet = networks[net].subnet
                if net in mine or subnet is None or str(subnet) in routes:
                    continue
                routes[str(subnet)] = Route(destination=subnet, via=via, router=router.name)
        result.append(replace(vm, routes=tuple(routes.values())) if routes else vm)
    return tuple(result)


def routed_peers(lab: Lab, vm: Vm) -> list[tuple[Route, Vm, str, Any]]:
    """(route, peer VM, peer's network, peer address) for every address `vm` reaches only
    through a router: what the `route` cells probe."""
    found = []
    for route in vm.routes:
        for peer in lab.vms:
            if peer is vm or peer.name == route.router:
                continue
            for net, ips in addresses(peer).items():
                for ip in ips:
                    if ip.ip in route.destination:
                        found.append((route, peer, net, ip))
    return found

