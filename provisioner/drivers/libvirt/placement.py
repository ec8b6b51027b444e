"""A multi-host lab on libvirt, one host at a time (README "Several hosts"): the renderer's
Context.host picks the VMs that run there and the networks used there. A network used on
several hosts is stretched (host/vxlan.py): on its home host it is rendered as its mode says
(NAT, DHCP, the host address); elsewhere as a plain bridge with no <ip> and no <forward>
(libvirt's isolated network, https://libvirt.org/formatnetwork.html). Both state the MTU the
VXLAN overhead leaves. The home host's DHCP reservations name every VM on the network, on
whichever host it runs, so guests elsewhere get their planned address across the tunnel.
vnet's management network is stretched the same way, homed on the first listed host, so the
checks reach every guest from there."""
from __future__ import annotations

from dataclasses import replace

import shlex

from ...host import vxlan
from ..base import Document, Plan
from ...lab.hosts import used_hosts
from ...lab.model import Lab, Vm


def runs_on(vm: Vm, host: str | None) -> bool:
    """A VM of a lab without hosts: runs wherever the lab does."""
    return host is None or vm.host is None or vm.host == host


def networks_on(lab: Lab, host: str | None, views: list) -> list:
    """The renderer's network views for `host` (all of them for a single-host render)."""
    if host is None or not lab.hosts:
        return views
    result = []
    for view in views:
        if view.mode == "management":   # stretched too: vnet reaches every guest from the
            mgmt = vxlan.UNDERLAY_MTU - vxlan.OVERHEAD        # first host (vxlan.MGMT)
            result.append(replace(view, mtu=mgmt) if host == lab.hosts[0].name else
                          replace(view, host_ip=None, prefix=None, mtu=mgmt))
            continue
        net = lab.network(view.name)
        hosts = used_hosts(net, lab.vms)
        if host not in hosts:
            continue
        if len(hosts) < 2:
            result.append(view)
            continue
        mtu = vxlan.UNDERLAY_MTU - vxlan.OVERHEAD
        result.append(replace(view, mtu=mtu) if net.home == host else
                      replace(view, forward=None, host_ip=None, prefix=None, dhcp=False,
                              dhcp_hosts=[], mtu=mtu))
    return result


def whole(lab: Lab, plan_on) -> Plan:
    """The plan of a multi-host lab for people (`vnet render`, `vnet up --dry-run`): each host's
    documents under `HOST/`, and in extra["vxlan"] the commands that stretch its networks."""
    parts = {host.name: plan_on(host.name) for host in lab.hosts}
    docs = tuple(Document(d.kind, f"{host}/{d.name}", d.text)
                 for host, part in parts.items() for d in part.documents)
    first = next(iter(parts.values()))
    extra = dict(first.extra)
    extra["mgmt"] = {vm: ip for part in parts.values() for vm, ip in part.extra["mgmt"].items()}
    extra["cloud"] = {vm: c for part in parts.values() for vm, c in part.extra["cloud"].items()}
    extra["vxlan"] = [f"{host}: {shlex.join(argv)}"
                      for host, segs in vxlan.segments(lab).items()
                      for seg in segs for argv in vxlan.commands(seg)]
    return Plan(first.backend, lab, docs, extra=extra)
