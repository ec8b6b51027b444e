"""The HTML report (provisioner/verify/htmlreport.py, topograph.py, templates/report/): the JSON
report's topology section, the page's grid and SVG, escaping, and a real render in headless
Chromium (from the distribution) with a screenshot."""
from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import xml.etree.ElementTree as ET
import zlib
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from provisioner.verify import htmlreport, topograph, topology
from provisioner.lab import loader as labfile
from provisioner.host import runner
from provisioner.cli import main
from provisioner.lab.defaults import default_lab
from provisioner.errors import VnetError
from tests.report_sample import RED_DETAIL, sample_result

SVG = "{http://www.w3.org/2000/svg}"
needs_dot = pytest.mark.skipif(shutil.which("dot") is None,
                               reason="graphviz's dot is missing: apt-get install graphviz")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class Page(HTMLParser):
    """The parts of a report page the tests look at: check cells, the inline SVG, and every
    element and attribute (to prove nothing is fetched and nothing runs)."""

    def __init__(self, text: str):
        super().__init__()
        self.checks: list[dict] = []
        self.tags: list[tuple[str, dict]] = []
        self._in_check = 0
        self.feed(text)
        start, end = text.find("<svg"), text.find("</svg>")
        self.svg = ET.fromstring(text[start:end + 6]) if start >= 0 else None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        classes = attrs.get("class", "").split()
        if tag == "div" and "check" in classes:
            self.checks.append({"classes": classes, "kind": attrs.get("data-kind"), "text": ""})
            self._in_check = 1
        elif self._in_check and tag == "div":
            self._in_check += 1

    def handle_endtag(self, tag):
        if self._in_check and tag == "div":
            self._in_check -= 1

    def handle_data(self, data):
        if self._in_check:
            self.checks[-1]["text"] += data

    def vm_nodes(self) -> dict[str, ET.Element]:
        """SVG node groups of class vm, by the VM name in their first bold line."""
        out = {}
        for g in self.svg.iter(f"{SVG}g"):
            if "vm" in g.get("class", "").split():
                texts = [t.text for t in g.iter(f"{SVG}text") if t.text]
                out[texts[0]] = g
        return out


def lab(mode="natnetwork", **kw):
    return labfile.resolve(default_lab(mode, **kw), labfile.Defaults(), source="test")


# --- the JSON report's topology section -----------------------------------------------------

def test_topology_names_every_nic_with_model_and_address_and_every_forward():
    topo = topology.of(lab("natnetwork", nic_model="e1000"), {"vm1": "192.168.63.10"})
    assert [n["mode"] for n in topo["networks"]] == ["natnetwork"]
    vm1, vm2 = topo["vms"]
    assert vm1["control_address"] == "192.168.63.10" and vm2["control_address"] is None
    for vm in (vm1, vm2):
        (nic,) = vm["nics"]
        assert nic["model"] == "e1000" and nic["network"] == "net"
        assert nic["address"].endswith("/24") and nic["mac"].startswith("52:54:00:")
    assert {(f["vm"], f["guest_port"], f["proto"]) for f in topo["forwards"]} == \
        {(vm, port, "tcp") for vm in ("vm1", "vm2") for port in (22, 7)}
    json.dumps(topo)                                  # plain JSON, nothing else


def test_a_per_vm_nat_nic_shows_the_address_the_nat_hands_out():
    topo = topology.of(lab("nat"))
    assert {nic["address"] for vm in topo["vms"] for nic in vm["nics"]} == {"10.0.2.15/24"}


