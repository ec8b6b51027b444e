"""Which OpenFlow rule did the work: flow attribution for declared cells on openvswitch networks.

Before the probes run, vnet reads every OpenFlow bridge's flows and packet counters
(`ovs-ofctl dump-flows`); after them, again. The cells run concurrently, so a counter's change
cannot be split between the cells whose packets hit the same flow (NORMAL carries most of them).
So, per declared cell, vnet asks Open vSwitch which rules the cell's first packet (the TCP SYN or
the UDP datagram, from the source VM's bridge port, with both MACs, addresses and the port)
traverses, with `ovs-appctl ofproto/trace` against the table as it is after the run (a learning
controller's flows included), and shows each such rule with how many packets its counter moved
during the run. A rule named with "+0" did not see this run's traffic at all: the trace
then says what the table would do, not what it did. Limits: only the request direction is
traced (not the answer), and a cell whose source is the host or the Internet has no port on
the bridge, so it is not traced.
"""
from __future__ import annotations

import re

from ..lab.model import Lab

RULE_RE = re.compile(r"^\s*\d+\.\s+(?:(?P<match>.*?),\s+)?priority (?P<priority>\d+)")


def _bridges(lab: Lab) -> list[tuple[str, str]]:
    from ..drivers.libvirt.ovsbridge import ovs_networks

    return [(net.name, br) for net, br in ovs_networks(lab)]


def snapshot(lab: Lab, target) -> dict[str, list[dict]]:
    """{network: flows with counters} of the lab's OpenFlow bridges ({} when it has none)."""
    if not _bridges(lab):
        return {}
    from ..drivers.libvirt.ovsbridge import dump_flows, for_target

    ovs = for_target(target)
    return {net: dump_flows(ovs, br) for net, br in _bridges(lab)}


def moved(before: list[dict], after: list[dict]) -> list[dict]:
    """The flows after the run, each with "moved": packets counted during the run (a flow that
    is new since, e.g. a learning controller's, counts from 0)."""
    was = {f["flow"]: f["packets"] for f in before}
    return [dict(f, moved=f["packets"] - was.get(f["flow"], 0)) for f in after]


def trace_rules(output: str) -> list[tuple[int, str]]:
    """(priority, match) of every rule an `ofproto/trace` output says the packet traversed."""
    return [(int(m["priority"]), m["match"] or "")
            for m in map(RULE_RE.match, output.splitlines()) if m]


def attribute(lab: Lab, target, cells: list, before: dict[str, list[dict]]) -> dict:
    """Fill each declared cell's `flows` on an OpenFlow network; -> {"flows": {network: flows
    with "moved"}, "controller": its packet-ins and installed flows (learning networks)}."""
    if not before:
        return {}
    from ..drivers.libvirt.ovsbridge import for_target, port_of
    from ..host import controller, state

    ovs = for_target(target)
    after = snapshot(lab, target)
    tables = {net: moved(before.get(net, []), flows) for net, flows in after.items()}
    bridges = dict(_bridges(lab))
    for cell in cells:     # (a learning lab's mode cells too: which learned flow carried them)
        if not (cell.declared or cell.kind == "vm_to_vm") or cell.network not in tables \
                or not cell.runner.startswith("guest:"):
            continue
        packet = _first_packet(lab, ovs, cell, port_of)
        if packet is None:
            continue
        out = ovs.appctl("ofproto/trace", bridges[cell.network], packet, check=False)
        rules = trace_rules(out.stdout)
        by_rule = {(f["priority"], f["match"]): f for f in tables[cell.network]}
        cell.flows = [{"flow": by_rule[r]["flow"], "moved": by_rule[r]["moved"]}
                      if r in by_rule else {"flow": f"priority={r[0]},{r[1]}", "moved": None}
                      for r in rules]
    found: dict = {"flows": tables}
    events = controller.events(state.lab_dir(target, lab.name)) \
        if controller.learning_bridges(lab) else None
    if events is not None:           # what the learning controller saw and installed
        found["controller"] = events
    return found


def _first_packet(lab: Lab, ovs, cell, port_of) -> str | None:
    """The ofproto/trace flow of a guest cell's first packet, or None when it has no port."""
    from .linkcells import probed_nics

    nics = {vm.name: nic for vm, nic in probed_nics(lab, cell.network)}
    source = nics.get(cell.runner.split(":", 1)[1])
    if source is None or source.ip is None:
        return None
    port = port_of(ovs, source.mac)
    if port is None:
        return None
    proto = cell.probe.get("proto", "tcp")
    fields = [f"in_port={port}", proto, f"dl_src={source.mac}"]
    target = next((n for n in nics.values() if n.ip and str(n.ip.ip) == cell.probe["target"]),
                  None)
    if target is not None:
        fields.append(f"dl_dst={target.mac}")
    fields += [f"nw_src={source.ip.ip}", f"nw_dst={cell.probe['target']}",
               f"{proto}_dst={cell.probe['port']}"]
    return ",".join(fields)


def text(result: dict) -> list[str]:
    """The report's lines: per traced cell, the rules its packet hits and their counters; what
    a learning controller saw."""
    lines = []
    learned = result.get("openflow", {}).get("controller")
    for c in result.get("checks", []):
        if c.get("flows"):
            rules = "; ".join(f"{f['flow']} ({'+' if f['moved'] is not None else ''}"
                              f"{f['moved'] if f['moved'] is not None else '?'} packets)"
                              for f in c["flows"])
            lines.append(f"  {c['source']} -> {c['target']}: {rules}")
    head = ["flow attribution (rules the cell's first packet hits, packets this run):", *lines] \
        if lines else []
    if learned is not None:
        head.append(f"learning controller: {learned['packet_ins']} packet-in(s), "
                    f"{len(learned['flows'])} flow(s) installed")
        head += [f"  priority={f['priority']} {f['why']}: match {f['match']} -> output "
                 f"{f['output']}" for f in learned["flows"]]
    return head
