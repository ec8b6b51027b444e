"""The host side of a lab with `hosts:` is probed where it lives (issue 13): a port forward's
cells where the forward is served (lab/forwardhosts.py): host->VM from the serving host's own
network namespace, Internet->VM to the serving host's address; a network's host->VM cell from
its home host (the host address is there); and a VM->host probe is answered on the host it
reaches (its network's home host, or for a per-VM NAT the VM's own host), so every host of the
lab runs vnet's host listener, each answering with its own name (listener_name): a probe
answered by another host than the one it must reach is an error, never a pass. What is on
the first host (and all of a single-host lab) is probed as before: from the host namespace
vnet runs in, a forward at the address the sandbox's Internet reaches it on
(Endpoints.host_uplink_ip).

A probe from another host runs under the runner "host.HOST" (a forward's nonces carry that
origin, so the guest's hold waits for them), in the namespace the lab's record names for that
host."""
from __future__ import annotations

from ..host import state
from ..host.state import Target
from ..lab import modes
from ..lab.forwardhosts import ANY, reach_address, served_on
from ..lab.hosts import stretchable
from ..lab.model import Lab, Network, PortForward, Vm

HOST_AT = "host."
HOST = "host"          # checks.HOST: the first host's listener, and a single-host lab's


def listener_name(lab: Lab, host: str | None) -> str:
    """What vnet's host listener on `host` answers with: "host" on the first host (and in a
    single-host lab), "host.HV" on another. A probe that reaches the wrong host is then an
    answer from another endpoint (error), never a pass."""
    if not lab.hosts or host in (None, lab.hosts[0].name):
        return HOST
    return f"{HOST_AT}{host}"


def host_answer(lab: Lab, vm: Vm, net: Network) -> str:
    """The name a VM->host probe from `vm` on `net` must be answered with."""
    return listener_name(lab, reached_host(lab, vm, net))


def reached_host(lab: Lab, vm: Vm, net: Network) -> str | None:
    """The host a VM->host probe from `vm` on `net` must reach: for a per-VM NAT the VM's own
    (10.0.2.2 is its QEMU's host), on a network of its own the home host (which holds the host
    address); else the first host (a bridged network's host address is the first host's
    LAN address, and without a host address the probe targets its management address). None
    in a single-host lab."""
    if not lab.hosts:
        return None
    if modes.MODES[net.mode].per_vm_nat:
        return vm.host
    if net.host_ip is not None and stretchable(net.mode):
        return net.home
    return lab.hosts[0].name


def probe_point(lab: Lab, pf: PortForward, uplink: str, host_runner: str) -> tuple[str, str]:
    """(address the probes go to, runner of the host-side probe) of one forward; `uplink` and
    `host_runner`: the first host's (Endpoints.host_uplink_ip, checks.HOST)."""
    host = served_on(lab, pf)
    if host is None or host == lab.hosts[0].name:
        # where it listens (by default the uplink: 127.0.0.1 outside a sandbox); on every
        # address (0.0.0.0), the uplink, where the sandbox's Internet reaches it too
        return uplink if pf.host_ip == ANY else str(pf.host_ip), host_runner
    return str(reach_address(lab, pf)), f"{HOST_AT}{host}"


def network_runner(lab: Lab, network: str, host_runner: str) -> str:
    """The runner of a network's host->VM cells: its home host's, when that is not the first
    host and the network is a libvirt network of its own (a per-VM NAT or a host's LAN has no
    home address to probe from)."""
    net = lab.network(network)
    if not lab.hosts or net.home in (None, lab.hosts[0].name) or not stretchable(net.mode):
        return host_runner
    return f"{HOST_AT}{net.home}"


def other_host_namespaces(lab: Lab, target: Target) -> dict[str, str]:
    """host -> network namespace of every host of the lab but the first (from its record): vnet
    runs a host listener in each, for the VM->host probes that reach that host."""
    if len(lab.hosts) < 2:
        return {}
    hosts = (state.read(target, lab.name) or {}).get("hosts", {})
    return {h.name: hosts[h.name]["netns"] for h in lab.hosts[1:]
            if hosts.get(h.name, {}).get("netns")}


def side_namespaces(lab: Lab, target: Target, runners: set[str]) -> dict[str, str]:
    """runner "host.HOST" -> the network namespace of HOST (from the lab's record), for the
    runners the cells use. A host without one (not a sandbox's) gets no prober here: probing
    its addresses from this machine's own namespace would send lab traffic out of the lab, so
    its cells stay "error" (not run)."""
    wanted = sorted(r for r in runners if r.startswith(HOST_AT))
    if not wanted:
        return {}
    hosts = (state.read(target, lab.name) or {}).get("hosts", {})
    found = {r: hosts.get(r[len(HOST_AT):], {}).get("netns") for r in wanted}
    return {r: netns for r, netns in found.items() if netns}