def test_verify_result_carries_the_topology_and_keeps_its_other_keys(tmp_path, monkeypatch):
    """verify() with its three probe sources replaced (FAKE: no Ansible, no listener)."""
    from provisioner.verify import run as verifier
    from provisioner.host.state import Target

    the_lab = lab("hostonly")
    inventory = verifier.Inventory(hosts={"vm1": {"ansible_host": "192.168.63.10"}},
                                   mgmt_host_ip="192.168.63.1", work_dir=tmp_path)
    fakes = verifier.ProbeSources(start_listeners=lambda *a: None, guests=lambda *a: {},
                                  probe_module=lambda: SimpleNamespace(
                                      run_all=lambda specs: {}, probe=lambda spec: {}))
    result = verifier.verify(the_lab, Target(uri="test:///default"), lambda m: None,
                             inventory=inventory, sources=fakes)
    assert {"lab", "backend", "inventory", "ok", "checks", "timings", "notes"} <= set(result)
    assert result["topology"] == topology.of(the_lab, {"vm1": "192.168.63.10", })
    assert result["topology"]["vms"][0]["control_address"] == "192.168.63.10"


# --- the page ---------------------------------------------------------------------------------

@needs_dot
def test_page_has_a_node_per_vm_and_a_red_cell_per_red_check():
    result = sample_result(red=True)
    page = Page(htmlreport.render(result))
    red = [c for c in result["checks"] if not c["ok"] and c["observed"] != "skipped"]
    assert len(red) == 1
    assert [c["kind"] for c in page.checks if "red" in c["classes"]] == [red[0]["kind"]]
    assert RED_DETAIL in next(c["text"] for c in page.checks if "red" in c["classes"])
    assert len(page.checks) == len(result["checks"])           # every check is one cell
    assert sum("green" in c["classes"] for c in page.checks) == len(result["checks"]) - 1
    nodes = page.vm_nodes()
    assert sorted(nodes) == ["vm1", "vm2"]
    vm2_text = " ".join(t.text or "" for t in nodes["vm2"].iter(f"{SVG}text"))
    assert "e1000" in vm2_text and "52:54:00:aa:00:02" in vm2_text \
        and "192.168.150.11/24" in vm2_text
    classes = [g.get("class", "") for g in page.svg.iter(f"{SVG}g")]
    assert classes.count("node network") == 1 and classes.count("node forward") == 4
    assert "node internet" in classes


@needs_dot
def test_green_report_has_no_red_cell():
    page = Page(htmlreport.render(sample_result(red=False)))
    assert page.checks and not [c for c in page.checks if "red" in c["classes"]]


@needs_dot
def test_page_fetches_nothing_and_runs_nothing():
    text = htmlreport.render(sample_result())
    page = Page(text)
    assert not [t for t, _ in page.tags if t in ("script", "link", "img", "iframe", "object",
                                                  "embed", "foreignobject")]
    for tag, attrs in page.tags:
        assert not [a for a in attrs if a.startswith("on")], tag
        for key in ("src", "href"):
            assert not attrs.get(key), (tag, attrs)
    outside = [w for w in text.replace("http://www.w3.org/", "").split() if "://" in w]
    assert not outside, outside
    assert "default-src 'none'" in text                      # and the browser is told so


HOSTILE = '<script>alert(1)</script>"><img src=x onerror=alert(2)>&amp;-->'


@needs_dot
def test_every_string_from_the_report_is_escaped():
    result = sample_result()
    result["lab"] = HOSTILE
    result["notes"] = [HOSTILE]
    for c in result["checks"]:
        c.update(detail=HOSTILE, source=HOSTILE if c["kind"] == "vm_to_host" else c["source"])
    topo = result["topology"]
    topo["networks"][0].update(name=HOSTILE, subnet=HOSTILE)
    topo["vms"][0]["name"] = HOSTILE
    topo["vms"][0]["nics"][0].update(model=HOSTILE, mac=HOSTILE, address=HOSTILE)
    topo["forwards"][0].update(vm=HOSTILE, host_ip=HOSTILE)
    text = htmlreport.render(result)
    page = Page(text)
    assert "<script" not in text and "<img" not in text
    assert not [t for t, _ in page.tags if t in ("script", "img")]
    assert not [a for _, attrs in page.tags for a in attrs if a.startswith("on")]
    assert HOSTILE in "".join(t.text or "" for t in page.svg.iter(f"{SVG}text")) or \
        any(HOSTILE in (t.text or "") for t in page.svg.iter(f"{SVG}text"))
    assert any(HOSTILE in c["text"] for c in page.checks)


