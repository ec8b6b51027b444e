"""Missing programs: QEMU and dnsmasq for libvirt labs; VBoxManage and qemu-img (the tiny
image becomes a VDI) for VirtualBox labs; passt and qemu-img as libvirt extras."""
from __future__ import annotations

from ...lab.model import Backend
from ..base import Finding, Rule, error, ok, warn
from ..host import Host

ID = "tools"
# program -> (package, severity, what breaks without it)
NEEDED = {
    Backend.LIBVIRT: {
        "qemu-system-x86_64": ("qemu-system-x86", "error", "no guest can start"),
        "dnsmasq": ("dnsmasq-base", "error",
                    "libvirt cannot start networks with DHCP or an address "
                    "(natnetwork, hostonly, the management network)"),
        "qemu-img": ("qemu-utils", "warn",
                     "libvirt cannot create or convert disk images (vnet's tiny image does not "
                     "need it)"),
        "passt": ("passt", "warn",
                  "libvirt's passt backend for user-mode NICs is unavailable (vnet's nat mode "
                  "uses QEMU's built-in SLIRP, so labs still work)"),
    },
    Backend.VIRTUALBOX: {
        "VBoxManage": ("virtualbox", "error", "VirtualBox labs cannot be created"),
        "qemu-img": ("qemu-utils", "error", "the tiny image cannot be converted to VDI"),
    },
}


def check(host: Host) -> list[Finding]:
    wanted = NEEDED[host.backend]
    missing = [tool for tool in wanted if host.which(tool) is None]
    if not missing:
        return [ok(ID, "found " + ", ".join(wanted))]
    findings = []
    for tool in missing:
        package, severity, breaks = wanted[tool]
        make = error if severity == "error" else warn
        fix = f"apt-get install {package}" if package != "virtualbox" else (
            "install VirtualBox (Ubuntu: apt-get install virtualbox; elsewhere Oracle's "
            "packages)")
        findings.append(make(f"{ID}:{tool}", f"{tool} is not installed: {breaks}", fix))
    present = [t for t in wanted if t not in missing]
    if present:
        findings.append(ok(ID, "found " + ", ".join(present)))
    return findings


RULE = Rule(id=ID, title="the programs labs need are installed", check=check, order=50,
            backends=(Backend.LIBVIRT, Backend.VIRTUALBOX))
