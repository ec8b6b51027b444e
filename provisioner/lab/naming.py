"""Names and addresses vnet derives from a lab's names, for every backend: object names
(vnet-<lab>-<item>), Linux bridge names, the lab's management subnet and each VM's management
MAC. Stable hashes, so the same lab gets the same names on every run and machine."""
from __future__ import annotations

import hashlib
from ipaddress import IPv4Network


def object_name(lab: str, item: str) -> str:
    return f"vnet-{lab}-{item}"


def bridge_name(lab: str, net: str) -> str:
    """Linux caps interface names at 15 characters, so bridges get a short stable hash."""
    return "vn" + hashlib.sha256(f"{lab}/{net}".encode()).hexdigest()[:10]


def mgmt_subnet_for(lab: str) -> IPv4Network:
    k = int(hashlib.sha256(lab.encode()).hexdigest(), 16) % 250 + 1
    return IPv4Network(f"100.64.{k}.0/24")


def mgmt_mac(lab: str, vm: str) -> str:
    digest = hashlib.sha256(f"{lab}/{vm}/mgmt".encode()).digest()
    return "52:54:00:" + ":".join(f"{b:02x}" for b in digest[:3])


def nic_mac(lab: str, vm: str, index: int) -> str:
    """A stable locally-administered QEMU-prefix MAC from the names, so renders are repeatable."""
    digest = hashlib.sha256(f"{lab}/{vm}/{index}".encode()).digest()
    return "52:54:00:" + ":".join(f"{b:02x}" for b in digest[:3])