def test_sanitize_refuses_markup_dot_never_writes():
    with pytest.raises(VnetError, match="foreignObject"):
        topograph.sanitize('<svg xmlns="http://www.w3.org/2000/svg"><foreignObject/></svg>')
    clean = topograph.sanitize('<!DOCTYPE svg><!-- x --><svg xmlns="http://www.w3.org/2000/svg">'
                               '<g onload="alert(1)"><text>a</text></g></svg>')
    assert "onload" not in clean and "<!--" not in clean and "DOCTYPE" not in clean


@needs_dot
def test_optional_sections_are_drawn_only_when_the_topology_has_them():
    topo = sample_result()["topology"]
    plain = ET.fromstring(topograph.svg(topo))
    classes = [g.get("class", "") for g in plain.iter(f"{SVG}g")]
    assert not [c for c in classes if c.split()[-1] in ("bond", "tunnel", "hostbox")]
    macs = [vm["nics"][0]["mac"] for vm in topo["vms"]]
    topo = dict(topo, bonds=[{"name": "bond0", "vm": "vm1", "mode": "active-backup",
                              "members": macs[:1]}],
                tunnels=[{"name": "vx42", "kind": "vxlan", "endpoints": ["vm1", "vm2"]}],
                hosts=[{"name": "hv1", "vms": ["vm1"]}, {"name": "hv2", "vms": ["vm2"]}])
    drawn = ET.fromstring(topograph.svg(topo))
    classes = [g.get("class", "") for g in drawn.iter(f"{SVG}g")]
    assert classes.count("node bond") == 1 and classes.count("edge tunnel") == 1
    assert classes.count("cluster hostbox") == 2
    one_host = ET.fromstring(topograph.svg(dict(topo, hosts=[{"name": "hv1", "vms": ["vm1"]}])))
    assert "cluster hostbox" not in [g.get("class", "") for g in one_host.iter(f"{SVG}g")]


def test_missing_dot_is_one_line_naming_the_package(monkeypatch, tmp_path):
    monkeypatch.setattr(runner, "which", lambda name: None)
    with pytest.raises(VnetError, match=r"apt-get install graphviz"):
        htmlreport.render(sample_result())
    saved = tmp_path / "r.json"
    saved.write_text(json.dumps(sample_result()))
    out = CliRunner().invoke(main, ["report", str(saved), "--html", str(tmp_path / "r.html")])
    assert out.exit_code == 3 and "graphviz" in out.output
    assert not (tmp_path / "r.html").exists()
    # --report html on a lab command fails before anything is created
    made = CliRunner().invoke(main, ["create", "--mode", "hostonly", "--report", "html",
                                     "--out", str(tmp_path / "x.html"), "--dry-run"])
    assert made.exit_code == 3 and "graphviz" in made.output


# --- commands ---------------------------------------------------------------------------------

@needs_dot
def test_report_command_turns_a_saved_json_report_into_html(tmp_path):
    saved = tmp_path / "report.json"
    saved.write_text(json.dumps(sample_result()))
    out = tmp_path / "deep" / "report.html"
    done = CliRunner().invoke(main, ["report", str(saved), "--html", str(out)])
    assert done.exit_code == 0, done.output
    page = Page(out.read_text())
    assert sorted(page.vm_nodes()) == ["vm1", "vm2"]


