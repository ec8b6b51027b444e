"""The host as a dimension of the matrix (a lab with `hosts:`, README "Several hosts"): each
cell says on which hypervisor host its two ends are, e.g. `hv1->hv2` for a VM<->VM cell across
the underlay. The host side of a cell is the network's home host (its address, its NAT to the
Internet); the Internet is `-`. Cells of a single-host lab get nothing (their output is as before)."""
from __future__ import annotations

from ..lab.model import Lab

SIDES = ("host", "internet")


def _where(lab: Lab, label: str, network: str) -> str:
    name = label.split(" ")[0]
    if name == "host":
        net = next((n for n in lab.networks if n.name == network), None)
        return (net.home if net else None) or lab.hosts[0].name
    vm = next((v for v in lab.vms if v.name == name), None)
    return vm.host if vm and vm.host else "-"


def annotate(cells: list[dict], lab: Lab) -> None:
    """Add "hosts": "FROM->TO" to every cell of a multi-host lab (in place)."""
    if not lab.hosts:
        return
    for cell in cells:
        cell["hosts"] = (f"{_where(lab, cell['source'], cell['network'])}->"
                         f"{_where(lab, cell['target'], cell['network'])}")
