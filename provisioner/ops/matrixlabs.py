"""The labs of `vnet matrix`, as data, and how a shared lab's result is split back per mode.

Each (mode, model) combination i of the matrix has its own host ports, its own subnet (modes
that pick one) and its own addresses on the sandbox's LAN (bridged), so labs that run at once in
one sandbox never meet: two labs answering at the same address would let one lab's probe be
answered by the other lab's VM of the same name, and a leak would pass as a kept promise.

A shared lab (the matrix's default, ops/matrix.run_shared) is one lab per NIC model whose two VMs
carry one NIC per mode: each mode's network is exactly the network of that mode's own lab (the
same port forwards, subnet and addresses), named after the mode. Every cell names its network,
and each network has one mode, so its cells split back into one result per (mode, model) with
the JSON report's keys, the mode table's expectations and the topology of that network alone."""
from __future__ import annotations

from ipaddress import IPv4Network

from ..lab import lanshare, modes
from ..lab.loader import FIRST_HOST
from ..lab.defaults import default_lab
from ..verify import checks

PREFIX = "mx"
PORT_BASE = 300        # host ports 2521.., 7301..: clear of a `vnet create` lab in the same sandbox
PORT_STRIDE = 10       # lab i of the matrix forwards from PORT_BASE + i * PORT_STRIDE: labs run at once
# Lab i's network (modes that pick a subnet) is 192.168.(SUBNET_BASE + i).0/24: labs at once
# in one sandbox must not share a subnet (the host would reach the other lab's vm1 there).
SUBNET_BASE = 160
VMS = 2


def lab_name(mode: str, model: str) -> str:
    return f"{PREFIX}-{mode}-{model}"


def shared_name(model: str) -> str:
    return f"{PREFIX}-shared-{model}"


def lab_subnet(combos: list[tuple[str, str]], i: int) -> str | None:
    """Combination i's own subnet, for modes that pick one: labs at once never share a subnet.
    A mode with preferred subnets (VirtualBox takes host-only networks only in 192.168.56.0/21)
    gets the k-th of those for its k-th combination (from the first: the last, 192.168.63.0/24,
    is VirtualBox's management network), the others 192.168.(SUBNET_BASE + i).0/24."""
    mode = combos[i][0]
    found = modes.MODES.get(mode)
    if found is None or found.subnet != "auto":
        return None
    preferred = found.preferred_subnets
    k = sum(m == mode for m, _ in combos[:i])
    return preferred[k % len(preferred)] if preferred else f"192.168.{SUBNET_BASE + i}.0/24"


def combo_lab(combos: list[tuple[str, str]], i: int, name: str, pf: str | None,
              lan: IPv4Network | None) -> dict:
    """Combination i's lab file as data: the default lab of its mode and NIC model (two VMs)
    with combination i's ports, subnet and, on a known LAN, its own LAN addresses."""
    mode, model = combos[i]
    data = default_lab(mode, model, VMS, name, port_base=PORT_BASE + i * PORT_STRIDE, pf=pf)
    subnet = lab_subnet(combos, i)
    if subnet:
        data["networks"][0]["subnet"] = subnet
    if lan is not None and mode in modes.MODES and modes.MODES[mode].subnet == "lan":
        # every bridged lab of the matrix shares that one LAN, where the loader alone would
        # give each .10 and .11: combination i takes block i + 1 (block 0 is where a `vnet
        # create` lab in the same sandbox puts its guests)
        for vm, ip in zip(data["vms"], lanshare.block_ips(lan, FIRST_HOST, i + 1, VMS)):
            vm["nics"][0]["ip"] = ip
    return data


def shared_lab(parts: list[tuple[str, dict]], name: str) -> dict:
    """One lab from (mode, combo_lab) parts of one NIC model: each part's network, renamed
    after its mode, and each VM with one NIC per part, in the parts' order."""
    networks, vms = [], {}
    for mode, data in parts:
        [net] = data["networks"]
        networks.append(dict(net, name=mode))
        for vm in data["vms"]:
            merged = vms.setdefault(vm["name"], dict(vm, nics=[]))
            merged["nics"] = merged["nics"] + [dict(nic, network=mode) for nic in vm["nics"]]
    return {"name": name, "networks": networks, "vms": list(vms.values())}


def units(combos: list[tuple[str, str]], shared: bool, realizable) -> list[list[int]]:
    """Which combinations run in which lab, as lists of indices into combos. One lab per
    combination; or, shared, one lab per NIC model for its realizable modes (realizable(i)),
    first. A model with one realizable mode, and a combination the backend cannot realize,
    keep a lab of their own (that lab says "unsupported" without being created)."""
    if not shared:
        return [[i] for i in range(len(combos))]
    by_model: dict[str, list[int]] = {}
    alone = []
    for i, (_, model) in enumerate(combos):
        if realizable(i):
            by_model.setdefault(model, []).append(i)
        else:
            alone.append([i])
    return [group for group in by_model.values()] + alone


def split(result: dict, mode: str, name: str, shared: str, beside: list[str]) -> dict:
    """The part of a shared lab's result that is `mode`'s: its network's cells, judged alone,
    under the combination's own lab name, with the topology of that network alone (`beside`:
    the lab's other modes, for the note). Same keys in the same order as a lab of its own."""
    cells = [c for c in result["checks"] if c["network"] == mode]
    part = dict(result, lab=name, checks=cells)
    if result.get("error"):
        part["ok"] = False
    elif result.get("booted", True) is False:        # never booted: no hardware
        part["ok"] = all(c["ok"] or c["observed"] == checks.SKIPPED for c in cells)
    else:
        part["ok"] = checks.booted_ok(cells)
    others = [m for m in beside if m != mode]
    part["notes"] = list(result.get("notes", [])) + [
        f"verified in the shared lab {shared}: network {mode!r} is this mode's"
        + (f", beside {', '.join(others)} on the same VMs (one NIC each)" if others else "")
        + "; the timings are that lab's; `vnet matrix --one-lab-per-mode` gives it a lab "
          "of its own"]
    if "topology" in result:
        part["topology"] = topology_of(result["topology"], mode)
    return part


def topology_of(topology: dict, network: str) -> dict:
    """A lab's topology with one network: its VMs keep only their NICs on it."""
    return dict(topology,
                networks=[n for n in topology["networks"] if n["name"] == network],
                vms=[dict(vm, nics=[n for n in vm["nics"] if n["network"] == network])
                     for vm in topology["vms"]],
                forwards=[f for f in topology.get("forwards", []) if f["network"] == network])
