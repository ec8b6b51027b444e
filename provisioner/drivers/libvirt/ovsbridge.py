"""The Open vSwitch bridges of a lab's `switch: openvswitch` networks, and their flow tables.

vnet makes each bridge with ovs-vsctl before libvirt defines the network that names it (libvirt
only plugs guests into an existing Open vSwitch bridge: a network with `<forward mode='bridge'/>`,
`<bridge name=.../>` and `<virtualport type='openvswitch'/>`, libvirt's formatnetwork "Using an
existing host bridge", https://libvirt.org/formatnetwork.html). Each bridge carries the lab and
owner in its external_ids, so `destroy` and `gc` remove exactly the bridges of their lab.

The flow table is installed right after the bridge exists and before any guest starts, so no
packet crosses the bridge under another table. `fail_mode=secure`: Open vSwitch never adds a
NORMAL flow of its own (in standalone mode it does when no controller answers), so the table is
the lab's: its `flows`, or one NORMAL flow when it gives none; with `controller: learning` the
table-miss goes to vnet's controller (host/controller.py).

A hostonly network keeps its promise as libvirt's own hostonly does: the host has the subnet's
first address (on the bridge's internal port) and forwards nothing into or out of the bridge
(two REJECT rules in the FORWARD chain, tagged with the lab, removed with the bridge), so the
guests reach the host and nothing beyond it.
"""
from __future__ import annotations

import ipaddress
import json
import shlex

from ...errors import HypervisorError, LabFileError
from ...host.ovs import Ovs, datapath, sandbox_ovs
from ...lab.model import Lab, Network
from ...lab.naming import bridge_name
from ...progress import Progress

NORMAL = "priority=0,actions=NORMAL"
PROTOCOLS = "OpenFlow10,OpenFlow13"      # ovs-ofctl speaks 1.0; os-ken's learning switch 1.3


def for_target(target) -> Ovs:
    """The Open vSwitch a lab on `target` (host/state.Target) uses: its sandbox's, or the
    machine's own."""
    if target.sandbox:
        from ...host import sandbox

        return sandbox_ovs(sandbox.describe(target.sandbox).state_dir)
    return Ovs()


def ovs_networks(lab: Lab) -> list[tuple[Network, str]]:
    return [(n, bridge_name(lab.name, n.name)) for n in lab.networks if n.switch == "openvswitch"]


def table(net: Network) -> list[str]:
    """The flows vnet installs on a network's bridge (a learning controller adds its own)."""
    if net.flows:
        return list(net.flows)
    return [] if net.controller == "learning" else [NORMAL]


def create(lab: Lab, target, owner: str, progress: Progress, ovs: Ovs | None = None) -> None:
    """Every OpenFlow bridge of the lab, tagged and with its flow table."""
    found = ovs_networks(lab)
    if not found:
        return
    ovs = ovs or for_target(target)
    if not ovs.answers():
        where = f"sandbox {target.sandbox}" if target.sandbox else "this host"
        raise HypervisorError(f"lab {lab.name} has openvswitch networks, but no Open vSwitch "
                              f"answers in {where}", hint="vnet doctor says why")
    dp, _ = datapath()
    tagged = _tagged(ovs)
    for net, br in found:                       # before any bridge exists: nothing half-made
        if net.host_ip is not None:
            refuse_route_clash(target, net, br)
    for net, br in found:
        tag = tagged.get(br)
        if br in _all(ovs) and (tag is None or tag != (lab.name, owner)):
            raise HypervisorError(f"Open vSwitch bridge {br} already exists and does not belong "
                                  f"to lab {lab.name} of this owner; vnet leaves it alone")
        ovs.vsctl("--may-exist", "add-br", br, "--", "set", "bridge", br,
                  f"datapath_type={dp}", "fail_mode=secure", f"protocols={PROTOCOLS}",
                  f"external_ids:vnet-lab={lab.name}", f"external_ids:vnet-owner={owner}",
                  f"external_ids:vnet-network={net.name}")
        install_flows(ovs, br, table(net))
        if net.host_ip is not None:
            _host_side(target, br, f"{net.host_ip}/{net.subnet.prefixlen}", lab.name, owner)
        progress(f"Open vSwitch bridge {br} for {net.name} ({dp} datapath, "
                 f"{len(table(net))} flow(s))")


def install_flows(ovs: Ovs, br: str, flows: list[str]) -> None:
    """Replace the bridge's table with `flows`, in order (also after ovs-vswitchd restarted:
    it keeps no flows across a restart)."""
    ovs.ofctl("del-flows", br)
    if flows:
        ovs.ofctl("add-flows", br, "-", input="\n".join(flows) + "\n")


