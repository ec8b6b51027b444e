"""A lab's topology (the report's `topology` section, provisioner/verify/topology.py) drawn as SVG.

The layout is graphviz's `dot` (Debian package `graphviz`), not coordinates placed by hand:
this module writes the DOT text, `dot -Tsvg` lays it out, and the SVG is parsed and written
again through an allow-list before it goes into a page.

Every string from the report reaches DOT only inside an HTML-like label, escaped
(html.escape); node identifiers are vnet's own (vm0, net1, ...), never a name from the report.
A saved report may come from anywhere, so its strings are treated as hostile.

Drawn: the host (and the Internet when the report probed it), each network (mode, subnet, the
host's address on it), each VM with one row per NIC (model, MAC, address) and an edge from that
row to its network, each port forward as its own node between the host and its VM. Optional
sections, drawn only when the topology carries them: bonds (a node joined to its member NICs),
tunnels (a dotted edge between two endpoints), hosts (a box around each host's VMs, only when
there are several).
"""
from __future__ import annotations

import html
import xml.etree.ElementTree as ET

from ..host import runner
from ..errors import VnetError
from ..lab import modes

SVG_NS = "http://www.w3.org/2000/svg"
XLINK_NS = "http://www.w3.org/1999/xlink"
# What `dot -Tsvg` writes for the graphs below; anything else is refused, not passed on.
SVG_TAGS = {"svg", "g", "title", "polygon", "polyline", "ellipse", "path", "text", "defs",
            "linearGradient", "radialGradient", "stop"}
MODE_COLOURS = {"natnetwork": "#dbeafe", "nat": "#e0e7ff", "hostonly": "#dcfce7",
                "internal": "#f3e8ff", "bridged": "#fef3c7"}
FONT = "Helvetica"


def _reaches_internet(mode_name) -> bool:
    """Whether guests of this mode reach the Internet on some backend (the mode table)."""
    mode = modes.MODES.get(str(mode_name))
    return mode is not None and any(r.vm_to_internet == "yes" for r in mode.expected.values())


def _e(value) -> str:
    """A report value as the text of a DOT HTML-like label."""
    return html.escape("" if value is None else str(value), quote=True)


