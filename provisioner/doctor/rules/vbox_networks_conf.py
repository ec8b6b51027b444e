"""VirtualBox >= 6.1.28 (Linux, macOS, Solaris hosts) gives host-only adapters only addresses
that /etc/vbox/networks.conf allows: 192.168.56.0/21 when the file is absent, nothing when it
is empty, else the ranges on its `* 10.0.0.0/8 192.168.0.0/16` lines. Anything else fails at
`hostonlyif ipconfig` with E_ACCESSDENIED, after VMs may already exist."""
from __future__ import annotations

import re
from ipaddress import IPv4Network, ip_network

from ...lab import loader as labfile, modes
from ...lab.defaults import default_lab
from ...lab.model import Backend
from ..base import Finding, Rule, error, ok, warn
from ..host import Host

ID = "vbox-networks-conf"
PATH = "/etc/vbox/networks.conf"
DEFAULT = (IPv4Network("192.168.56.0/21"),)
RESTRICTED_SINCE = (6, 1, 28)


def parse(text: str | None) -> tuple[tuple[IPv4Network, ...], list[str]]:
    """(IPv4 ranges allowed, problems) for the file's text (None: the file is absent)."""
    if text is None:
        return DEFAULT, []
    ranges, problems = [], []
    for number, line in enumerate(text.splitlines(), 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        if words[0] != "*":
            problems.append(f"line {number} does not start with '*' and is ignored")
            continue
        for word in words[1:]:
            try:
                net = ip_network(word, strict=False)
            except ValueError:
                problems.append(f"line {number}: {word!r} is not a network range")
                continue
            if net.version == 4:
                ranges.append(net)
    return tuple(ranges), problems


def version(host: Host) -> tuple[int, int, int] | None:
    out = host.run(["VBoxManage", "--version"], in_target=False)
    match = re.match(r"(\d+)\.(\d+)\.(\d+)", out.stdout.strip()) if out and out.rc == 0 else None
    return tuple(int(g) for g in match.groups()) if match else None


def check(host: Host) -> list[Finding]:
    v = version(host)
    if v is not None and v < RESTRICTED_SINCE:
        return [ok(ID, f"VirtualBox {'.'.join(map(str, v))} does not restrict host-only "
                       "addresses (that began with 6.1.28)")]
    text = host.read(PATH)
    allowed, problems = parse(text)
    lab = host.lab or labfile.resolve(default_lab("hostonly"))
    subnets = [(n.name, n.subnet) for n in lab.networks if modes.MODES[n.mode].vbox_adapter == "hostonly" and n.subnet]
    source = f"{PATH} allows {', '.join(map(str, allowed)) or 'nothing (it is empty)'}" \
        if text is not None else f"no {PATH}: VirtualBox allows only 192.168.56.0/21"
    findings = [warn(ID, f"{PATH}: {p}", "use lines like '* 192.168.56.0/21 10.0.0.0/8'")
                for p in problems]
    for name, subnet in subnets:
        if not any(subnet.subnet_of(r) for r in allowed):
            findings.append(error(
                f"{ID}:{name}", f"host-only network {name} ({subnet}) of lab {lab.name} is "
                f"outside what VirtualBox allows: {source}",
                f"add '* {subnet}' to {PATH} (as root), or give the network a subnet inside "
                f"{', '.join(map(str, allowed)) or '192.168.56.0/21'}"))
    if not any(f.severity == "error" for f in findings):
        what = ", ".join(str(s) for _, s in subnets) or "no host-only networks"
        findings.append(ok(ID, f"host-only subnets of lab {lab.name} ({what}) are allowed: "
                               f"{source}"))
    return findings


RULE = Rule(id=ID, title="VirtualBox allows the lab's host-only ranges", check=check, order=60,
            backends=(Backend.VIRTUALBOX,))
