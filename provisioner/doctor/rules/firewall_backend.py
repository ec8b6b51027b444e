"""libvirt's firewall backend against an active ufw or firewalld.

- firewalld running: libvirt (>= 5.1) puts its bridges into firewalld's "libvirt" zone; without
  that zone every virtual network fails to start.
- ufw active with libvirt's nftables backend (libvirt >= 10.4 picks it by default): libvirt's
  ACCEPT rules live in their own nftables table, ufw's iptables rules in another, and a packet
  must pass both, so ufw's default deny drops the guests' DHCP/DNS and forwarded traffic.
- A vnet sandbox is out of reach of both: its libvirtd has its own network namespace and no
  D-Bus to talk to firewalld."""
from __future__ import annotations

import re

from ..base import Finding, Rule, error, ok, warn
from ..host import Host

ID = "firewall"
ZONES = ("/usr/lib/firewalld/zones/libvirt.xml", "/etc/firewalld/zones/libvirt.xml")
NFTABLES_SINCE = (10, 4, 0)


def libvirt_version(host: Host) -> tuple[int, ...] | None:
    fact = host.libvirt()
    text = fact.get("version") if fact.get("ok") else None
    if text is None:
        out = host.run(["libvirtd", "--version"], in_target=False)
        match = re.search(r"(\d+)\.(\d+)\.(\d+)", out.stdout) if out and out.rc == 0 else None
        text = match.group(0) if match else None
    return tuple(int(p) for p in text.split(".")) if text else None


def backend(host: Host) -> tuple[str, str]:
    """(iptables|nftables, why) for libvirt's network firewall."""
    version = libvirt_version(host)
    if version is not None and version < NFTABLES_SINCE:
        return "iptables", f"libvirt {'.'.join(map(str, version))} has only the iptables backend"
    conf = host.read("/etc/libvirt/network.conf") or ""
    match = re.search(r'^\s*firewall_backend\s*=\s*"(\w+)"', conf, re.M)
    if match:
        return match.group(1), "set in /etc/libvirt/network.conf"
    if host.which("nft"):
        return "nftables", "libvirt's default when nft is installed"
    return "iptables", "nft is not installed"


def ufw_active(host: Host) -> bool:
    out = host.run(["ufw", "status"], in_target=False)
    if out is not None and out.rc == 0:
        return out.stdout.startswith("Status: active")
    conf = host.read("/etc/ufw/ufw.conf") or ""
    return re.search(r"^\s*ENABLED\s*=\s*yes", conf, re.M) is not None


def firewalld_running(host: Host) -> bool:
    out = host.run(["firewall-cmd", "--state"], in_target=False)
    return out is not None and out.rc == 0 and out.stdout.strip() == "running"


def check(host: Host) -> list[Finding]:
    if host.sandbox:
        return [ok(ID, f"sandbox {host.sandbox}: its libvirtd has its own network namespace "
                       "and no D-Bus, so ufw/firewalld of this host do not touch it")]
    fw_backend, why = backend(host)
    if firewalld_running(host):
        if not any(host.exists(z) for z in ZONES):
            return [error(ID, "firewalld is running but has no 'libvirt' zone: libvirt networks "
                              "fail to start (INVALID_ZONE: libvirt)",
                          "install firewalld >= 0.7 with libvirt's zone (Debian/Ubuntu: it "
                          "ships /usr/lib/firewalld/zones/libvirt.xml), `firewall-cmd "
                          "--reload`, then restart libvirtd")]
        return [ok(ID, "firewalld is running: libvirt puts its bridges into firewalld's "
                       f"'libvirt' zone ({fw_backend} backend, {why})")]
    if ufw_active(host):
        if fw_backend == "nftables":
            return [warn(ID, "ufw is active and libvirt uses its nftables backend "
                             f"({why}): a guest packet must pass both rule sets, and ufw's "
                             "default deny drops the guests' DHCP/DNS and forwarded traffic",
                         "allow the lab bridges in ufw (`ufw allow in on <bridge>` and `ufw "
                         "route allow in on <bridge>`), or set firewall_backend = \"iptables\" "
                         "in /etc/libvirt/network.conf and restart libvirtd, or use a vnet "
                         "sandbox")]
        return [ok(ID, f"ufw is active; libvirt's iptables rules ({why}) sit before ufw's "
                       "chains, so its networks work")]
    return [ok(ID, f"neither ufw nor firewalld is active; libvirt manages its own "
                   f"{fw_backend} rules ({why})")]


RULE = Rule(id=ID, title="libvirt's firewall backend gets along with ufw/firewalld",
            check=check, order=41)
