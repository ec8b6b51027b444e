"""qemu:///session used where networks need qemu:///system. A session libvirtd runs unprivileged:
it cannot create bridges, run dnsmasq or add firewall rules, so it defines no virtual networks
that guests can use, and every vnet lab has at least its management network."""
from __future__ import annotations

import urllib.parse

from ...lab import modes
from ..base import Finding, Rule, error, ok
from ..host import Host

ID = "libvirt-uri"


def check(host: Host) -> list[Finding]:
    parts = urllib.parse.urlsplit(host.uri)
    if parts.path.rstrip("/") != "/session":
        return [ok(ID, f"{host.uri} is a system connection: it can create virtual networks")]
    needing = ["the management network (every lab has one)"]
    if host.lab is not None:
        needing += [f"network {n.name} ({n.mode})" for n in host.lab.networks
                    if modes.MODES[n.mode].libvirt_interface == "network"]
    system = f"{parts.scheme}://{parts.netloc}/system" + (f"?{parts.query}" if parts.query else "")
    return [error(ID, f"{host.uri} is a session connection: an unprivileged libvirtd cannot "
                      "create bridged virtual networks (no bridge, dnsmasq or firewall "
                      f"rules), and the lab needs {', '.join(needing)}",
                  f"use --uri {system} (as root, or as a member of group libvirt), or an "
                  "isolated system libvirtd: `vnet sandbox up` and --sandbox default")]


RULE = Rule(id=ID, title="the URI can create networks", check=check, order=21, preflight=True)
