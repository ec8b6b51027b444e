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

from ...host import vxlan
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
