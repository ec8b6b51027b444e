"""The cloud-init NoCloud seed of a cloud-image VM: an ISO 9660 volume labelled `cidata` with
`user-data`, `meta-data` and `network-config` (cloud-init's NoCloud datasource:
https://cloudinit.readthedocs.io/en/latest/reference/datasources/nocloud.html).

What the guest gets, so it behaves like the tiny image towards the rest of vnet:
- user-data (#cloud-config): the lab's SSH key for root and the default user, no password
  logins; vnet's echo listener on TCP 7 (playbooks/library/vnet_probe.py `--serve`, the verifier's
  own protocol) as the systemd unit vnet-echo.service; and templates/cloud-init/vnet-ready, which
  prints "VNET-ADDR <mac> <ip>/<prefix> <ifname>" per address and "VNET-READY <hostname>" on the
  serial console, where lifecycle.wait_for_addresses reads them. runcmd runs it on the first
  boot, vnet-ready.service on later ones.
- network-config (version 2): every NIC matched by MAC and renamed (nic0, nic1, ..., mgmt);
  static addresses where the lab gives them, dhcp4 where the network has DHCP; the first NIC
  whose network has a router carries the default route (as in the tiny image); the management
  NIC (last) is static, with no route.

`Seed` is pure data that the libvirt renderer computes with the domain (plan.extra["cloud"]),
so the seed and the domain XML agree on MACs and addresses; `build` writes the ISO.
"""
from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import yaml

from . import isofile
from ..resources import data_dir

LABEL = "cidata"
GUEST_DIR = "/usr/local/lib/vnet"
ECHO_PORT = 7
# ISO 9660 names (d-characters only) for the Rock Ridge / Joliet names cloud-init reads.
ISO_NAMES = {"user-data": "USER_DATA.;1", "meta-data": "META_DATA.;1",
             "network-config": "NETWORK_CONFIG.;1"}


@dataclass(frozen=True)
class SeedNic:
    mac: str
    ifname: str                  # set-name in the guest
    address: str | None = None   # "ip/prefix", static
    dhcp: bool = False
    gateway: str | None = None   # the default route goes through this router
    report: bool = True          # vnet waits for this NIC's address (VNET-ADDR)
    routes: tuple[tuple[str, str], ...] = ()   # (subnet, via): behind a router VM (issue 17)
    # Per-NIC policy routing, as the tiny image's nicroute does: table `table` holds this NIC's
    # subnet, its network's router (`table_gateway`) and its routes, and the rule "from
    # <subnet>" sends what this NIC's address sends through it, whatever the default route
    table: int | None = None
    subnet: str | None = None
    table_gateway: str | None = None


@dataclass(frozen=True)
class Seed:
    lab: str
    hostname: str
    ssh_pubkey: str
    nics: tuple[SeedNic, ...]


class _Dumper(yaml.SafeDumper):
    """Multi-line strings as literal blocks, so the seed reads like a hand-written file."""


_Dumper.add_representer(str, lambda d, s: d.represent_scalar(
    "tag:yaml.org,2002:str", s, style="|" if "\n" in s else None))


def _yaml(data: dict) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=4096)


