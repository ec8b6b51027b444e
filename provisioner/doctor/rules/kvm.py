"""KVM present but not booting guests. /dev/kvm can exist and KVM_CREATE_VM succeed while every
guest hangs at boot (nested or restricted virtualization). vnet decides by booting the tiny
image once under KVM (provisioner.host.accel); this rule reports that verdict, cached or probed."""
from __future__ import annotations

from ..base import Finding, Rule, ok, warn
from ..host import Host

ID = "kvm"


def check(host: Host) -> list[Finding]:
    if not host.exists("/dev/kvm"):
        return [ok(ID, "no /dev/kvm: guests run under TCG (software emulation, slower); "
                       "the tiny image still boots in a few seconds")]
    verdict = host.accel()
    if verdict is None:
        return [ok(ID, "/dev/kvm exists; whether KVM really boots guests is probed on the first "
                       "lab (no guest image to probe with yet: `vnet image build`, then "
                       "`vnet doctor` again)")]
    if verdict.get("source") == "env":
        return [ok(ID, f"accelerator {verdict['accel']}, {verdict['detail']}")]
    if verdict["accel"] == "kvm":
        return [ok(ID, f"KVM boots guests ({verdict['detail']}; {verdict['source']})")]
    cache = verdict.get("path", "the accelerator cache")
    if "no usable /dev/kvm" in verdict.get("detail", ""):
        return [warn(ID, "/dev/kvm exists but this user cannot open it: guests run under TCG "
                         "(slower, but it works)",
                     "keep TCG (vnet uses it already), or add the user to group kvm "
                     f"(sudo usermod -aG kvm $USER; log in again) and delete {cache} to probe "
                     "again")]
    return [warn(ID, "KVM is present but does not boot guests here: /dev/kvm opens, yet a KVM "
                     "guest never reached userspace in vnet's boot probe "
                     f"({verdict['source']}). Use TCG: vnet does so already (libvirt domain "
                     "type 'qemu'; slower, but it works)",
                 "nothing to do for labs: TCG is chosen automatically (VNET_ACCEL=qemu forces "
                 "it). To get KVM back, enable nested virtualization / VT-x for this machine, "
                 f"then delete {cache} and run `vnet doctor` again")]


RULE = Rule(id=ID, title="KVM really boots guests", check=check, order=10)
