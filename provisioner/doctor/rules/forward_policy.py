"""FORWARD chain policy DROP (Docker sets it, so does ufw). libvirt adds ACCEPT rules for the
networks it routes (natnetwork, hostonly), but with br_netfilter on, frames between guests on
one bridge (internal networks, a bridged LAN) also traverse FORWARD, where that policy drops
them: VM<->VM and the LAN go dark while everything else looks fine."""
from __future__ import annotations

from ...lab import modes
from ..base import Finding, Rule, error, ok, warn
from ..host import Host

ID = "forward-policy"


def check(host: Host) -> list[Finding]:
    if host.namespace_missing():
        return [warn(ID, f"not checked: sandbox {host.sandbox} is not up (no network namespace "
                         f"{host.netns})", f"vnet sandbox up {host.sandbox}")]
    out = host.run(["iptables", "-S", "FORWARD"])
    if out is None:
        return [ok(ID, "iptables is not installed: no iptables FORWARD chain to drop traffic")]
    if out.rc != 0:
        return [warn(ID, f"cannot read the FORWARD chain {host.where()}: "
                         f"{out.stderr.strip() or 'iptables failed'}",
                     "run vnet doctor as root to read the firewall")]
    first = out.stdout.strip().splitlines()[0] if out.stdout.strip() else ""
    if first != "-P FORWARD DROP":
        return [ok(ID, f"FORWARD chain policy {host.where()}: "
                       f"{first.split()[-1] if first else 'ACCEPT'}")]
    docker = "-j DOCKER-USER" in out.stdout or "-j DOCKER" in out.stdout
    who = "Docker" if docker else ("ufw" if "ufw-" in out.stdout else "a firewall")
    bridge_nf = host.sysctl("net.bridge.bridge-nf-call-iptables") == "1"
    bridge_modes = tuple(m.name for m in modes.MODES.values() if m.unrouted_bridge)
    affected = bridge_modes if host.lab is None else \
        tuple(sorted({n.mode for n in host.lab.networks if modes.MODES[n.mode].unrouted_bridge}))
    summary = (f"the FORWARD chain policy {host.where()} is DROP (set by {who})")
    fix = ("allow bridged frames: "
           + ("`iptables -I DOCKER-USER -i <bridge> -o <bridge> -j ACCEPT` for each lab "
              "bridge, " if docker else "`iptables -I FORWARD -i <bridge> -o <bridge> -j ACCEPT`, ")
           + "or stop netfilter from seeing bridged frames "
           "(`sysctl -w net.bridge.bridge-nf-call-iptables=0`), or run labs in a vnet sandbox "
           "(its namespace has its own FORWARD chain)")
    if bridge_nf and affected:
        return [error(ID, f"{summary} and br_netfilter passes bridged frames through it: "
                          f"guests on {'/'.join(affected)} networks cannot reach each other "
                          "or the LAN", fix)]
    return [warn(ID, f"{summary}; libvirt's own rules let natnetwork and hostonly traffic "
                     "through, but anything routed without them is dropped"
                     + ("" if bridge_nf else " (br_netfilter is off: bridged frames pass)"),
                 fix)]


RULE = Rule(id=ID, title="the FORWARD chain does not drop lab traffic", check=check, order=40)