def user_data(seed: Seed) -> str:
    probe = (data_dir("playbooks") / "library" / "vnet_probe.py").read_text()
    ready = (data_dir("templates") / "cloud-init" / "vnet-ready").read_text()
    macs = [n.mac for n in seed.nics if n.report]
    ready_argv = [f"{GUEST_DIR}/vnet-ready", seed.hostname, *macs]
    echo_unit = ("[Unit]\nDescription=vnet echo listener (TCP 7)\nAfter=network.target\n\n"
                 f"[Service]\nExecStart=/usr/bin/python3 {GUEST_DIR}/vnet_probe.py --serve "
                 f"{ECHO_PORT} {seed.hostname}\n"
                 # each start stamps the socket on the console (verify/refusals.py)
                 # ("-": a stamp that fails costs the evidence, never the echo itself)
                 f"ExecStartPost=-{GUEST_DIR}/vnet-ready --stamp-echo\n"
                 "Restart=always\nRestartSec=1\n\n"
                 "[Install]\nWantedBy=multi-user.target\n")
    ready_unit = ("[Unit]\nDescription=vnet readiness report on the serial console\n"
                  "Wants=network-online.target\n"
                  "After=network-online.target vnet-echo.service ssh.service\n\n"
                  f"[Service]\nType=oneshot\nExecStart={' '.join(ready_argv)}\n\n"
                  "[Install]\nWantedBy=multi-user.target\n")
    config = {
        "hostname": seed.hostname,
        "manage_etc_hosts": True,
        "ssh_pwauth": False,
        "disable_root": False,            # root gets the key as is (Ansible logs in as root)
        "ssh_authorized_keys": [seed.ssh_pubkey],
        "write_files": [
            {"path": f"{GUEST_DIR}/vnet_probe.py", "permissions": "0755", "content": probe},
            {"path": f"{GUEST_DIR}/vnet-ready", "permissions": "0755", "content": ready},
            {"path": "/etc/systemd/system/vnet-echo.service", "content": echo_unit},
            {"path": "/etc/systemd/system/vnet-ready.service", "content": ready_unit},
        ],
        "runcmd": [
            ["systemctl", "daemon-reload"],
            ["systemctl", "enable", "--now", "vnet-echo.service"],
            ["systemctl", "enable", "vnet-ready.service"],
            ready_argv,
        ],
    }
    return "#cloud-config\n" + _yaml(config)


def network_config(seed: Seed) -> str:
    ethernets = {}
    for nic in seed.nics:
        eth: dict = {"match": {"macaddress": nic.mac}, "set-name": nic.ifname,
                     "dhcp4": nic.dhcp, "dhcp6": False}
        if nic.dhcp:
            # vnet decides the default route (below), not the DHCP server; a NIC whose
            # network has no DHCP server running must not hold up the boot
            eth["dhcp4-overrides"] = {"use-routes": False}
            eth["optional"] = True
        if nic.address:
            eth["addresses"] = [nic.address]
        if nic.gateway:
            # on-link: a DHCP NIC may carry it before its lease arrives
            eth["routes"] = [{"to": "0.0.0.0/0", "via": nic.gateway, "on-link": True}]
        if nic.routes:
            eth.setdefault("routes", []).extend(
                {"to": to, "via": via, "on-link": True} for to, via in nic.routes)
        if nic.table is not None and nic.subnet:
            eth.setdefault("routes", []).extend(_own_table(nic))
            eth["routing-policy"] = [{"from": nic.subnet, "table": nic.table,
                                      "priority": nic.table}]
        ethernets[nic.ifname] = eth
    return _yaml({"version": 2, "ethernets": ethernets})


def _own_table(nic: SeedNic) -> list[dict]:
    """The NIC's own routing table: a probe bound to this NIC and its address leaves by it and
    its network's router, not by the default route of another NIC (the probe's binding is only
    as good as this: README, "How a cell is observed")."""
    table: list[dict] = [{"to": nic.subnet, "scope": "link", "table": nic.table}]
    if nic.table_gateway:
        table.append({"to": "0.0.0.0/0", "via": nic.table_gateway, "on-link": True,
                      "table": nic.table})
    table += [{"to": to, "via": via, "on-link": True, "table": nic.table}
              for to, via in nic.routes]
    return table


def meta_data(seed: Seed) -> str:
    """A new instance-id whenever the configuration changes, so cloud-init applies it again."""
    digest = hashlib.sha256((user_data(seed) + network_config(seed)).encode()).hexdigest()[:12]
    return _yaml({"instance-id": f"vnet-{seed.lab}-{seed.hostname}-{digest}",
                  "local-hostname": seed.hostname})


def files(seed: Seed) -> dict[str, str]:
    return {"user-data": user_data(seed), "meta-data": meta_data(seed),
            "network-config": network_config(seed)}


def build(seed: Seed, path: str | Path) -> Path:
    """Write the seed ISO (through a temporary file: a running VM keeps the one it opened)."""
    # pycdlib: pure Python ISO 9660 writer, so no genisoimage/xorriso binary is needed on the host
    import pycdlib

    path = Path(path)
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, vol_ident=LABEL, joliet=3, rock_ridge="1.09")
    for name, text in files(seed).items():
        data = text.encode()
        iso.add_fp(io.BytesIO(data), len(data), "/" + ISO_NAMES[name], rr_name=name,
                   joliet_path="/" + name)
    return isofile.write(iso, path)
