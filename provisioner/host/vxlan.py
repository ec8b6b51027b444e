"""Stretching a lab network across hypervisor hosts with VXLAN (README "Several hosts").

Each host the network is used on has a Linux bridge for it (libvirt's network: on the home host
with NAT/DHCP/the host address, elsewhere a plain bridge: drivers/libvirt/placement.py). vnet adds one
VXLAN device per (network, host) to that bridge: a VNI per network, UDP port 4789 (IANA,
RFC 7348), head-end replication to every other host's underlay address (an all-zeros FDB entry
per remote, bridge(8)). The device's alias carries the tag `vnet:OWNER:LAB:NETWORK` (OWNER: the
state root's owner id, as in libvirt objects' tags), so destroy and gc find what this vnet made
for a lab and nobody else's (`remove`). Devices of an older vnet (`vnet:LAB:NETWORK`, no owner)
are removed only by a destroy whose record predates the owner (`remove(legacy=True)`); any
other is left to `ip link del`. VXLAN adds 50 bytes (outer IPv4 20 + UDP 8 + VXLAN 8 +
inner Ethernet 14), so the stretched network's MTU is the underlay's minus 50 (1450 on a
1500-byte underlay) and the libvirt network states it (`<mtu size=.../>`).

The commands are argv lists; `apply` runs them on a host through host/hostaccess.py: in its
network namespace (a sandbox host), in vnet's own (this machine, the first host of a lab outside a
sandbox) or over SSH (a remote host), through runner either way.
"""
from __future__ import annotations

import hashlib
import json
import os
import socket
import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address

from . import hostaccess
from .hostaccess import HostAccess
from .netns import run_in_netns
from ..lab.hosts import used_hosts
from ..lab.model import Lab, is_name
from ..lab.naming import bridge_name

PORT = 4789
OVERHEAD = 50
UNDERLAY_MTU = 1500
TAG = "vnet"
MGMT = "mgmt"            # the renderer's name for vnet's management network (bridge_name)
# The management network rides its own UDP port, so blocking the lab's VXLAN port (a negative
# control, a firewall) cuts the lab's networks while vnet still reaches every guest.
MGMT_PORT = 4790


@dataclass(frozen=True)
class Segment:
    """One host's end of a stretched network."""
    owner: str                         # the state root's owner id (provisioner/host/owner.py)
    lab: str
    network: str
    host: str
    vni: int
    device: str                        # the VXLAN device (at most 15 characters)
    bridge: str                        # the libvirt network's bridge on that host
    local: IPv4Address
    remotes: tuple[IPv4Address, ...]
    underlay_dev: str | None           # None: the route to the remotes decides
    mtu: int
    port: int = PORT

    @property
    def tag(self) -> str:
        return f"{TAG}:{self.owner}:{self.lab}:{self.network}"


def vni_for(lab: str, network: str) -> int:
    """Stable per (lab, network), in 1..2^24-1 (VNI 0 is avoided: some stacks treat it apart)."""
    return int(hashlib.sha256(f"{lab}/{network}".encode()).hexdigest(), 16) % (2**24 - 1) + 1


def device_name(lab: str, network: str) -> str:
    return "vx" + bridge_name(lab, network)[2:]


def segments(lab: Lab, underlay_dev: str | None = None, underlay_mtu: int = UNDERLAY_MTU,
             owner: str = "OWNER") -> dict[str, list[Segment]]:
    """host name -> the segments vnet creates there: every network used on two hosts or more.
    `up` passes its owner id; a plan for people (`vnet render`) shows the word OWNER."""
    by_host: dict[str, list[Segment]] = {h.name: [] for h in lab.hosts}
    address = {h.name: h.underlay_ip for h in lab.hosts}
    stretched = [(net.name, used_hosts(net, lab.vms)) for net in lab.networks]
    # vnet's management network: homed on the first host, where the checks run from
    first = lab.hosts[0].name if lab.hosts else None
    stretched.append((MGMT, [first] + sorted({vm.host for vm in lab.vms} - {first})))
    for name, hosts in stretched:
        if len(hosts) < 2:
            continue
        for host in hosts:
            by_host[host].append(Segment(
                owner=owner, lab=lab.name, network=name, host=host, vni=vni_for(lab.name, name),
                device=device_name(lab.name, name), bridge=bridge_name(lab.name, name),
                local=address[host],
                remotes=tuple(address[h] for h in hosts if h != host),
                underlay_dev=underlay_dev, mtu=underlay_mtu - OVERHEAD,
                port=MGMT_PORT if name == MGMT else PORT))
    return by_host


def commands(seg: Segment) -> list[list[str]]:
    """The ip/bridge argv that attach `seg` to its bridge (see ip-link(8) "VXLAN Type")."""
    cmds = [["ip", "link", "add", seg.device, "type", "vxlan", "id", str(seg.vni),
             "local", str(seg.local),
             *(["dev", seg.underlay_dev] if seg.underlay_dev else []),
             "dstport", str(seg.port), "nolearning"],
            ["ip", "link", "set", seg.device, "alias", seg.tag],
            ["ip", "link", "set", seg.device, "mtu", str(seg.mtu)]]
    cmds += [["bridge", "fdb", "append", "00:00:00:00:00:00", "dev", seg.device,
              "dst", str(remote)] for remote in seg.remotes]
    cmds += [["ip", "link", "set", seg.device, "master", seg.bridge],
             ["ip", "link", "set", seg.bridge, "mtu", str(seg.mtu)],
             ["ip", "link", "set", seg.device, "up"]]
    return cmds