def remove(lab: str, target, owner: str, progress: Progress, ovs: Ovs | None = None,
           needed: bool = False) -> list[str]:
    """Delete the bridges tagged with this lab and owner, and nothing else, and the lab's
    REJECT rules (found by their comment: also those whose bridge is already gone). `needed`:
    the lab has openvswitch networks, so an Open vSwitch that does not answer is an error (the
    caller keeps the lab's state), not "nothing to remove"."""
    ovs = ovs or for_target(target)
    if not ovs.answers():
        if needed:
            where = f"sandbox {target.sandbox}" if target.sandbox else "this host"
            raise HypervisorError(f"lab {lab} has Open vSwitch bridges, but no Open vSwitch "
                                  f"answers in {where}: vnet keeps the lab's state so they are "
                                  "not orphaned", hint=f"start Open vSwitch (`vnet doctor` says "
                                  f"why it does not answer), then run `vnet destroy {lab}` again")
        return []
    gone = [br for br, tag in _tagged(ovs).items() if tag == (lab, owner)]
    for br in gone:
        ovs.vsctl("--if-exists", "del-br", br)
    if gone:
        progress(f"removed Open vSwitch bridge(s) {', '.join(gone)}")
    rules = _remove_isolation(target, lab, owner, gone) if gone or needed else []
    return [f"bridge {br}" for br in gone] + rules


def recorded_ovs(record: dict | None) -> bool:
    """The lab a state record describes has openvswitch networks (its raw lab file data: no
    re-resolving, which would run ovs-ofctl again)."""
    nets = ((record or {}).get("lab_data") or {}).get("networks") or []
    return any(isinstance(n, dict) and n.get("switch") == "openvswitch" for n in nets)


def orphan_labs(target, owner: str, ovs: Ovs | None = None) -> set[str]:
    """Labs with an Open vSwitch bridge tagged by this owner (gc: those without state)."""
    ovs = ovs or for_target(target)
    if not ovs.answers():
        return set()
    return {lab for lab, who in _tagged(ovs).values() if who == owner}


def _remove_isolation(target, lab: str, owner: str, bridges: list[str]) -> list[str]:
    """This owner's FORWARD REJECT rules of the lab, by their comment (`iptables -S` prints
    each as the -A line that made it, so the same words after -D delete it). A rule of an
    older vnet, whose comment names no owner, goes only with its bridge (in `bridges`, just
    removed as this owner's: another state root's lab of the same name keeps its isolation),
    or once its bridge is gone (it isolates no one, and would reject a later bridge of that
    name)."""
    if _which("iptables") is None:
        return []
    listed = _ip(target, ["iptables", "-w", "-S", "FORWARD"], check=False).stdout
    removed = []
    for line in listed.splitlines():
        words = shlex.split(line)
        comment = _comment(words)
        legacy = comment == _tag(lab) and (any(br in words for br in bridges)
                                           or _bridges_gone(target, words))
        if words[:2] == ["-A", "FORWARD"] and (comment == _tag(lab, owner) or legacy):
            _ip(target, ["iptables", "-w", "-D", *words[1:]], check=False)
            removed.append(f"iptables rule {' '.join(words[2:])}")
    return removed


def _bridges_gone(target, words: list[str]) -> bool:
    """The rule names interfaces (-i/-o), and none of them exists where the lab lives."""
    devs = [words[i + 1] for i, w in enumerate(words[:-1]) if w in ("-i", "-o")]
    return bool(devs) and all(_ip(target, ["ip", "link", "show", "dev", d], check=False)
                              .returncode != 0 for d in devs)


def _comment(words: list[str]) -> str | None:
    return words[words.index("--comment") + 1] if "--comment" in words[:-1] else None


def _which(name: str):
    from ...host import runner

    return runner.which(name)


def refuse_route_clash(target, net: Network, br: str) -> None:
    """A hostonly subnet that overlaps a route the host already has (not this bridge's own):
    libvirt refuses such a network for its own bridges (networkCheckRouteCollision in
    src/network/bridge_driver_linux.c, which skips the default route too); so does vnet."""
    where = f"sandbox {target.sandbox}" if target.sandbox else "this host"
    for line in _ip(target, ["ip", "-4", "-o", "route", "show"]).stdout.splitlines():
        words = line.split()
        while words and words[0] in ROUTE_TYPES:
            words = words[1:]
        if not words or words[0] == "default":
            continue
        dev = words[words.index("dev") + 1] if "dev" in words[:-1] else "?"
        try:
            dest = ipaddress.ip_network(words[0], strict=False)
        except ValueError:
            continue
        if dev != br and dest.overlaps(net.subnet):
            raise LabFileError(f"networks.{net.name}.subnet", f"{net.subnet} overlaps the "
                               f"route {dest} (dev {dev}) that {where} already has; choose a "
                               "subnet no route covers")


