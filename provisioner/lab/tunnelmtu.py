"""The MTU of a tunnel whose underlay is stretched across hosts (issue 13 with issue 17). Pure.

A network used on several hosts rides vnet's host-side VXLAN, so its MTU is 1450 on a
1500-byte underlay (host/vxlan.py: UNDERLAY_MTU - OVERHEAD, stated in the libvirt network). A
tunnel the guests build over it loses its own headers again; the kernel guesses that from the
device the route leaves by (and a VXLAN device without `dev` assumes 1500), so vnet states the
MTU and sets it on the tunnel device (playbooks/library/vnet_tunnel.py), where a too-large
frame would otherwise vanish between the hosts. A tunnel over networks of one host is left to
the kernel as before (None).
"""
from __future__ import annotations

from .hosts import used_hosts
from .model import Lab, Tunnel

# host/vxlan.py UNDERLAY_MTU - OVERHEAD (tests/unit/test_tunnel_mtu.py checks they agree; the
# lab package does not import the host package)
STRETCHED_MTU = 1450
# Bytes each tunnel type adds in front of what it carries, outer IPv4 header included:
# VXLAN: Ethernet 14 + IPv4 20 + UDP 8 + VXLAN 8 (RFC 7348 section 5); gretap/NVGRE: Ethernet
# 14 + IPv4 20 + GRE 4 (+ 4 with a key, RFC 2890; NVGRE always has one, RFC 7637); GRE: IPv4 20
# + GRE 4 (+ 4); ESP tunnel mode with vnet's cbc(aes) and hmac(sha256) truncated to 128 bits:
# IPv4 20 + SPI and sequence 8 + IV 16 + padding up to 15 + pad length and next header 2 +
# ICV 16 (RFC 4303 section 2); WireGuard: IPv4 20 + UDP 8 + its 32-byte header and tag (the
# WireGuard paper, section 5.4.6).
OVERHEAD = {"vxlan": 50, "nvgre": 42, "gretap": 38, "gre": 24, "ipsec": 77, "wireguard": 60}
KEY_BYTES = 4


def overhead(tunnel: Tunnel) -> int:
    keyed = tunnel.type in ("gretap", "gre") and tunnel.id is not None
    return OVERHEAD[tunnel.type] + (KEY_BYTES if keyed else 0)


def tunnel_mtu(lab: Lab, tunnel: Tunnel) -> int | None:
    """The MTU vnet sets on the tunnel's devices: its stretched underlay's less its overhead;
    None when neither end's underlay network is stretched across hosts."""
    stretched = [e.network for e in tunnel.endpoints
                 if lab.hosts and len(used_hosts(lab.network(e.network), lab.vms)) > 1]
    if not stretched:
        return None
    return STRETCHED_MTU - overhead(tunnel)
