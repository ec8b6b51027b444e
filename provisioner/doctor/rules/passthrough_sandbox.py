"""No device passthrough into a sandbox: an sriov NIC hands the guest a VF of this machine's
PF, a vdpa NIC a /dev/vhost-vdpa-N of its hardware. Neither PCI devices nor /dev are per network
namespace, so the sandbox's libvirtd (root, no device cgroup) would detach the real device and
give the guest a path onto the machine's physical wire, which a sandbox never gives. Such labs
run on a lab host (`--uri qemu:///system`), where passing hardware through is the point."""
from __future__ import annotations

from ..base import Finding, Rule, error
from ..host import Host

ID = "passthrough-sandbox"
WHY = "a sandbox never gives a guest a path to this machine's network"
FIX = "run labs with sriov or vdpa NICs on a lab host (--uri qemu:///system), not in a sandbox"


def check(host: Host) -> list[Finding]:
    findings = []
    for vm, nic in host.lab_nics("sriov") + host.lab_nics("vdpa"):
        # keyed as the hardware rules key a VM's NIC, so its cells are skipped with this reason
        key = f"vdpa:{vm.name}" if nic.model == "vdpa" else f"sriov:{nic.pf or nic.vf_address}"
        device = nic.device if nic.model == "vdpa" else (
            f"a VF of {nic.pf}" if nic.pf else f"VF {nic.vf_address}")
        findings.append(error(key, f"no hardware in sandbox {host.sandbox}: VM {vm.name}'s "
                                   f"{nic.model} NIC would pass {device} of this machine into "
                                   f"the guest; {WHY}", FIX))
    return findings


RULE = Rule(id=ID, title="no device passthrough into a sandbox", check=check, order=69,
            applies=lambda host: bool(host.sandbox) and bool(host.lab_nics("sriov")
                                                             or host.lab_nics("vdpa")),
            scope="sandbox labs with sriov or vdpa NICs", preflight=True, hardware=True)