ROUTE_TYPES = ("unicast", "unreachable", "blackhole", "prohibit", "throw")


def _host_side(target, br: str, address: str, lab: str, owner: str) -> None:
    """The host's address on a hostonly bridge, and no forwarding through it."""
    if address not in _ip(target, ["ip", "-o", "addr", "show", "dev", br]).stdout:
        _ip(target, ["ip", "addr", "add", address, "dev", br])
    _ip(target, ["ip", "link", "set", br, "up"])
    for rule in _isolation(br, lab, owner):
        if _ip(target, ["iptables", "-w", "-C", *rule], check=False).returncode != 0:
            _ip(target, ["iptables", "-w", "-I", *rule[:1], "1", *rule[1:]])


def _tag(lab: str, owner: str | None = None) -> str:
    """The isolation rules' comment: owner and lab (without an owner: an older vnet's)."""
    return f"vnet {owner} {lab} hostonly" if owner else f"vnet {lab} hostonly"


def _isolation(br: str, lab: str, owner: str) -> list[list[str]]:
    tag = ["-m", "comment", "--comment", _tag(lab, owner)]
    return [["FORWARD", "-i", br, *tag, "-j", "REJECT"], ["FORWARD", "-o", br, *tag, "-j", "REJECT"]]


def _ip(target, argv: list[str], check: bool = True):
    """A host-side command where the lab's host lives (the sandbox's host namespace)."""
    from ...host import runner
    from ...host.netns import netns_argv

    return runner.run(netns_argv(target.netns, argv) if target.netns else argv, check=check)


def _all(ovs: Ovs) -> set[str]:
    return set(ovs.vsctl("list-br").stdout.split())


def _tagged(ovs: Ovs) -> dict[str, tuple[str, str]]:
    """bridge -> (lab, owner) for the bridges vnet tagged."""
    out = ovs.vsctl("--format=json", "--columns=name,external_ids", "list", "Bridge").stdout
    found = {}
    for name, ids in json.loads(out or '{"data": []}')["data"]:
        extra = dict(ids[1]) if isinstance(ids, list) and ids[0] == "map" else {}
        if "vnet-lab" in extra:
            found[name] = (extra["vnet-lab"], extra.get("vnet-owner", ""))
    return found


def dump_flows(ovs: Ovs, br: str) -> list[dict]:
    """The bridge's flows: [{"flow" (as ovs-ofctl prints it, without its counters),
    "priority", "match", "packets"}]."""
    out = ovs.ofctl("dump-flows", br, "--no-names").stdout
    flows = []
    for line in out.splitlines():
        if " actions=" not in line:
            continue
        head, actions = line.strip().split(" actions=", 1)
        fields = [f.strip() for f in head.split(",") if f.strip()]
        counters = dict(f.split("=", 1) for f in fields if f.split("=")[0] in COUNTERS)
        match = [f for f in fields if f.split("=")[0] not in COUNTERS]
        priority = next((int(f.split("=")[1]) for f in match if f.startswith("priority=")),
                        32768)
        match = [f for f in match if not f.startswith("priority=")]
        flows.append({"flow": ",".join([f"priority={priority}", *match]) + f",actions={actions}",
                      "priority": priority, "match": ",".join(match),
                      "packets": int(counters.get("n_packets", 0))})
    return flows


# what dump-flows prints beside a flow's match: counters and ages, not part of the flow
COUNTERS = ("cookie", "duration", "table", "n_packets", "n_bytes", "idle_age", "hard_age",
            "idle_timeout", "hard_timeout", "reset_counts")


def port_of(ovs: Ovs, mac: str) -> str | None:
    """The bridge port libvirt plugged the NIC with this MAC into (external_ids:attached-mac)."""
    out = ovs.vsctl("--format=json", "--columns=name,external_ids", "list", "Interface").stdout
    for name, ids in json.loads(out or '{"data": []}')["data"]:
        extra = dict(ids[1]) if isinstance(ids, list) and ids[0] == "map" else {}
        if extra.get("attached-mac", "").lower() == mac.lower():
            return name
    return None
