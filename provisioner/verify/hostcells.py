"""The host as a dimension of the matrix (a lab with `hosts:`, README "Several hosts"): each
cell says on which hypervisor host its two ends are, e.g. `hv1->hv2` for a VM<->VM cell across
the underlay. The host side of a cell is the network's home host (its address, its NAT to the
Internet); the Internet is `-`. A port_forward cell's host side is the host that serves the
forward (lab/forwardhosts.py), which the cell also names as "served_on". Cells of a
single-host lab get nothing (their output is as before)."""
from __future__ import annotations

from ..lab.forwardhosts import served_on
from ..lab.model import Lab
from .servedon import reached_host

SIDES = ("host", "internet")


def _where(lab: Lab, label: str, network: str) -> str:
    name = label.split(" ")[0]
    if name == "host":
        net = next((n for n in lab.networks if n.name == network), None)
        return (net.home if net else None) or lab.hosts[0].name
    vm = _vm(lab, name)
    return vm.host if vm and vm.host else "-"


def annotate(cells: list[dict], lab: Lab) -> None:
    """Add "hosts": "FROM->TO" to every cell of a multi-host lab (in place)."""
    if not lab.hosts:
        return
    for cell in cells:
        if cell["kind"] == "port_forward" and (pf := _forward(lab, cell)) is not None:
            served = served_on(lab, pf)
            cell["served_on"] = served             # the host whose proxy or QEMU serves it
            cell["hosts"] = (f"{'-' if cell['source'] == 'internet' else served}->"
                             f"{lab.vm(pf.vm).host}")
            continue
        to = _where(lab, cell["target"], cell["network"])
        net = next((n for n in lab.networks if n.name == cell["network"]), None)
        if cell["target"].startswith("host ") and net and (vm := _vm(lab, cell["source"])):
            to = reached_host(lab, vm, net) or to          # the host the probe must reach
        cell["hosts"] = f"{_where(lab, cell['source'], cell['network'])}->{to}"


def _vm(lab: Lab, name: str):
    return next((v for v in lab.vms if v.name == name), None)


def _forward(lab: Lab, cell: dict):
    """The forward a port_forward cell probes: its target reads "VM:GUEST_PORT via IP:PORT"."""
    vm, _, rest = cell["target"].partition(":")
    port = rest.rpartition(":")[2]
    net = next((n for n in lab.networks if n.name == cell["network"]), None)
    return next((pf for pf in (net.port_forwards if net else ())
                 if pf.vm == vm and str(pf.host_port) == port), None)
