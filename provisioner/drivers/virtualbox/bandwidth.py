"""Impairment on VirtualBox (issue 18): bandwidth groups for a NIC's rate, VirtualBox manual
6.10 "Limiting Bandwidth for Network Input/Output" and 8.x "VBoxManage bandwidthctl"
(`add NAME --type network --limit N[k|m|g|K|M|G]`, `set NAME --limit ...`; `modifyvm
--nicbandwidthgroupN NAME`). VirtualBox limits only what the VM sends, and it has no delay or
loss emulation: those are refused with that reason (exit 2)."""
from __future__ import annotations

from ...errors import Unsupported
from ...lab.model import Nic, Vm


def set_argv(vbox_vm: str, k: int, rate_mbit: float | None) -> tuple[str, ...]:
    """A running VM's new limit for NIC k's group (0 turns the limit off: manual 6.10)."""
    return ("VBoxManage", "bandwidthctl", vbox_vm, "set", bandwidth_group(k), "--limit",
            bandwidth_limit(rate_mbit) if rate_mbit else "0")



def bandwidth_group(k: int) -> str:
    return f"vnet-nic{k + 1}"


def bandwidth_limit(rate_mbit: float) -> str:
    """--limit in kilobits per second ("k"), a whole number as VBoxManage parses it."""
    return f"{max(1, round(rate_mbit * 1000))}k"


def check_impairment(vm: Vm, k: int, nic: Nic) -> None:
    for field in ("delay_ms", "jitter_ms", "loss_pct"):
        if nic.impair is not None and getattr(nic.impair, field) is not None:
            raise Unsupported(f"vms.{vm.name}.nics[{k}].impair.{field}: VirtualBox has no delay "
                              "or loss emulation (its bandwidth groups limit only the rate); "
                              "on VirtualBox use rate_mbit only, or the libvirt backend")


def bandwidth_steps(name: str, label: str, vm: Vm, _vbm) -> list[tuple[str, tuple[str, ...]]]:
    """A network bandwidth group per rate-limited NIC, then the NIC joins it (both need the VM
    powered off; the limit itself can change while it runs: `bandwidthctl set`). _vbm makes
    the VBoxManage argv."""
    steps = []
    for k, nic in enumerate(vm.nics):
        if nic.impair is not None and nic.impair.rate_mbit:
            group = bandwidth_group(k)
            steps += [(f"{label}: bandwidth group {group}", _vbm(
                          "bandwidthctl", name, "add", group, "--type", "network", "--limit",
                          bandwidth_limit(nic.impair.rate_mbit))),
                      (f"{label}: nic{k + 1} bandwidth", _vbm(
                          "modifyvm", name, f"--nicbandwidthgroup{k + 1}", group))]
    return steps