Where = HostAccess | str       # a host's access, or (older callers) its network namespace


def apply(where: Where, segs: list[Segment]) -> None:
    hostaccess.of(where).run_all([argv for seg in segs for argv in commands(seg)])


def devices(where: Where) -> list[dict]:
    """The VXLAN devices on a host: {name, vni, alias}."""
    out = hostaccess.of(where).run(["ip", "-j", "-d", "link", "show", "type", "vxlan"]).stdout
    return [{"name": d["ifname"], "vni": d.get("linkinfo", {}).get("info_data", {}).get("id"),
             "alias": d.get("ifalias", "")} for d in json.loads(out or "[]")]


def vnis_in_use(where: Where, segs: list[Segment], recorded: bool) -> list[str]:
    """Preflight: the segments whose VNI a device already uses. A device with the segment's
    own tag is this lab's only when the target has a record of the lab (`recorded`): on a first
    `up` it is a leftover nobody may adopt."""
    taken = {d["vni"]: d for d in devices(where)}
    return [f"VNI {s.vni} (network {s.network}) is used by {taken[s.vni]['name']}"
            for s in segs if s.vni in taken
            and not (recorded and taken[s.vni]["alias"] == s.tag)]


def _alias_parts(alias: str) -> list[str]:
    """[owner, lab, network] of an alias vnet wrote, [lab, network] of an older vnet's."""
    parts = alias.split(":")
    return parts[1:] if parts[0] == TAG and len(parts) in (3, 4) else []


def owner_labs(where: Where, owner: str) -> set[str]:
    """The labs this owner has VXLAN devices of on a host (gc's trace of a lab); an alias is
    anyone's to set, so only valid lab names (they reach paths and APIs)."""
    return {parts[1] for dev in devices(where)
            if len(parts := _alias_parts(dev["alias"])) == 3 and parts[0] == owner
            and is_name(parts[1])}


def remove(where: Where, owner: str, lab: str, legacy: bool = False,
           networks: Iterable[str] = ()) -> list[str]:
    """Delete this owner's VXLAN devices of `lab` on a host (with `legacy`, also those an older
    vnet tagged `vnet:LAB:NETWORK`); their names. `networks`: the lab's, from its record: a
    device still without its alias (`ip link add` and the alias are two commands, and a crash
    can fall between them) goes too when its name and VNI are exactly those of one of them."""
    untagged = {device_name(lab, n): vni_for(lab, n) for n in networks}

    def ours(dev: dict) -> bool:
        if not dev["alias"]:
            return untagged.get(dev["name"]) == dev["vni"]
        parts = _alias_parts(dev["alias"])
        return parts[:2] == [owner, lab] if len(parts) == 3 else legacy and parts[:1] == [lab]
    gone = [dev["name"] for dev in devices(where) if ours(dev)]
    hostaccess.of(where).run_all([["ip", "link", "del", name] for name in gone])
    return gone


def echo_argv(address: str, timeout: int = 2) -> list[str]:
    """The echo on a remote host: ping(8) (iputils and busybox both take these options)."""
    return ["ping", "-c", "1", "-W", str(timeout), str(IPv4Address(address))]


def reaches(where: Where, address: str) -> bool:
    """The preflight's proof that a host's underlay reaches `address`: one ICMP echo and its
    reply, from the host's namespace (echo below) or, on a remote host, by its ping."""
    access = hostaccess.of(where)
    if access.remote:
        return access.run(echo_argv(address), check=False).returncode == 0
    if access.here:                   # this machine: vnet's own namespace is the host's
        return echo(address)
    return run_in_netns(access.netns, echo, address)


def echo(address: str, timeout: float = 2.0) -> bool:
    """One ICMP echo to `address` and its reply (a raw socket: run it in the host's namespace
    with netns.run_in_netns). The preflight's proof that the underlay reaches a host."""
    ident = os.getpid() & 0xFFFF
    payload = b"vnet-underlay!"                      # an even length: 16-bit words below
    words = struct.unpack("!9H", struct.pack("!BBHHH", 8, 0, 0, ident, 1) + payload[:10]) + \
        struct.unpack("!2H", payload[10:])
    total = sum(words)
    total = (total >> 16) + (total & 0xFFFF)
    checksum = ~(total + (total >> 16)) & 0xFFFF    # RFC 1071
    packet = struct.pack("!BBHHH", 8, 0, checksum, ident, 1) + payload
    with socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP) as sock:
        sock.sendto(packet, (address, 0))
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                data, (source, _) = sock.recvfrom(1024)
            except (socket.timeout, OSError):
                return False
            body = data[(data[0] & 0x0F) * 4:]         # past the IPv4 header
            if source == address and body[0] == 0 and struct.unpack("!H", body[4:6])[0] == ident:
                return True
    return False
