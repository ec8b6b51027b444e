"""A lab subnet that collides with an existing route or address (a bridge of another lab, of
Docker, of VirtualBox, the LAN) in the target's network namespace. libvirt refuses to start
such a network ("Network is already in use by interface ..."); vnet says so before creating
anything. Without a lab, the subnets the default labs would get are checked (a warning: a
lab file can pick others)."""
from __future__ import annotations

from ipaddress import IPv4Network, ip_interface, ip_network

from ...lab import loader as labfile, modes
from ...lab.defaults import default_lab
from ...lab.naming import bridge_name, mgmt_subnet_for
from ...lab.model import Lab
from ..base import Finding, Rule, error, ok, warn
from ..host import Host

ID = "subnet"


def lab_subnets(lab: Lab) -> list[tuple[str, str, IPv4Network]]:
    """(key, label, subnet) of every libvirt network the lab would create with an address
    range: its natnetwork/hostonly/internal networks and its management network."""
    found = [(net.name, f"network {net.name} ({net.mode})", net.subnet) for net in lab.networks
             if modes.MODES[net.mode].subnet == "auto" and net.subnet is not None]
    return found + [("mgmt", "the management network", mgmt_subnet_for(lab.name))]


def own_bridges(lab: Lab) -> set[str]:
    return {bridge_name(lab.name, n) for n in [*(net.name for net in lab.networks), "mgmt"]}


def occupied(host: Host) -> tuple[list[tuple[IPv4Network, str, str]], str | None]:
    """[(network, description, device)] in use in the target namespace, or a reason why that
    could not be read."""
    addrs = host.json_of(["ip", "-j", "addr"])
    routes = host.json_of(["ip", "-j", "route"])
    if addrs is None or routes is None:
        out = host.run(["ip", "-j", "route"])
        why = "iproute2 is not installed" if out is None else (out.stderr.strip() or "ip failed")
        return [], why
    bridges = {link.get("ifname") for link in host.json_of(
        ["ip", "-j", "link", "show", "type", "bridge"]) or []}
    used: list[tuple[IPv4Network, str, str]] = []
    for link in addrs:
        dev = link.get("ifname", "?")
        for a in link.get("addr_info", []):
            if a.get("family") == "inet" and dev != "lo":
                iface = ip_interface(f"{a['local']}/{a['prefixlen']}")
                kind = "bridge" if dev in bridges else "interface"
                used.append((iface.network, f"address {iface} on {kind} {dev}", dev))
    seen = {(n, d) for n, _, d in used}
    for r in routes:
        dst, dev = r.get("dst", "default"), r.get("dev", "")
        if dst == "default" or ":" in dst:
            continue
        net = ip_network(dst if "/" in dst else f"{dst}/32", strict=False)
        if (net, dev) not in seen:
            via = f" via {r['gateway']}" if r.get("gateway") else ""
            used.append((net, f"route {dst}{via} dev {dev}", dev))
    return used, None


def free_subnet(taken: list[IPv4Network]) -> str:
    for k in range(labfile.FIRST_AUTO, 256):
        candidate = IPv4Network(f"192.168.{k}.0/24")
        if not any(candidate.overlaps(t) for t in taken):
            return str(candidate)
    return "a free /24"


def check(host: Host) -> list[Finding]:
    labs = [host.lab] if host.lab is not None else \
        [labfile.resolve(default_lab(m)) for m in modes.names()]
    if host.namespace_missing():
        return [warn(ID, f"not checked: sandbox {host.sandbox} is not up (no network namespace "
                         f"{host.netns})", f"vnet sandbox up {host.sandbox}")]
    used, why = occupied(host)
    if why is not None:
        return [warn(ID, f"cannot read the routes and addresses {host.where()}: {why}",
                     "install iproute2; for a sandbox, `vnet sandbox up NAME` first")]
    findings = []
    for lab in labs:
        mine = own_bridges(lab)
        for key, label, subnet in lab_subnets(lab):
            hits = [desc for net, desc, dev in used if dev not in mine and net.overlaps(subnet)]
            if not hits:
                continue
            clash = (f"{label} {subnet} of lab {lab.name} collides with {'; '.join(hits)} "
                     f"{host.where()}: libvirt refuses to start a network whose range is "
                     "already in use")
            if key == "mgmt":
                fix = ("rename the lab (its management subnet in 100.64.0.0/16 follows from its "
                       "name), or destroy the lab that holds it (`vnet list`)")
            else:
                fix = (f"give networks.{key}.subnet a free range in the lab file, e.g. "
                       f"{free_subnet([n for n, _, _ in used])}")
            if host.lab is None:
                findings.append(warn(f"{ID}:{lab.name}-{key}", "the default " + clash, fix))
            else:
                findings.append(error(f"{ID}:{key}", clash, fix))
    if findings:
        return findings
    checked = ", ".join(sorted({str(s) for lab in labs for _, _, s in lab_subnets(lab)}))
    return [ok(ID, f"no route or address {host.where()} overlaps the lab subnets ({checked})"
                   if host.lab is not None else
                   f"the default labs' subnets are free {host.where()} ({checked})")]


RULE = Rule(id=ID, title="lab subnets are free", check=check, order=30, preflight=True)
