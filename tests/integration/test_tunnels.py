"""Tunnels in a real sandbox (issue 17): examples/tunnels.yaml (a - router r - b, one tunnel of
each type between a and b across the routed underlay) boots and every cell is green, the
tunnel cells of all six types among them; then the negative controls, in one run: the VXLAN
tunnel down on one end, a wrong NVGRE key (VSID) on one end, a wrong ESP key on one end's
inbound SA and a WireGuard end whose key changed turn exactly those tunnels' cells red with
"fail" (no connection), while the gre and gretap tunnels and every other cell stay green."""
import os
import secrets
import time
from pathlib import Path

import pytest

from provisioner.drivers.libvirt import lifecycle
from provisioner.host import state
from provisioner.host.tunnelkeys import FILE, tunnel_secrets
from provisioner.lab import loader as labfile
from provisioner.lab.tunnels import TYPES
from provisioner.verify import run as verifier
from tests.integration.conftest import guest_ssh

pytestmark = pytest.mark.integration
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "tunnels.yaml"
IP = "/usr/bin/ip"      # iproute2's (busybox's shell prefers its own applet for a bare `ip`)


def say(message):
    print(message, flush=True)


def red(result):
    return {(c["kind"], c["source"], c["target"]): (c["observed"], c["detail"])
            for c in result["checks"] if not c["ok"]}


def test_every_tunnel_type_green_then_down_and_wrong_keys_turn_only_theirs_red(lab_sandbox):
    lab = labfile.load(EXAMPLE, labfile.sandbox_defaults(lab_sandbox))
    target = lifecycle.target_for(lab_sandbox.name, None)
    started = time.monotonic()
    try:
        record = lifecycle.up(lab, target, say)
        say(f"boot to ready: {time.monotonic() - started:.0f}s ({record['timings']})")
        lab_dir = state.lab_dir(target, lab.name)
        assert os.stat(lab_dir / FILE).st_mode & 0o777 == 0o600   # made with the lab
        for vm in ("a", "r", "b"):         # every module the tunnels need loaded at boot
            console = (lab_dir / f"{vm}.serial.log").read_text(errors="replace")
            assert "insmod" not in console and "VNET-READY" in console, console[-800:]
        keys = tunnel_secrets(lab_dir)
        assert set(keys) == {"sec", "wg"}

        result = verifier.verify(lab, target, say, timings=record["timings"])
        say(verifier.matrix_text(result))
        assert result["ok"], red(result)
        cells = [c for c in result["checks"] if c["kind"] == "tunnel"]
        assert len(cells) == 2 * len(lab.tunnels)
        assert {c["target"].rsplit("(", 1)[1].rstrip(")") for c in cells} == set(TYPES)
        assert all("nonce echoed by" in c["detail"] for c in cells)
        # no key reached Ansible's files (they go through 0600 spec files and a lookup)
        artifacts = " ".join(p.read_text(errors="replace")
                             for p in (lab_dir / "ansible").rglob("*") if p.is_file())
        assert keys["sec"]["enc"][0] not in artifacts and keys["wg"]["private"][1] not in artifacts

        # negative controls: each breaks one tunnel on one end; vnet keeps what exists
        sec = keys["sec"]
        guest_ssh(target, lab.name, "a", f"{IP} link set l2x down")
        nvgre_key = (5001 + 1) << 8            # another VSID on b's end of nv
        guest_ssh(target, lab.name, "b", f"{IP} link del nv && {IP} link add nv type gretap "
            f"local 10.71.2.10 remote 10.71.1.10 key {nvgre_key} && "
            f"{IP} addr add 10.99.1.2/24 dev nv && {IP} link set nv up")
        guest_ssh(target, lab.name, "b",           # b's inbound SA (a -> b) with a wrong HMAC key
            f"{IP} xfrm state delete src 10.71.1.10 dst 10.71.2.10 proto esp spi {sec['spi'][0]}"
            f" && {IP} xfrm state add src 10.71.1.10 dst 10.71.2.10 proto esp "
            f"spi {sec['spi'][0]} reqid {sec['if_id']} mode tunnel if_id {sec['if_id']} "
            f"enc 'cbc(aes)' 0x{sec['enc'][0]} auth-trunc 'hmac(sha256)' "
            f"0x{secrets.token_hex(32)} 128")
        guest_ssh(target, lab.name, "b", "umask 077 && wg genkey > /tmp/k && "
            "wg set wg private-key /tmp/k && rm /tmp/k")
        result = verifier.verify(lab, target, say, timings=record["timings"])
        say(verifier.matrix_text(result))
        broken = red(result)
        # the tunnel cells, and the encapsulation cell of each broken tunnel (it rides on the
        # tunnel cell's probe from a: verify/encapcells.py), and nothing else
        assert {k for k, _, _ in broken} == {"tunnel", "encapsulation"}, broken
        assert {target_.split(" over ")[1].split()[0] for k, _, target_ in broken
                if k == "tunnel"} == {"l2x", "nv", "sec", "wg"}, broken
        assert {target_.split(" via ")[1].split()[0] for k, _, target_ in broken
                if k == "encapsulation"} == {"l2x", "nv", "sec", "wg"}, broken
        assert len(broken) == 12 and all(o == "fail" for o, _ in broken.values()), broken
    finally:
        lifecycle.destroy(lab.name, target, say)
