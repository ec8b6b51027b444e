"""Which host serves a port forward in a lab with `hosts:` (issue 13, README "Several hosts"),
and where it listens there. Pure: no I/O.

- A proxied forward (natnetwork: vnet's port proxy) is served on its network's home host, the
  host that holds the network's NAT, DHCP and host address.
- A QEMU hostfwd (nat: every VM has its own user-mode NAT) is served by that VM's QEMU, so on
  the VM's own host.

A forward that names no `host_ip` listens on the address the environment gives its serving
host (Defaults.forward_host_ips: in a sandbox, hv1's uplink and hvN's LAN address, the only
addresses the sandbox's Internet reaches); without one, on Defaults.forward_host_ip as before.
A lab without `hosts:` is unchanged: it has one host, and no forward is "served on" anything.
"""
from __future__ import annotations

from dataclasses import replace
from ipaddress import IPv4Address

from . import modes
from .model import Host, Lab, Network, PortForward, Vm

ANY = IPv4Address("0.0.0.0")


def served_on(lab: Lab, pf: PortForward) -> str | None:
    """The host that serves `pf` (None in a single-host lab)."""
    if not lab.hosts:
        return None
    net = lab.network(pf.network)
    if modes.MODES[net.mode].host_forwards == "hostfwd":
        return lab.vm(pf.vm).host
    return net.home


def forwards_by_host(lab: Lab) -> dict[str, list[PortForward]]:
    """host -> the forwards it serves, in lab order (empty for a single-host lab)."""
    found: dict[str, list[PortForward]] = {}
    for net in lab.networks:
        for pf in net.port_forwards:
            host = served_on(lab, pf)
            if host is not None:
                found.setdefault(host, []).append(pf)
    return found


def reach_address(lab: Lab, pf: PortForward) -> IPv4Address:
    """The address a probe from outside the serving host uses: the one the forward listens on,
    or the host's underlay address when it listens on every address (0.0.0.0)."""
    host = served_on(lab, pf)
    if pf.host_ip == ANY and host is not None:
        return next(h.underlay_ip for h in lab.hosts if h.name == host)
    return pf.host_ip


def sandbox_listen_addresses(hosts: tuple[tuple[str, str, IPv4Address], ...],
                             first: IPv4Address) -> tuple[tuple[str, IPv4Address], ...]:
    """In a sandbox: the first host listens on its uplink (`first`), hv2..hvN on their LAN
    (underlay) address, which the sandbox's Internet reaches through its LAN port."""
    return tuple((name, first if i == 0 else ip) for i, (name, _, ip) in enumerate(hosts))


def listen_where_served(networks: tuple[Network, ...], raw_networks: list, vms: tuple[Vm, ...],
                        hosts: tuple[Host, ...],
                        addresses: tuple[tuple[str, IPv4Address], ...]) -> tuple[Network, ...]:
    """`networks` whose forwards that name no host_ip listen on their serving host's address
    (`addresses`: host name -> address); a lab without hosts, or a host without an address
    there, keeps the default the forwards already have."""
    by_host = dict(addresses)
    if not hosts or not by_host:
        return networks
    raw = {item["name"]: item for item in raw_networks}
    lab = Lab(name="-", networks=networks, vms=vms, hosts=hosts)
    result = []
    for net in networks:
        named = [isinstance(item, dict) and "host_ip" in item
                 for item in raw[net.name].get("port_forwards") or []]
        forwards = []
        for i, pf in enumerate(net.port_forwards):
            host = served_on(lab, pf)
            forwards.append(pf if named[i] or host is None or host not in by_host
                            else replace(pf, host_ip=by_host[host]))
        result.append(replace(net, port_forwards=tuple(forwards)))
    return tuple(result)
