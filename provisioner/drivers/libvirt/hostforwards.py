"""Port forwards of a lab with `hosts:` on libvirt, each served where the issue says (README
"Several hosts"; lab/forwardhosts.py decides which host): a natnetwork's forwards by a port
proxy on its home host, run in that host's network namespace; a nat VM's forwards by its own
QEMU (hostfwd, through that host's libvirtd). Per host: the ports are checked there before
anything is created, the proxy is started and recorded there (portproxy-HOST.pid in the lab's
directory), and stopped by that PID (host/forwarding.py stop_proxy stops every host's).

A serving host that vnet does not reach in a network namespace of its own (a remote host, not a
sandbox's) is refused before anything is created: the proxy and the port check run in the
serving host's namespace, which vnet has only for a sandbox's hosts and for this machine (the
first host outside a sandbox: vnet's own namespace) (`remote_refusal`); so is a network homed
on a remote host, or a per-VM NAT there, whose host-side cells vnet could not probe
(`remote_side_refusal`)."""
from __future__ import annotations

from pathlib import Path

from ...errors import Unsupported
from ...host import forwarding, hostaccess
from ...host.state import Target
from ...lab import modes
from ...lab.hosts import stretchable
from ...lab.forwardhosts import forwards_by_host, reach_address, served_on
from ...lab.model import Lab
from . import remotehosts
from .connection import LibvirtDriver

KINDS = ("hostfwd", "proxies")       # the renderer's plan.extra keys (render.py)


def remote_refusal(lab: Lab, targets: dict[str, Target]) -> None:
    """One line, exit 2: a forward served on a host vnet has no namespace for (lift this when
    host access reaches a remote host's shell)."""
    for host, forwards in forwards_by_host(lab).items():
        if targets[host].netns is None and not remotehosts.is_here(targets[host]):
            pf = forwards[0]
            raise Unsupported(f"networks.{pf.network}.port_forwards.{pf.name}: served on "
                              f"{host}, a host outside a vnet sandbox; vnet runs a forward's "
                              "port check and proxy in the serving host's network namespace "
                              "and cannot yet do that on a remote host")


def remote_side_refusal(lab: Lab, targets: dict[str, Target]) -> None:
    """One line, exit 2: a host side that would live on a remote host (qemu+ssh://), where vnet
    runs neither its host listener nor its host-side prober: a network homed there with the
    host on it, or a per-VM NAT of a VM there (its host is the VM's own). Every such cell could
    only come out red for a reason that is not the network's, so the lab is refused instead."""
    def remote(host: str | None) -> bool:
        return host is not None and hostaccess.is_remote(targets[host])
    for net in lab.networks:
        mode = modes.MODES[net.mode]
        if mode.host_on_network and stretchable(net.mode) and remote(net.home):
            raise Unsupported(f"networks.{net.name}.home: {net.home} is a remote host; vnet "
                              "runs its host-side listener and probes only on a host whose "
                              "network namespace it enters, so the host's cells of this "
                              f"network could not be verified; home it on {lab.hosts[0].name}")
    for vm in lab.vms:
        if vm.bonds and remote(vm.host):    # its failover cell cuts a member on the VM's cue,
            raise Unsupported(                # read from a console that is on that host
                f"vms.{vm.name}.bonds: {vm.name} is on {vm.host}, a remote host; vnet cuts a "
                "bond member when the guest asks on its serial console, which it watches only "
                "on a host whose files it reads here; put the VM on a sandbox host")
        for i, nic in enumerate(vm.nics):
            if modes.MODES[lab.network(nic.network).mode].subnet == "fixed" and remote(vm.host):
                raise Unsupported(f"vms.{vm.name}.nics[{i}]: its NIC on {nic.network} is a "
                                  f"per-VM NAT whose host side is {vm.host}, a remote host, where vnet "
                                  "runs no host-side listener or probes; put the VM on a "
                                  "sandbox host or use a natnetwork homed on one")


def by_host(lab: Lab, rules: dict) -> dict[str, dict[str, list[dict]]]:
    """host -> {"hostfwd": [...], "proxies": [...]}: the renderer's rules (plan.extra, every
    forward of the lab) grouped by the host that serves each. Host ports are unique in a lab
    per protocol (lab/forwards.py), so (proto, host_port) names a forward."""
    where = {(pf.proto, pf.host_port): served_on(lab, pf)
             for net in lab.networks for pf in net.port_forwards}
    grouped: dict[str, dict[str, list[dict]]] = {}
    for kind in KINDS:
        for rule in rules.get(kind, []):
            host = where[(rule["proto"], rule["host_port"])]
            grouped.setdefault(host, {k: [] for k in KINDS})[kind].append(rule)
    return grouped


def check_ports(lab: Lab, targets: dict[str, Target], rules: dict) -> None:
    """Before anything is created: every forward can listen on its serving host."""
    for host, kinds in by_host(lab, rules).items():
        forwarding.check_host_ports(targets[host], lab.name, kinds["hostfwd"] + kinds["proxies"])


def start(lab: Lab, targets: dict[str, Target], lab_dir: Path, rules: dict) -> None:
    """Each host's hostfwd rules (its VMs run by now) and its port proxy."""
    for host, kinds in sorted(by_host(lab, rules).items()):
        forwarding.add_hostfwds(LibvirtDriver(targets[host]), kinds["hostfwd"])
        forwarding.start_proxy(targets[host], lab_dir, kinds["proxies"], host=host)


def described(lab: Lab, lab_dir: Path) -> list[dict]:
    """What `vnet status` shows of each forward: where it listens, on which host, served by
    what (the proxy with its PID while it runs)."""
    found = []
    for net in lab.networks:
        for pf in net.port_forwards:
            host = served_on(lab, pf)
            entry = {"name": pf.name, "network": net.name, "proto": pf.proto,
                     "listen": f"{pf.host_ip}:{pf.host_port}",
                     "reach": f"{reach_address(lab, pf)}:{pf.host_port}",
                     "vm": pf.vm, "guest_port": pf.guest_port, "host": host}
            if modes.MODES[net.mode].host_forwards == "proxy":
                pid = forwarding.proxy_pid(lab_dir, host)
                entry["served_by"] = f"vnet port proxy (pid {pid})" if pid else \
                    "vnet port proxy (not running)"
            else:
                entry["served_by"] = f"QEMU hostfwd of {pf.vm}"
            found.append(entry)
    return found

