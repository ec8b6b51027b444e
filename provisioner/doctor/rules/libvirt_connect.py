"""No libvirtd, or no permission on its socket: try libvirt.open on the target URI (after
checking that a local socket exists, so nothing is started by asking)."""
from __future__ import annotations

from ..base import Finding, Rule, error, ok
from ..host import Host

ID = "libvirtd"
START = ("start libvirtd (`systemctl start libvirtd.socket`, or virtqemud.socket with the "
         "modular daemons; package libvirt-daemon-system), or use vnet's isolated one: "
         "`vnet sandbox up` and --sandbox default")


def check(host: Host) -> list[Finding]:
    fact = host.libvirt()
    reason = fact.get("reason")
    if fact.get("ok"):
        return [ok(ID, f"libvirt {fact.get('version') or '(version unknown)'} answers at "
                       f"{host.uri}")]
    if host.sandbox and reason == "no-socket":
        return [error(ID, f"sandbox {host.sandbox} is not up: its libvirtd socket "
                          f"{fact.get('socket')} does not exist",
                      f"vnet sandbox up {host.sandbox}")]
    if reason == "no-socket":
        return [error(ID, f"no libvirtd answers at {host.uri}: {fact.get('error')}", START)]
    if reason == "permission":
        return [error(ID, f"no permission to use libvirt at {host.uri}: {fact.get('error')}",
                      "run as root, or add the user to group libvirt "
                      "(sudo usermod -aG libvirt $USER; log in again)")]
    if reason == "no-module":
        return [error(ID, "libvirt-python is not installed in vnet's Python",
                      "pip install libvirt-python (it builds against libvirt-dev, pkg-config "
                      "and gcc: apt-get install libvirt-dev pkg-config gcc)")]
    return [error(ID, f"libvirt at {host.uri} refused the connection: {fact.get('error')}",
                  "check the URI and that its libvirtd runs; for qemu+ssh:// URIs, that "
                  "`virsh -c URI list` works without a password prompt")]


RULE = Rule(id=ID, title="libvirtd answers on the target URI", check=check, order=20)
