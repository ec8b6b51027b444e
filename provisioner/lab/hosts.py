"""Placement across hypervisor hosts: the lab file's `hosts:`, each VM's `host:` and each
network's `home:` (README "Several hosts"). Without `hosts:` a lab is single-host exactly as
before: no VM or network may then name a host, and nothing here changes the lab."""
from __future__ import annotations

import re
from dataclasses import replace
from ipaddress import IPv4Address
from typing import Any

from ..errors import LabFileError, VnetError, quote
from . import modes
from .fields import _list, _mapping, _name
from .model import Host, Network, Vm

HOST_KEYS = {"name", "uri", "underlay_ip"}
# A libvirt QEMU URI (https://libvirt.org/uri.html): local or remote transport, no spaces.
URI_RE = re.compile(r"qemu(\+(ssh|tcp|tls|unix|libssh|libssh2|ext))?://[^\s]*/(system|session)"
                    r"(\?[^\s]*)?")


def stretchable(mode: str) -> bool:
    """A mode whose segment is a network of its own, shared by the VMs on it (a libvirt
    network): per-VM NAT and a host's own LAN are neither stretched nor homed."""
    return modes.MODES[mode].libvirt_interface == "network"


def _check_ssh_uri(uri: str, where: str) -> None:
    """A qemu+ssh:// host is checked when the file loads (render and --dry-run too), not first
    by `up`: no part of it may read as an ssh option (hostaccess.for_uri)."""
    from ..host import hostaccess

    if hostaccess.is_ssh_uri(uri):
        try:
            hostaccess.for_uri(uri, where)
        except VnetError as exc:
            raise LabFileError("", exc.message, exc.hint) from None


def place(data: dict, networks: tuple[Network, ...], vms: tuple[Vm, ...],
          known: dict[str, tuple[str, IPv4Address]]) -> tuple[tuple[Host, ...],
                                                         tuple[Network, ...], tuple[Vm, ...]]:
    """(hosts, networks with home, VMs with host). `known` fills a host's uri and underlay
    address by name (a sandbox's hv1..hvN); `data` is the raw lab mapping."""
    raw_vms = {item["name"]: item for item in data["vms"]}
    raw_nets = {item["name"]: item for item in data["networks"]}
    if "hosts" not in data:
        for vm in vms:
            if "host" in raw_vms[vm.name]:
                raise LabFileError(f"vms.{vm.name}.host", "the lab has no hosts: list; add "
                                   "hosts: or remove host (a lab without hosts: runs on one host)")
        for net in networks:
            if "home" in raw_nets[net.name]:
                raise LabFileError(f"networks.{net.name}.home", "the lab has no hosts: list; "
                                   "add hosts: or remove home")
        return (), networks, vms
    hosts = _hosts(data["hosts"], known)
    names = [h.name for h in hosts]
    placed = tuple(replace(vm, host=_vm_host(raw_vms[vm.name], vm.name, names)) for vm in vms)
    homed = tuple(_home(net, raw_nets[net.name], placed, names) for net in networks)
    return hosts, homed, placed


def _hosts(raw: Any, known: dict[str, tuple[str, IPv4Address]]) -> tuple[Host, ...]:
    items = _list(raw, "hosts", non_empty=True)
    hosts: list[Host] = []
    for i, item in enumerate(items):
        host = _mapping(item, f"hosts[{i}]", HOST_KEYS, required={"name"})
        name = _name(host["name"], f"hosts[{i}].name")
        where = f"hosts.{name}"
        if any(h.name == name for h in hosts):
            raise LabFileError(f"{where}.name", f"duplicate host name {quote(name)}")
        filled_uri, filled_ip = known.get(name, (None, None))
        uri = host.get("uri", filled_uri)
        if uri is None:
            raise LabFileError(f"{where}.uri", "is required (a libvirt URI such as "
                               "qemu+ssh://root@hv1.example/system)"
                               + (f"; this sandbox's hosts are {', '.join(known)}" if known else ""))
        if not isinstance(uri, str) or not URI_RE.fullmatch(uri):
            raise LabFileError(f"{where}.uri", f"{quote(uri)} is not a libvirt QEMU URI; "
                               "use qemu:///system or qemu+ssh://USER@HOST/system")
        _check_ssh_uri(uri, f"{where}.uri")
        underlay = host.get("underlay_ip", filled_ip)
        if underlay is None:
            raise LabFileError(f"{where}.underlay_ip", "is required (the host's address that "
                               "the other hosts reach for VXLAN, UDP 4789)")
        try:
            underlay = IPv4Address(str(underlay)) if not isinstance(underlay, bool) else None
        except ValueError:
            underlay = None
        if underlay is None:
            raise LabFileError(f"{where}.underlay_ip", f"{quote(host['underlay_ip'])} is not "
                               "an IPv4 address")
        for other in hosts:
            if other.uri == uri:
                raise LabFileError(f"{where}.uri", f"{uri} is already host {other.name}")
            if other.underlay_ip == underlay:
                raise LabFileError(f"{where}.underlay_ip", f"{underlay} is already host "
                                   f"{other.name}'s")
        hosts.append(Host(name=name, uri=uri, underlay_ip=underlay))
    return tuple(hosts)


def _vm_host(raw: dict, vm: str, names: list[str]) -> str:
    if "host" not in raw:
        raise LabFileError(f"vms.{vm}.host", f"is required when the lab lists hosts; valid "
                           f"hosts: {', '.join(names)}")
    return _listed(raw["host"], f"vms.{vm}.host", names)


def _listed(value: Any, where: str, names: list[str]) -> str:
    if not isinstance(value, str) or value not in names:
        raise LabFileError(where, f"unknown host {quote(value)}; valid hosts: {', '.join(names)}")
    return value


def _home(net: Network, raw: dict, vms: tuple[Vm, ...], names: list[str]) -> Network:
    """The host that holds the network's NAT, DHCP and host address: `home:`, else the first
    listed host with a VM on it (else the first host)."""
    where = f"networks.{net.name}.home"
    if "home" in raw:
        if not stretchable(net.mode):
            valid = [m for m in modes.names() if stretchable(m)]
            raise LabFileError(where, f"a {net.mode} network is not stretched between hosts, "
                               f"so it has no home; home applies to {', '.join(valid)}")
        return replace(net, home=_listed(raw["home"], where, names))
    used = {vm.host for vm in vms for nic in vm.nics if nic.network == net.name}
    return replace(net, home=next((n for n in names if n in used), names[0]))


def used_hosts(net: Network, vms: tuple[Vm, ...]) -> list[str]:
    """The hosts a network exists on: its home and every host with a VM on it, home first."""
    hosts = [net.home] if net.home else []
    for vm in vms:
        if vm.host and vm.host not in hosts and any(nic.network == net.name for nic in vm.nics):
            hosts.append(vm.host)
    return hosts
