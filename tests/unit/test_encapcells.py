"""The encapsulation cell (verify/encapcells.py): one per tunnel of the example lab, its probe's
preset nonce, the lab's SPIs and WireGuard port read from the lab's state directory, and the
judgement of a capture (synthesized pcaps, as in test_wire.py), with no guest and no tcpdump."""
from pathlib import Path

import pytest
import yaml

from provisioner.host import capture, state, tunnelkeys
from provisioner.host.state import Target
from provisioner.lab import loader
from provisioner.lab.model import Backend
from provisioner.verify import checks, encapcells
from tests.unit.test_wire import eth, esp, gre, inner_probe, ipv4, pcap, udp, vxlan

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "tunnels.yaml"
ENDS = checks.Endpoints(host_listener_port=20000, internet_ip=None, host_uplink_ip="127.0.0.1",
                        mgmt_host_ip="100.64.3.1")


@pytest.fixture
def lab():
    return loader.resolve(yaml.safe_load(EXAMPLE.read_text()))


def encap(cells):
    return [c for c in cells if c.kind == "encapsulation"]


def test_one_cell_per_tunnel_riding_on_the_first_ends_tunnel_probe(lab):
    built = checks.build(lab, Backend.LIBVIRT, ENDS)
    cells = encap(built)
    assert [(c.source, c.network, c.probe["encap"]["tunnel"]) for c in cells] == [
        ("a", "site-a", t) for t in ("l2x", "nv", "gr", "gt", "sec", "wg")]
    first = cells[0]
    assert first.runner == "capture" and first.expected == "pass"   # no probe of its own
    assert first.target == "b (10.99.0.2) via l2x (vxlan)"
    carrier = next(c for c in built if c.kind == "tunnel" and c.source == "a"
                   and c.probe["tunnel"] == "l2x")
    assert carrier.probe["nonce"] == first.probe["nonce"] and first.probe["nonce"].startswith(
        "encap-")
    assert all("nonce" not in c.probe for c in built if c.kind == "tunnel" and c.source == "b")
    again = encap(checks.build(lab, Backend.LIBVIRT, ENDS))[0]
    assert again.probe["nonce"] != first.probe["nonce"]
    assert not any(c.runner == "capture" for c in built if c.kind != "encapsulation")


def test_the_expectation_takes_the_labs_own_spis_and_port(lab, tmp_path):
    tunnelkeys.ensure_secrets(tmp_path, lab.tunnels)
    keys = tunnelkeys.tunnel_secrets(tmp_path)
    cells = {c.probe["encap"]["tunnel"]: c for c in encap(checks.build(lab, Backend.LIBVIRT, ENDS))}
    sec = encapcells.expectation(lab, tmp_path, cells["sec"].probe)
    assert sec.encrypted and sec.spis == tuple(keys["sec"]["spi"])
    wg = encapcells.expectation(lab, tmp_path, cells["wg"].probe)
    assert wg.port == keys["wg"]["port"] and wg.port >= 51820
    nv = encapcells.expectation(lab, tmp_path, cells["nv"].probe)
    assert (nv.type, nv.id, nv.encrypted) == ("nvgre", 5001, False)


@pytest.fixture
def judged(lab, tmp_path, monkeypatch):
    """Captures whose pcap is one we write; returns (cells, write(frames_for(nonce)))."""
    monkeypatch.setenv("VNET_STATE_DIR", str(tmp_path / "state"))
    target = Target(uri="qemu:///system")
    lab_dir = state.lab_dir(target, lab.name)
    lab_dir.mkdir(parents=True)
    tunnelkeys.ensure_secrets(lab_dir, lab.tunnels)
    cells = checks.build(lab, Backend.LIBVIRT, ENDS)
    caps = encapcells.Captures(lab, target, Backend.LIBVIRT, cells, tmp_path / "reports", lab_dir)
    return caps, tunnelkeys.tunnel_secrets(lab_dir)


def probes_say(caps, observed):
    """What the guests' run recorded: the tunnel cells' outcomes (the carriers)."""
    for c in caps.all:
        if c.kind == "tunnel":
            c.observed, c.detail = observed, "nonce echoed by b"


