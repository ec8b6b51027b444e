"""`checks:` in a lab file: cells the user declares (issue 12), added to the mode table's.

    checks:
      - {from: v1, to: v2, port: 7, proto: tcp, expect: fail}
      - {from: host, to: v1, port: 22, expect: pass, network: fabric}

`from`/`to` is a VM, `host` or `internet` (at least one end is a VM); `network` names the
network the probe uses and is needed only where the VM end(s) share several. A declared cell
may contradict the mode table (that is the point of an OpenFlow table): it is checked against
its own `expect`, with the same three outcomes as every other cell (verify/declared.py).
"""
from __future__ import annotations

from typing import Any

from ..errors import LabFileError, quote
from . import modes
from .fields import _choice, _int, _list, _mapping
from .model import DeclaredCheck, Network, Vm

CHECK_KEYS = {"from", "to", "port", "proto", "expect", "network"}
ENDS = ("host", "internet")


def checks(raw: Any, vms: tuple[Vm, ...], networks: tuple[Network, ...]) -> tuple[DeclaredCheck, ...]:
    if raw is None:
        return ()
    items = _list(raw, "checks")
    by_vm = {vm.name: vm for vm in vms}
    found: list[DeclaredCheck] = []
    seen: dict[tuple, str] = {}
    for i, item in enumerate(items):
        where = f"checks[{i}]"
        spec = _mapping(item, where, CHECK_KEYS, required={"from", "to", "port", "expect"})
        valid = f"{', '.join(by_vm)}, {', '.join(ENDS)}"
        source = _choice(spec["from"], f"{where}.from", [*by_vm, *ENDS], "endpoint",
                         "valid endpoints")
        target = _choice(spec["to"], f"{where}.to", [*by_vm, *ENDS], "endpoint",
                         "valid endpoints")
        if source == target or (source in ENDS and target in ENDS):
            raise LabFileError(where, f"from {source} to {target} is no cell of this lab: one "
                               f"end must be a VM and the ends must differ; endpoints: {valid}")
        port = _int(spec["port"], f"{where}.port", 1, 65535)
        proto = _choice(spec.get("proto", "tcp"), f"{where}.proto", ("tcp", "udp"),
                        "protocol", "valid protocols")
        expect = _choice(spec["expect"], f"{where}.expect", ("pass", "fail"), "expectation",
                         "valid expectations")
        network = _network(spec.get("network"), where, [by_vm.get(source), by_vm.get(target)],
                           {n.name: n for n in networks})
        key = (source, target, port, proto, network)
        if key in seen:
            raise LabFileError(where, f"the same cell as {seen[key]}")
        seen[key] = where
        found.append(DeclaredCheck(source=source, target=target, port=port, proto=proto,
                                   expect=expect, network=network))
    return tuple(found)


def _network(value: Any, where: str, ends: list[Vm | None], networks: dict[str, Network]) -> str:
    """The network a check uses: the one its VM end(s) share, or the one `network` names."""
    vms = [vm for vm in ends if vm is not None]
    shared = [n for n in networks if all(any(nic.network == n for nic in vm.nics) for vm in vms)]
    names = " and ".join(vm.name for vm in vms)
    if value is None:
        if len(shared) == 1:
            return shared[0]
        if not shared:
            raise LabFileError(where, f"{names} share no network; a check runs on one network")
        raise LabFileError(f"{where}.network", f"{names} share several networks; name one: "
                           f"{', '.join(shared)}")
    if not isinstance(value, str) or value not in shared:
        raise LabFileError(f"{where}.network", f"{quote(value)} is not a network of {names}; "
                           f"valid networks: {', '.join(shared) or 'none'}")
    net = networks[value]
    target = ends[1]
    if target is not None and modes.MODES[net.mode].subnet == "lan" and net.subnet is None:
        raise LabFileError(f"{where}.network", f"{target.name}'s address on {value} is not "
                           "known (the LAN's DHCP decides it); give the NIC an ip")
    return value
