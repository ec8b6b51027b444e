"""The encapsulation cells in a real sandbox (issue 17): examples/tunnels.yaml (a - router r - b,
one tunnel of each type) verifies green with an encapsulation cell per tunnel, each naming what
tcpdump saw on site-a's host-side bridge (VNI, VSID, GRE key, the lab's SPI, WireGuard's port)
and the pcap beside the report. Negative controls: the real capture judged against another VNI
is red; an ipsec SA switched to `enc cipher_null` on both ends (the tunnel still works, so its
tunnel cells stay green) puts the nonce in cleartext and turns that encapsulation cell, and only
it, red."""
import time
from pathlib import Path

import pytest

from provisioner.drivers.libvirt import lifecycle
from provisioner.host import state
from provisioner.host.tunnelkeys import tunnel_secrets
from provisioner.lab import loader as labfile
from provisioner.verify import run as verifier, wire
from tests.integration.conftest import guest_ssh
from tests.integration.test_tunnels import IP, red, say

pytestmark = pytest.mark.integration
EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "tunnels.yaml"


def encap(result):
    return {c["target"].split(" via ")[1].split()[0]: c for c in result["checks"]
            if c["kind"] == "encapsulation"}


def test_encapsulation_cells_green_then_cleartext_ipsec_turns_only_its_cell_red(lab_sandbox,
                                                                              tmp_path):
    lab = labfile.load(EXAMPLE, labfile.sandbox_defaults(lab_sandbox))
    target = lifecycle.target_for(lab_sandbox.name, None)
    started = time.monotonic()
    try:
        record = lifecycle.up(lab, target, say)
        say(f"boot to ready: {time.monotonic() - started:.0f}s")
        keys = tunnel_secrets(state.lab_dir(target, lab.name))
        began = time.monotonic()
        result = verifier.verify(lab, target, say, timings=record["timings"], pcap_dir=tmp_path)
        say(f"verify with captures: {time.monotonic() - began:.0f}s")
        say(verifier.matrix_text(result))
        assert result["ok"], red(result)
        cells = encap(result)
        assert set(cells) == {"l2x", "nv", "gr", "gt", "sec", "wg"}
        sec_spis = {f"ESP SPI 0x{s:08x}" for s in keys["sec"]["spi"]}
        for name, seen in (("l2x", "VXLAN VNI 4242"), ("nv", "GRE proto 0x6558 VSID 5001"),
                           ("gr", "GRE proto 0x0800 key 7"), ("gt", "GRE proto 0x6558 key 8"),
                           ("wg", f"port {keys['wg']['port']}")):
            assert seen in cells[name]["detail"], cells[name]["detail"]
        assert any(s in cells["sec"]["detail"] for s in sec_spis), cells["sec"]["detail"]
        assert "appears in no frame (encrypted)" in cells["sec"]["detail"]
        assert "appears in no frame (encrypted)" in cells["wg"]["detail"]
        assert "is inside" in cells["l2x"]["detail"]
        pcap = Path(cells["l2x"]["pcap"])
        assert pcap.parent == tmp_path and all(c["pcap"] == str(pcap) for c in cells.values())
        say(f"underlay pcap: {pcap.stat().st_size} bytes, "
            f"{sum(1 for _ in wire.read_pcap(pcap))} frames")

        # negative control 1: the same real capture, judged against another VNI
        nonce = cells["l2x"]["detail"].split("the probe's nonce ")[1].split()[0]
        ok, detail = wire.check(pcap, wire.Expectation("vxlan", nonce.encode(), id=4243))
        assert not ok and "no frame of the tunnel" in detail, detail

        # negative control 2: the a -> b SA without encryption on both ends (same SPI, same
        # HMAC key): the tunnel still carries the probe, but in cleartext
        spi, if_id = keys["sec"]["spi"][0], keys["sec"]["if_id"]
        for vm in ("a", "b"):
            guest_ssh(target, lab.name, vm,
                      f"{IP} xfrm state delete src 10.71.1.10 dst 10.71.2.10 proto esp "
                      f"spi {spi} && "
                      f"{IP} xfrm state add src 10.71.1.10 dst 10.71.2.10 proto esp spi {spi} "
                      f"reqid {if_id} mode tunnel if_id {if_id} enc cipher_null '' "
                      f"auth-trunc 'hmac(sha256)' 0x{keys['sec']['auth'][0]} 128")
        result = verifier.verify(lab, target, say, timings=record["timings"], pcap_dir=tmp_path)
        say(verifier.matrix_text(result))
        broken = red(result)
        assert list(broken) == [("encapsulation", "a", "b (10.99.4.2) via sec (ipsec)")], broken
        observed, detail = next(iter(broken.values()))
        assert observed == "error" and "in cleartext in frame(s)" in detail, detail
        say(detail)
    finally:
        lifecycle.destroy(lab.name, target, say)