def run_judge(caps, frames, tmp_path, observed="pass"):
    path = pcap(tmp_path, frames, name="site-a.pcap")
    caps.summaries["site-a"] = {"pcap": str(path)}
    probes_say(caps, observed)
    caps.judge()
    return {c.probe["encap"]["tunnel"]: c for c in caps.cells}


def test_a_vxlan_cell_is_green_with_its_nonce_inside_and_names_the_pcap(judged, tmp_path):
    caps, _ = judged
    nonce = next(c for c in caps.cells if c.probe["encap"]["tunnel"] == "l2x").probe["nonce"]
    probe = inner_probe().replace(b"encap-0123456789abcdef", nonce.encode())
    back = eth(ipv4(udp(vxlan(b"answer", 4242), 5, 4789), 17, "10.71.2.10", "10.71.1.10"))
    cells = run_judge(caps, [eth(ipv4(udp(vxlan(probe, 4242), 5, 4789), 17)), back], tmp_path)
    l2x = cells["l2x"]
    assert l2x.ok, l2x.detail
    assert "VXLAN VNI 4242" in l2x.detail and f"{nonce} is inside 1 of them" in l2x.detail
    assert "1 from 10.71.1.10 to 10.71.2.10, 1 back" in l2x.detail
    assert l2x.as_dict()["pcap"].endswith("site-a.pcap") and "pcap " in l2x.detail
    # the same capture proves nothing for the other tunnels: red, with what was seen
    assert not cells["nv"].ok and "no frame of the tunnel" in cells["nv"].detail
    assert cells["nv"].observed == "error"


def test_ipsec_with_the_nonce_in_cleartext_is_red(judged, tmp_path):
    caps, keys = judged
    sec = next(c for c in caps.cells if c.probe["encap"]["tunnel"] == "sec")
    spi = keys["sec"]["spi"][0]
    null_cipher = eth(ipv4(esp(spi, 1, b"VNET " + sec.probe["nonce"].encode()), 50))
    back = eth(ipv4(esp(keys["sec"]["spi"][1], 1, b"\x77" * 48), 50, "10.71.2.10", "10.71.1.10"))
    cells = run_judge(caps, [null_cipher, back], tmp_path)
    assert not cells["sec"].ok and "in cleartext in frame(s) 1" in cells["sec"].detail
    cells = run_judge(caps, [eth(ipv4(esp(spi, 2, b"\x99" * 48), 50)), back], tmp_path)
    assert cells["sec"].ok, cells["sec"].detail
    cells = run_judge(caps, [eth(ipv4(esp(spi, 2, b"\x99" * 48), 50))], tmp_path)   # one way
    assert not cells["sec"].ok and "both ways" in cells["sec"].detail


def test_a_failed_probe_stays_failed_and_a_missing_capture_is_an_error(judged, tmp_path):
    caps, _ = judged
    cells = run_judge(caps, [eth(ipv4(gre(inner_probe(), 0x0800, key=7), 47))], tmp_path,
                      observed="fail")
    assert cells["gr"].observed == "fail"
    caps.problems["site-a"] = "tcpdump on network site-a exited with status 1"
    probes_say(caps, "pass")
    caps.judge()
    assert all(c.observed == "error" and "no capture on the underlay site-a" in c.detail
               for c in caps.cells)


def test_a_passing_probe_without_a_pcap_is_an_error_not_a_pass(judged):
    """No pcap and no recorded problem (a capture that never started, or left no file): the
    cell must not keep the tunnel probe's pass, which says nothing of the wire."""
    caps, _ = judged
    probes_say(caps, "pass")
    caps.judge()
    assert all(c.observed == "error" and not c.ok and "no pcap of the underlay site-a" in c.detail
               for c in caps.cells)


