"""The `tunnel` cells (issue 17) and what each guest needs to build its tunnel ends.

- Building: the verify playbook's first task (playbooks/library/vnet_tunnel.py) builds every
  tunnel end that is missing, before any guest probes; its specs, keys included, go through a
  0600 file per guest in the lab's state directory that Ansible reads on the controller
  (a `file` lookup), so no key is in the inventory, on a kernel command line or in a log.
- Cells: from each end, a nonce probe to the other end's overlay address, bound to the tunnel's
  device and this end's overlay address (so no other interface can carry it), answered by the
  peer's echo service. Three outcomes as everywhere: pass (the peer echoed the nonce), fail
  (no connection: the tunnel is down or its keys or ids disagree), error (anything else; also
  when vnet could not build the tunnel, which is said in the detail).
"""
from __future__ import annotations

import json
from pathlib import Path

from ..host import tunnelkeys
from ..host.locks import write_atomic
from ..lab import tunnels as tunnellib
from ..lab.defaults import ECHO_PORT
from ..lab.model import Lab
from ..lab.tunnelmtu import tunnel_mtu

TIMEOUT = 3.0
# WireGuard resends a lost handshake initiation after REKEY_TIMEOUT, 5 s (the WireGuard paper,
# section 6.1; drivers/net/wireguard/messages.h): a connect must outlast one resend.
WIREGUARD_TIMEOUT = TIMEOUT + 5.0


def tunnel_cells(lab: Lab, make) -> list:
    """make(kind, network, source, target, runner, probe) builds one Check expected "pass"."""
    cells = []
    for t in lab.tunnels:
        for k, end in enumerate(t.endpoints):
            peer = t.endpoints[1 - k]
            mtu = tunnel_mtu(lab, t)
            cells.append(make("tunnel", end.network, end.vm,
                              f"{peer.vm} ({peer.overlay_ip.ip}) over {t.name} ({t.type}"
                              + (f", MTU {mtu})" if mtu else ")"),
                              f"guest:{end.vm}",
                              dict(target=str(peer.overlay_ip.ip), port=ECHO_PORT,
                                   expect_name=peer.vm, bind_dev=t.name,
                                   bind_ip=str(end.overlay_ip.ip), tunnel=t.name,
                                   timeout=WIREGUARD_TIMEOUT if t.type == "wireguard"
                                   else TIMEOUT)))
    return cells


def guest_specs(lab: Lab, keys: dict[str, dict]) -> dict[str, list[dict]]:
    """{vm: [spec for vnet_tunnel]} for every VM that ends a tunnel."""
    specs: dict[str, list[dict]] = {}
    for t in lab.tunnels:
        for k, end in enumerate(t.endpoints):
            peer = t.endpoints[1 - k]
            spec: dict[str, object] = {
                "name": t.name, "type": t.type, "local": str(end.underlay_ip),
                "remote": str(peer.underlay_ip), "overlay": str(end.overlay_ip),
                "subnet": str(t.subnet)}
            if (mtu := tunnel_mtu(lab, t)) is not None:
                spec["mtu"] = mtu            # its underlay is stretched across hosts
            if t.type == "vxlan":
                spec["id"] = t.id
            elif tunnellib.gre_key(t) is not None:
                spec["key"] = tunnellib.gre_key(t)
            secret = keys.get(t.name, {})
            if t.type == "ipsec":
                spec.update(if_id=secret["if_id"], spi_out=secret["spi"][k],
                            spi_in=secret["spi"][1 - k], enc_out=secret["enc"][k],
                            enc_in=secret["enc"][1 - k], auth_out=secret["auth"][k],
                            auth_in=secret["auth"][1 - k])
            elif t.type == "wireguard":
                spec.update(port=secret["port"], private=secret["private"][k],
                            peer_public=secret["public"][1 - k])
            specs.setdefault(end.vm, []).append(spec)
    return specs


def write_guest_files(lab: Lab, lab_dir: Path) -> dict[str, str]:
    """Each tunnel VM's specs in a 0600 file of the lab's directory -> {vm: path} (the
    inventory names only the path)."""
    if not lab.tunnels:
        return {}
    keys = tunnelkeys.ensure_secrets(lab_dir, lab.tunnels)
    folder = Path(lab_dir) / "tunnels"
    folder.mkdir(mode=0o700, exist_ok=True)
    paths = {}
    for vm, specs in guest_specs(lab, keys).items():
        path = folder / f"{vm}.json"         # vm is a checked name (lab/model.py)
        write_atomic(path, json.dumps(specs), mode=0o600)
        paths[vm] = str(path)
    return paths


def annotate(cells: list, guest: dict[str, dict]) -> None:
    """A tunnel vnet could not build on either end makes its cells "error" with the reason:
    a failed probe then says nothing about the network."""
    for c in cells:
        if c.kind != "tunnel":
            continue
        name = c.probe["tunnel"]
        failed = [f"on {vm}: {built.removeprefix('error: ')}" for vm in (c.source,
                  c.probe["expect_name"]) if (built := guest.get(vm, {}).get("tunnels", {})
                                               .get(name, "")).startswith("error")]
        if failed:
            c.observed = "error"
            c.detail = f"vnet could not build {name} ({'; '.join(failed)}); the probe: {c.detail}"