@needs_dot
def test_report_command_reads_a_matrix_summary_and_the_labs_beside_it(tmp_path):
    lab_result = sample_result()
    lab_result["matrix"] = {"mode": "natnetwork", "nic_model": "virtio", "verdict": "red"}
    (tmp_path / "mx-natnetwork-virtio.json").write_text(json.dumps(lab_result))
    summary = {"sandbox": "h7", "labs": [
        {"lab": "mx-natnetwork-virtio", "mode": "natnetwork", "nic_model": "virtio",
         "verdict": "red", "seconds": 41.2, "cells_ok": 19, "cells_total": 20,
         "cells_skipped": 0, "detail": "1 red cell(s)"},
        {"lab": "mx-sriov-virtio", "mode": "bridged", "nic_model": "sriov",
         "verdict": "skipped", "seconds": 0.3, "cells_ok": 0, "cells_total": 4,
         "cells_skipped": 4, "detail": "no hardware"}], "wall_seconds": 42.0, "complete": True}
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    out = tmp_path / "matrix.html"
    done = CliRunner().invoke(main, ["report", str(tmp_path / "summary.json"), "--html", str(out)])
    assert done.exit_code == 0, done.output
    page = Page(out.read_text())
    rows = [a.get("class") for t, a in page.tags if t == "tr" and a.get("class")]
    assert rows == ["verdict-red", "verdict-skipped"]
    assert len([c for c in page.checks if "red" in c["classes"]]) == 1


@pytest.mark.parametrize("text, why", [("{", "not a JSON report"), ("[1]", "not a vnet JSON"),
                                       ('{"lab": "x"}', "not a vnet JSON"),
                                       # hand-edited shapes: these exited 3, "internal error"
                                       ('{"checks": [], "matrix": null}', "wrong shape"),
                                       ('{"checks": [], "topology": {"networks": [1]}}',
                                        "wrong shape")])
def test_report_command_refuses_what_is_not_a_report(tmp_path, text, why):
    saved = tmp_path / "bad.json"
    saved.write_text(text)
    out = CliRunner().invoke(main, ["report", str(saved), "--html", str(tmp_path / "o.html")])
    assert out.exit_code == 2 and why in out.output and str(saved) in out.output
    assert len(out.output.strip().splitlines()) == 1
    assert not (tmp_path / "o.html").exists()


def test_every_lab_command_offers_the_html_report():
    for name in ("verify", "create", "up", "matrix"):
        (param,) = [p for p in main.commands[name].params if p.name == "report"]
        assert "html" in param.type.choices, name


@needs_dot
def test_lab_commands_write_the_html_report(tmp_path):
    """verify, create and up all write reports through _emit_verification."""
    from provisioner.cli.common import emit_verification as _emit_verification

    out = tmp_path / "r.html"
    with pytest.raises(SystemExit) as exited:            # a red cell: exit 1, report written
        _emit_verification(sample_result(), "html", out, "table")
    assert exited.value.code == 1
    assert len([c for c in Page(out.read_text()).checks if "red" in c["classes"]]) == 1


@needs_dot
def test_matrix_command_writes_the_html_report(tmp_path, monkeypatch):
    from provisioner.ops import matrix

    def fake_run(modes, models, report_dir, sandbox_name, pf, progress, **options):   # FAKE matrix run
        result = sample_result(red=False)
        (report_dir / "mx-natnetwork-virtio.json").write_text(json.dumps(result))
        summary = {"sandbox": "h7x", "labs": [{"lab": "mx-natnetwork-virtio", "mode": "natnetwork",
                   "nic_model": "virtio", "verdict": "green", "seconds": 1.0, "cells_ok": 20,
                   "cells_total": 20, "cells_skipped": 0, "detail": ""}],
                   "wall_seconds": 1.0, "complete": True}
        (report_dir / "summary.json").write_text(json.dumps(summary))
        return summary

    monkeypatch.setattr(matrix, "run", fake_run)
    (tmp_path / "r").mkdir()
    done = CliRunner().invoke(main, ["matrix", "--modes", "natnetwork", "--nic-models", "virtio",
                                     "--report-dir", str(tmp_path / "r"), "--report", "html",
                                     "--out", str(tmp_path / "m.html")])
    assert done.exit_code == 0, done.output
    assert sorted(Page((tmp_path / "m.html").read_text()).vm_nodes()) == ["vm1", "vm2"]