def test_start_says_why_a_network_cannot_be_captured(judged, monkeypatch):
    from provisioner.drivers.libvirt import driver as lvdriver
    from provisioner.errors import Unsupported

    caps, _ = judged

    def refuse(self, lab_name, network):
        raise Unsupported(f"network {network} is on nat")
    def refuse_nic(self, lab_name, vm, nic):
        raise Unsupported(f"NIC {vm}:{nic} is on nat")
    monkeypatch.setattr(lvdriver.Libvirt, "network_capture_point", refuse)
    monkeypatch.setattr(lvdriver.Libvirt, "capture_point", refuse_nic)
    monkeypatch.setattr(capture, "start", lambda *a, **k: pytest.fail("nothing may start"))
    caps.start(lambda m: None)
    assert caps.problems == {"site-a": "network site-a is on nat"}


def test_without_a_bridge_the_near_ends_nic_is_traced_by_the_hypervisor(judged, monkeypatch):
    """VirtualBox's way (Driver.nic_trace: controlvm nictraceN), on the libvirt driver class
    only because the test needs one driver: what matters is the order of the calls."""
    from provisioner.drivers.libvirt import driver as lvdriver
    from provisioner.errors import Unsupported

    caps, _ = judged
    calls = []

    def refuse(self, lab_name, network):
        raise Unsupported("no bridge")
    monkeypatch.setattr(lvdriver.Libvirt, "network_capture_point", refuse)
    monkeypatch.setattr(lvdriver.Libvirt, "capture_point", lambda self, lab_name, vm, nic:
                        capture.CapturePoint(f"{vm}:{nic} (trace)", None))
    monkeypatch.setattr(lvdriver.Libvirt, "nic_trace", lambda self, lab_name, vm, nic, pcap, on:
                        calls.append((vm, nic, Path(pcap).name, on)))
    caps.start(lambda m: None)
    caps.stop()
    name = "tunnels-site-a-underlay.pcap"
    assert calls == [("a", 0, name, True), ("a", 0, name, False)] and not caps.problems
    assert caps.summaries["site-a"]["pcap"].endswith(name)


def test_the_guests_run_happens_between_start_and_stop_then_the_cells_are_judged(
        lab, tmp_path, monkeypatch):
    from types import SimpleNamespace

    order = []
    monkeypatch.setattr(encapcells.Captures, "start", lambda self, p: order.append("start") or self)
    monkeypatch.setattr(encapcells.Captures, "stop", lambda self: order.append("stop"))
    monkeypatch.setattr(encapcells.Captures, "judge", lambda self: order.append(
        ("judge", self.pcap_dir)))
    inv = SimpleNamespace(backend=Backend.LIBVIRT, work_dir=tmp_path / "lab")
    cells = checks.build(lab, Backend.LIBVIRT, ENDS)
    encapcells.while_capturing(lambda: order.append("run"), lab, Target(uri="x"), inv, cells,
                               tmp_path / "reports", lambda m: None)
    assert order == ["start", "run", "stop", ("judge", tmp_path / "reports")]
    order.clear()
    plain = [c for c in cells if c.kind != "encapsulation"]
    encapcells.while_capturing(lambda: order.append("run"), lab, Target(uri="x"), inv, plain,
                               None, lambda m: None)
    assert order == ["run"]                  # no tunnel, no capture


def test_vnet_verify_puts_the_pcaps_beside_its_report(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from provisioner.cli import main
    from provisioner.drivers.libvirt import lifecycle
    from provisioner.lab.defaults import default_lab
    from provisioner.verify import run as verifier

    monkeypatch.setenv("VNET_STATE_DIR", str(tmp_path / "state"))
    state.save(lifecycle.target_for(None, None), "hostonly",
               {"lab_data": default_lab("hostonly"), "source": "test"})
    seen = {}

    def fake_verify(lab, target, say, timings=None, inventory=None, **kw):
        seen.update(kw)
        return {"lab": lab.name, "backend": "libvirt", "ok": True, "checks": [],
                "timings": {}, "notes": []}
    monkeypatch.setattr(verifier, "verify", fake_verify)
    out = tmp_path / "reports" / "r.json"
    CliRunner().invoke(main, ["verify", "hostonly", "--report", "json", "--out", str(out)])
    assert seen == {"pcap_dir": (tmp_path / "reports").resolve()}
    seen.clear()
    CliRunner().invoke(main, ["verify", "hostonly"])
    assert seen == {}                         # the lab's state directory (verify's default)
