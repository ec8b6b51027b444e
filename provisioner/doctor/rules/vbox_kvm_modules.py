"""KVM modules loaded while VirtualBox is wanted. While kvm_intel/kvm_amd hold VT-x/AMD-V (Linux
6.12 and later take it when the module loads), VirtualBox VMs fail to start with
VERR_VMX_IN_VMX_ROOT_MODE or VERR_SVM_IN_USE. Also: VirtualBox's own vboxdrv must be loaded."""
from __future__ import annotations

from ...lab.model import Backend
from ..base import Finding, Rule, error, ok, warn
from ..host import Host

ID = "vbox-kvm"
KVM = ("kvm_intel", "kvm_amd")


def check(host: Host) -> list[Finding]:
    loaded = host.modules()
    if loaded is None:
        if host.exists("/dev/kvm"):
            return [warn(ID, "/dev/kvm exists but /proc/modules does not: KVM is built into "
                             "this kernel and may hold VT-x/AMD-V, so VirtualBox VMs can fail "
                             "with VERR_VMX_IN_VMX_ROOT_MODE",
                         "boot with kvm.enable_virt_at_load=0 (Linux 6.12+), or use the "
                         "libvirt backend on this machine")]
        return [ok(ID, "no KVM on this machine: VirtualBox can use VT-x/AMD-V")]
    findings = []
    kvm = sorted(m for m in KVM if m in loaded)
    if kvm:
        findings.append(error(ID, f"KVM is loaded ({', '.join(kvm)}): it holds VT-x/AMD-V, so "
                                  "VirtualBox VMs fail to start (VERR_VMX_IN_VMX_ROOT_MODE / "
                                  "VERR_SVM_IN_USE)",
                              "stop KVM guests, then `sudo modprobe -r kvm_intel kvm_amd kvm`; "
                              "to keep it off, blacklist them in /etc/modprobe.d or boot with "
                              "kvm.enable_virt_at_load=0 (Linux 6.12+)"))
    else:
        findings.append(ok(ID, "no KVM module is loaded: VirtualBox can use VT-x/AMD-V"))
    if "vboxdrv" not in loaded:
        findings.append(error("vbox-driver", "VirtualBox's kernel driver vboxdrv is not loaded: "
                                             "VMs cannot start",
                              "sudo modprobe vboxdrv (or rebuild it: sudo /sbin/vboxconfig)"))
    return findings


RULE = Rule(id=ID, title="KVM does not hold VT-x while VirtualBox is wanted", check=check,
            order=61, backends=(Backend.VIRTUALBOX,))
