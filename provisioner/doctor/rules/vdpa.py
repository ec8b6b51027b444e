"""vDPA: every vdpa NIC names a /dev/vhost-vdpa-N that must exist (the device's vDPA driver and
vhost_vdpa create it); the `vdpa` tool (iproute2) is how such devices are made."""
from __future__ import annotations

from ..base import Finding, Rule, error, ok, warn
from ..host import Host

ID = "vdpa"
MAKE = ("load vhost_vdpa and the NIC's vDPA driver (e.g. mlx5_vdpa), then create one device "
        "per NIC: `vdpa dev add name vdpa0 mgmtdev pci/<PCI address>` (see `vdpa mgmtdev show`)")


def check(host: Host) -> list[Finding]:
    present = [f"/dev/{d}" for d in host.listdir("/dev") or [] if d.startswith("vhost-vdpa-")]
    tool = host.which("vdpa")
    findings = []
    here = ", ".join(present) or "none"
    for vm, nic in host.lab_nics("vdpa"):
        if nic.device in present:
            findings.append(ok(f"{ID}:{vm.name}", f"{nic.device} for VM {vm.name} exists"))
        else:
            findings.append(error(
                f"{ID}:{vm.name}", f"no hardware: vDPA device {nic.device} for VM {vm.name} does "
                f"not exist on this machine (vDPA devices here: {here})"
                + ("" if tool else "; the `vdpa` tool to create one is not installed either"),
                ("" if tool else "apt-get install iproute2 (it has `vdpa`); ") + MAKE))
    if tool is None and present:
        findings.append(warn(f"{ID}:tool", "the `vdpa` tool is not installed: existing devices "
                             "work, but new ones cannot be created or inspected",
                             "apt-get install iproute2"))
    return findings


RULE = Rule(id=ID, title="vDPA devices exist for the lab", check=check, order=71,
            applies=lambda host: bool(host.lab_nics("vdpa")), scope="labs with vdpa NICs",
            preflight=True, hardware=True)
