"""A network's port forwards in the lab file (`port_forwards:`), checked field by field: only on
modes that forward, each to a VM with a NIC on that network, privileged host ports only when
asked for, and no host port forwarded twice across the lab."""
from __future__ import annotations

import re
from dataclasses import replace
from ipaddress import IPv4Address
from typing import Any

from . import modes
from ..errors import LabFileError, quote
from .fields import _choice, _int, _list, _mapping, _name
from .model import Network, PortForward, Vm

PF_KEYS = {"name", "proto", "host_port", "vm", "guest_port", "host_ip", "allow_privileged"}
PRIVILEGED_PORTS = 1024             # host ports below this need allow_privileged: true


def with_forwards(net: Network, raw: dict, vms: tuple[Vm, ...],
                  default_host_ip: IPv4Address) -> Network:
    """`net` with the forwards of its lab-file entry `raw`; default_host_ip: where a forward
    that names no host_ip listens (Defaults.forward_host_ip)."""
    items = raw.get("port_forwards")
    if items is None:
        return net
    where = f"networks.{net.name}.port_forwards"
    items = _list(items, where)
    if items and not modes.MODES[net.mode].port_forwards:
        allowed = [m.name for m in modes.MODES.values() if m.port_forwards]
        raise LabFileError(where, f"{net.mode} networks have no port forwarding; "
                           f"it applies to {', '.join(allowed)}")
    forwards, names = [], set()
    attached = {vm.name for vm in vms for nic in vm.nics if nic.network == net.name}
    for i, item in enumerate(items):
        pf = _mapping(item, f"{where}[{i}]", PF_KEYS,
                      required={"proto", "host_port", "vm", "guest_port"})
        fname = _name(pf.get("name", f"pf{i}"), f"{where}[{i}].name")
        if fname in names:
            raise LabFileError(f"{where}[{i}].name", f"duplicate port forward name {quote(fname)}")
        names.add(fname)
        proto = _choice(pf["proto"], f"{where}[{i}].proto", ("tcp", "udp"), "protocol",
                        "valid protocols")
        if not isinstance(pf["vm"], str) or pf["vm"] not in attached:
            raise LabFileError(f"{where}[{i}].vm", f"no VM named {quote(pf['vm'])} has a NIC on "
                               f"{net.name}; VMs on it: {', '.join(sorted(attached)) or 'none'}")
        host_port = _int(pf["host_port"], f"{where}[{i}].host_port", 1, 65535)
        privileged = pf.get("allow_privileged", False)
        if not isinstance(privileged, bool):
            raise LabFileError(f"{where}[{i}].allow_privileged",
                               f"{quote(privileged)} must be true or false")
        if host_port < PRIVILEGED_PORTS and not privileged:
            raise LabFileError(f"{where}[{i}].allow_privileged", f"host_port {host_port} is "
                               f"below {PRIVILEGED_PORTS} (a system service's port): set "
                               "allow_privileged: true to forward it, or use a higher port")
        forwards.append(PortForward(
            name=fname, proto=proto, vm=pf["vm"], network=net.name, host_port=host_port,
            guest_port=_int(pf["guest_port"], f"{where}[{i}].guest_port", 1, 65535),
            host_ip=_host_ip(pf.get("host_ip"), f"{where}[{i}].host_ip", default_host_ip),
            allow_privileged=privileged))
    return replace(net, port_forwards=tuple(forwards))


def _host_ip(value: Any, where: str, default: IPv4Address) -> IPv4Address:
    """The address a forward listens on: the one the lab file names, else the default."""
    if value is None:
        return default
    if not isinstance(value, str) or not re.fullmatch(r"[0-9.]{7,15}", value):
        raise LabFileError(where, f"{quote(value)} is not an IPv4 address (e.g. 127.0.0.1, "
                           "or 0.0.0.0 for every address of the host)")
    try:
        return IPv4Address(value)
    except ValueError:
        raise LabFileError(where, f"{quote(value)} is not an IPv4 address (e.g. 127.0.0.1, "
                           "or 0.0.0.0 for every address of the host)") from None


def check_host_ports(networks: tuple[Network, ...]) -> None:
    used: dict[tuple[str, int], str] = {}
    for net in networks:
        for i, pf in enumerate(net.port_forwards):
            key = (pf.proto, pf.host_port)
            where = f"networks.{net.name}.port_forwards[{i}].host_port"
            if key in used:
                raise LabFileError(where, f"{pf.proto} port {pf.host_port} is already forwarded "
                                   f"by {used[key]}")
            used[key] = f"networks.{net.name}.port_forwards[{i}]"