def _attr(value: str) -> str:
    """A DOT double-quoted string (only our own identifiers and fixed words go here)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def dot_source(topology: dict, internet: bool = False) -> str:
    """The DOT text of a topology (pure)."""
    nets = {n.get("name"): f"net{i}" for i, n in enumerate(topology.get("networks", []))}
    vms = {v.get("name"): f"vm{i}" for i, v in enumerate(topology.get("vms", []))}
    nic_port: dict[str, str] = {}         # MAC -> "vmN:nicK", for bonds
    lines = ["digraph lab {", "  graph [rankdir=LR, nodesep=0.35, ranksep=0.9, bgcolor=\"white\", "
             f"fontname={_attr(FONT)}];",
             f"  node [fontname={_attr(FONT)}, fontsize=11];",
             f"  edge [fontname={_attr(FONT)}, fontsize=9, color=\"#64748b\", arrowhead=none];",
             '  host [id="host", class="host", shape=box3d, style=filled, fillcolor="#f1f5f9", '
             'label=<<b>host</b>>];']
    if internet:
        lines.append('  internet [id="internet", class="internet", shape=doublecircle, '
                     'style=filled, fillcolor="#fff7ed", label=<Internet>];')
    for i, net in enumerate(topology.get("networks", [])):
        node = f"net{i}"
        rows = [f"<b>{_e(net.get('name'))}</b>", _e(net.get("mode"))]
        if net.get("subnet"):
            rows.append(_e(net["subnet"]))
        if net.get("bridge"):
            rows.append("bridge " + _e(net["bridge"]))
        fill = MODE_COLOURS.get(str(net.get("mode")), "#f8fafc")
        lines.append(f'  {node} [id="net-{i}", class="network", shape=box, style="rounded,filled", '
                     f'fillcolor="{fill}", label=<{"<br/>".join(rows)}>];')
        if net.get("host_ip"):
            lines.append(f'  host -> {node} [style=dashed, label=<{_e(net["host_ip"])}>];')
        if internet and _reaches_internet(net.get("mode")):
            lines.append(f"  {node} -> internet [style=dotted];")
    hosts = [h for h in topology.get("hosts", []) if isinstance(h, dict)]
    placed: dict[str, int] = {}
    if len(hosts) > 1:
        for h_index, h in enumerate(hosts):
            for vm_name in h.get("vms", []):
                placed.setdefault(vm_name, h_index)
    vm_lines: dict[int | None, list[str]] = {}
    for i, vm in enumerate(topology.get("vms", [])):
        node = f"vm{i}"
        head = f"<b>{_e(vm.get('name'))}</b>"
        if vm.get("memory"):
            head += f" <font point-size=\"9\">{_e(vm['memory'])} MiB</font>"
        rows = [f'<tr><td colspan="3" bgcolor="#e2e8f0">{head}</td></tr>']
        if vm.get("control_address"):
            rows.append(f'<tr><td colspan="3"><font point-size="8" color="#64748b">control '
                        f'{_e(vm["control_address"])}</font></td></tr>')
        edges = []
        for k, nic in enumerate(vm.get("nics", [])):
            rows.append(f'<tr><td port="nic{k}" align="left">{_e(nic.get("model"))}</td>'
                        f'<td align="left"><font point-size="9">{_e(nic.get("mac"))}</font></td>'
                        f'<td align="left">{_e(nic.get("address") or "dhcp")}</td></tr>')
            nic_port[str(nic.get("mac"))] = f"{node}:nic{k}"
            if nic.get("network") in nets:
                edges.append(f"  {node}:nic{k} -> {nets[nic['network']]};")
        vm_lines.setdefault(placed.get(vm.get("name")), []).append(
            f'  {node} [id="vm-{i}", class="vm", shape=plain, label=<<table border="1" '
            f'cellborder="0" cellspacing="0" cellpadding="3" bgcolor="white">{"".join(rows)}'
            f"</table>>];")
        lines += edges
    for host_at, body in vm_lines.items():
        if host_at is None:
            lines += body
        else:
            lines += [f"  subgraph cluster_host{host_at} {{",
                      f'    id="host-{host_at}"; class="hostbox"; style="rounded,dashed"; '
                      f"label=<{_e(hosts[host_at].get('name'))}>;", *body, "  }"]
    for i, fwd in enumerate(topology.get("forwards", [])):
        node = f"fwd{i}"
        label = (f"{_e(fwd.get('proto'))} {_e(fwd.get('host_ip'))}:{_e(fwd.get('host_port'))}"
                 f"<br/>&#8594; {_e(fwd.get('vm'))}:{_e(fwd.get('guest_port'))}"
                 + (f"<br/>served on {_e(fwd['host'])}" if fwd.get("host") else ""))
        lines.append(f'  {node} [id="fwd-{i}", class="forward", shape=box, style="rounded,filled", '
                     f'fillcolor="#fef9c3", fontsize=9, label=<{label}>];')
        lines.append(f"  host -> {node} [color=\"#ca8a04\"];")
        if fwd.get("vm") in vms:
            lines.append(f"  {node} -> {vms[fwd['vm']]} [color=\"#ca8a04\", arrowhead=normal];")
    for i, bond in enumerate(topology.get("bonds", [])):
        node = f"bond{i}"
        lines.append(f'  {node} [id="bond-{i}", class="bond", shape=hexagon, style=filled, '
                     f'fillcolor="#ecfeff", label=<{_e(bond.get("name"))}<br/>'
                     f'<font point-size="9">{_e(bond.get("mode"))}</font>>];')
        for mac in bond.get("members", []):
            if str(mac) in nic_port:
                lines.append(f"  {nic_port[str(mac)]} -> {node} [penwidth=2];")
    endpoints = {**nets, **vms}
    for i, tunnel in enumerate(topology.get("tunnels", [])):
        ends = [endpoints[e] for e in tunnel.get("endpoints", []) if e in endpoints]
        label = f"{_e(tunnel.get('kind'))} {_e(tunnel.get('name'))}"
        for a, b in zip(ends, ends[1:]):
            lines.append(f'  {a} -> {b} [id="tunnel-{i}", class="tunnel", style=dotted, '
                         f'penwidth=2, color="#7c3aed", label=<{label}>];')
    lines.append("}")
    return "\n".join(lines) + "\n"


def svg(topology: dict, internet: bool = False) -> str:
    """The topology as one <svg> element (no XML prolog, no comments), ready to inline."""
    require_dot()
    out = runner.run(["dot", "-Tsvg"], input=dot_source(topology, internet), timeout=60).stdout
    return sanitize(out)


def require_dot() -> None:
    """Fail with one line naming the package when graphviz's dot is not installed."""
    if runner.which("dot") is None:
        raise VnetError("graphviz's `dot` is missing: the HTML report lays out its topology "
                        "with it; install the Debian package graphviz (apt-get install graphviz)")


def sanitize(text: str) -> str:
    """dot's SVG, parsed and written again: comments and the DOCTYPE dropped, only drawing
    elements kept, no event handler attributes, no link out of the document."""
    ET.register_namespace("", SVG_NS)
    ET.register_namespace("xlink", XLINK_NS)
    root = ET.fromstring(text.encode())
    for el in root.iter():
        tag = el.tag.split("}", 1)[-1]
        if tag not in SVG_TAGS:
            raise VnetError(f"unexpected <{tag}> in dot's SVG output; refusing to embed it")
        for name in list(el.attrib):
            local = name.split("}", 1)[-1].lower()
            if local.startswith("on") or (local == "href" and not el.attrib[name].startswith("#")):
                del el.attrib[name]
    return ET.tostring(root, encoding="unicode")