# --- a real browser ---------------------------------------------------------------------------

def png_pixels(path: Path) -> tuple[int, int, set[tuple[int, ...]]]:
    """(width, height, the set of RGB colours) of an 8-bit RGB or RGBA PNG, decoded here
    (zlib + the five PNG row filters, PNG spec section 9) so the test needs no imaging library."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBB", body[:10])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, colour = header
    assert depth == 8 and colour in (2, 6), header
    bpp = 3 if colour == 2 else 4
    raw, stride = zlib.decompress(idat), width * bpp
    prev, colours = bytearray(stride), set()
    for y in range(height):
        kind, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for x in range(stride):
            a = line[x - bpp] if x >= bpp else 0
            b, c = prev[x], prev[x - bpp] if x >= bpp else 0
            if kind == 1:
                line[x] = (line[x] + a) & 255
            elif kind == 2:
                line[x] = (line[x] + b) & 255
            elif kind == 3:
                line[x] = (line[x] + (a + b) // 2) & 255
            elif kind == 4:
                pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
                line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        colours.update(tuple(line[i:i + 3]) for i in range(0, stride, bpp * 7))
        prev = line
    return width, height, colours


def screenshot(html: Path, png: Path, size: str = "1200,1300") -> None:
    """Headless Chromium in a network namespace of its own (only a loopback that is down): the
    page gets no network at all, so a report that fetched anything would render broken."""
    argv = ["unshare", "--net", CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
            "--disable-background-networking", "--disable-component-update", "--no-first-run",
            "--hide-scrollbars", f"--user-data-dir={png.parent / 'chromium-profile'}",
            f"--screenshot={png}", f"--window-size={size}", html.resolve().as_uri()]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and png.is_file(), done.stderr[-2000:]


@needs_dot
@pytest.mark.skipif(CHROMIUM is None, reason="chromium is missing: apt-get install chromium")
@pytest.mark.skipif(os.geteuid() != 0, reason="unshare --net needs root")
def test_headless_chromium_renders_the_report_with_its_red_cell(tmp_path):
    html = tmp_path / "report.html"
    htmlreport.write_html(sample_result(red=True), html)
    png = tmp_path / "report.png"
    screenshot(html, png)
    width, height, colours = png_pixels(png)
    assert (width, height) == (1200, 1300)
    assert len(colours) > 16, "the screenshot is blank"
    assert (0xfe, 0xe2, 0xe2) in colours       # the red cell's background is on screen
    assert (0xdc, 0xfc, 0xe7) in colours       # and a green one's
    if os.environ.get("VNET_REPORT_PNG"):        # docs/report.png is made this way
        shutil.copyfile(png, os.environ["VNET_REPORT_PNG"])


def test_a_lab_that_never_ran_shows_why_and_no_cell():
    """A matrix lab that failed before any check (matrix._empty), without a topology: no dot."""
    result = {"lab": "mx-nat-e1000", "backend": "libvirt", "ok": False, "booted": False,
              "checks": [], "timings": {}, "notes": [], "error": "libvirtd <down> & out"}
    text = htmlreport.render(result)
    page = Page(text)
    assert page.checks == [] and page.svg is None
    assert "could not run: libvirtd &lt;down&gt; &amp; out" in text
    assert 'class="badge error"' in text


def test_a_booted_lab_red_only_for_a_skipped_cell_says_why():
    cell = {"kind": "vm_to_internet", "network": "n", "mode": "hostonly", "source": "a",
            "target": "internet tcp/443", "expected": "fail", "observed": "skipped", "ok": False,
            "detail": "skipped: not in a sandbox", "declared": True}
    passed = dict(cell, kind="vm_to_host", target="host (10.0.0.1)", observed="fail", ok=True,
                  detail="refused", declared=False)
    result = {"lab": "d", "backend": "libvirt", "ok": False, "checks": [passed, cell],
              "timings": {}, "notes": []}
    text = htmlreport.render(result)
    assert 'class="badge red"' in text and "not verified: 1 skipped cell(s)" in text
    assert "not verified:" not in htmlreport.render(dict(result, booted=False, ok=True,
                                                          checks=[cell]))


def test_a_report_saved_before_the_topology_section_still_renders_its_grid(monkeypatch):
    """Older JSON reports (CI artifacts) have no `topology`: the grid alone, and dot not needed."""
    monkeypatch.setattr(runner, "which", lambda name: None)
    result = sample_result()
    del result["topology"]
    page = Page(htmlreport.render(result))
    assert page.svg is None and len(page.checks) == len(result["checks"])
    assert len([c for c in page.checks if "red" in c["classes"]]) == 1


def test_a_declared_cell_is_marked_and_lists_the_openflow_rules_its_packets_hit():
    result = sample_result(red=False)
    declared = next(c for c in result["checks"] if c["kind"] == "vm_to_vm")
    declared.update(declared=True, flows=[
        {"flow": "priority=200,tcp,nw_dst=10.72.0.11,tp_dst=7 actions=drop", "moved": 3},
        {"flow": "priority=0 actions=NORMAL", "moved": None}])
    page = Page(htmlreport.render(result))
    marked = [c for c in page.checks if "declared" in c["text"]]
    assert len(marked) == 1 and marked[0]["kind"] == "vm_to_vm"
    assert "tp_dst=7 actions=drop (3 packets)" in marked[0]["text"]
    assert "priority=0 actions=NORMAL" in marked[0]["text"]
    assert sum("declared" in c["text"] for c in Page(htmlreport.render(
        sample_result(red=False))).checks) == 0        # mode-table cells carry no mark


def test_the_topology_carries_the_labs_bonds_tunnels_and_hosts():
    from pathlib import Path as P

    root = P(__file__).resolve().parents[2]
    bonds = topology.of(labfile.load(root / "examples" / "bonds-and-router.yaml"))
    assert bonds["bonds"] and all(len(b["members"]) >= 2 for b in bonds["bonds"])
    assert "tunnels" not in bonds and "hosts" not in bonds
    tunnels = topology.of(labfile.load(root / "examples" / "tunnels.yaml"))
    kinds = {t["kind"] for t in tunnels["tunnels"]}
    assert kinds == {"vxlan", "nvgre", "gre", "gretap", "ipsec", "wireguard"}
    assert all(len(t["endpoints"]) == 2 for t in tunnels["tunnels"])
    two = labfile.resolve({"name": "mh", "hosts": [
                              {"name": "hv1", "uri": "qemu+ssh://root@hv1.example/system",
                               "underlay_ip": "198.51.100.2"},
                              {"name": "hv2", "uri": "qemu+ssh://root@hv2.example/system",
                               "underlay_ip": "198.51.100.3"}],
                           "networks": [{"name": "lan", "mode": "internal"}],
                           "vms": [{"name": "a", "host": "hv1", "nics": [{"network": "lan"}]},
                                   {"name": "b", "host": "hv2", "nics": [{"network": "lan"}]}]},
                          labfile.Defaults(), source="test")
    assert topology.of(two)["hosts"] == [{"name": "hv1", "vms": ["a"]},
                                         {"name": "hv2", "vms": ["b"]}]


@pytest.mark.parametrize("beside", ["[1]", "{"])
def test_a_bad_lab_report_beside_a_summary_is_bad_input_naming_it(tmp_path, beside):
    (tmp_path / "summary.json").write_text('{"labs": [{"lab": "x"}]}')
    (tmp_path / "x.json").write_text(beside)
    out = CliRunner().invoke(main, ["report", str(tmp_path / "summary.json"), "--html",
                                    str(tmp_path / "o.html")])
    assert out.exit_code == 2 and str(tmp_path / "x.json") in out.output, out.output
