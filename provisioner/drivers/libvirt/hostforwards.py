"""Port forwards of a lab with `hosts:` on libvirt, each served where the issue says (README
"Several hosts"; lab/forwardhosts.py decides which host): a natnetwork's forwards by a port
proxy on its home host, run in that host's network namespace; a nat VM's forwards by its own
QEMU (hostfwd, through that host's libvirtd). Per host: the ports are checked there before
anything is created, the proxy is started and recorded there (portproxy-HOST.pid in the lab's
directory), and stopped by that PID (host/forwarding.py stop_proxy stops every host's).

A serving host that vnet does not reach in a network namespace of its own (a remote host, not a
sandbox's) is refused before anything is created: the proxy and the port check run in the
serving host's namespace, which vnet has only for a sandbox's hosts and for this machine (the
first host outside a sandbox: vnet's own namespace) (`remote_refusal`)."""
from __future__ import annotations

from pathlib import Path

from ...errors import Unsupported
from ...host import forwarding
from ...host.state import Target
from ...lab import modes
from ...lab.forwardhosts import forwards_by_host, reach_address, served_on
from ...lab.model import Lab
from . import remotehosts
from .connection import LibvirtDriver

KINDS = ("hostfwd", "proxies")       # the renderer's plan.extra keys (render.py)
HOW = {"hostfwd": "QEMU hostfwd", "proxies": "vnet port proxy"}


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

