"""vnet matrix with the lab lifecycle replaced by fakes: verdicts, files, exit codes, and the
temporary sandbox removed whatever happens (Ctrl-C included)."""
import json
import xml.etree.ElementTree as ET

import pytest
from click.testing import CliRunner

from provisioner import lifecycle, matrix, sandbox, state
from provisioner import verify as verifier
from provisioner.cli import main
from provisioner.doctor import error
from provisioner.errors import HypervisorError, Unsupported
from provisioner.state import Target


class Fake:
    """Records what the matrix did; lab outcomes are chosen per lab name."""

    def __init__(self, monkeypatch, red=(), broken=(), interrupt=(), no_hardware=(), crash=()):
        self.calls, self.crash = [], crash
        self.red, self.broken, self.interrupt, self.no_hardware = red, broken, interrupt, no_hardware
        monkeypatch.setattr(sandbox, "up", lambda name, progress: self.calls.append(("sandbox up", name)))
        monkeypatch.setattr(sandbox, "down", lambda name, progress: self.calls.append(("sandbox down", name)))
        monkeypatch.setattr(lifecycle, "target_for", lambda name, uri: Target(
            uri=f"qemu:///system?socket=/x/{name}", sandbox=name, netns=f"vnet-{name}-host"))
        monkeypatch.setattr(lifecycle, "up", self.up)
        monkeypatch.setattr(lifecycle, "destroy", lambda name, target, say: self.calls.append(("destroy", name)))
        monkeypatch.setattr(verifier, "verify", self.verify)
        monkeypatch.setattr(verifier, "_sandbox", lambda target: sandbox.describe(target.sandbox))
        monkeypatch.setattr(state, "read", lambda target, name: None)
        monkeypatch.setattr(matrix, "_doctor", lambda name, progress: {"status": "warn", "findings": []})

    def up(self, lab, target, say):
        self.calls.append(("up", lab.name))
        if lab.name in self.interrupt:
            raise KeyboardInterrupt
        if lab.name in self.broken:
            raise HypervisorError("VM vm1 stopped while booting")
        if lab.name in self.crash:
            raise KeyError("bug")
        if lab.name in self.no_hardware:
            exc = Unsupported(f"lab {lab.name!r} cannot be created here: no hardware: no vDPA",
                              hint="vdpa dev add ...")
            exc.findings = [error(f"vdpa:{vm.name}", f"no hardware: no vDPA device for {vm.name}",
                                  "vdpa dev add ...") for vm in lab.vms]
            exc.hardware = True
            raise exc
        return {"timings": {"image": 0.0, "define": 1.0, "address": 4.0}}

    def verify(self, lab, target, say, timings=None):
        cell = {"kind": "vm_to_vm", "network": "net", "mode": "x", "source": "vm1",
                "target": "vm2", "expected": "pass", "observed": "pass", "ok": True,
                "detail": "answered"}
        bad = dict(cell, observed="fail", ok=False, detail="timed out")
        cells = [cell, bad] if lab.name in self.red else [cell, cell]
        return {"lab": lab.name, "backend": "libvirt", "ok": all(c["ok"] for c in cells),
                "checks": cells, "timings": dict(timings or {}, verify=2.0), "notes": []}


def test_green_matrix_writes_every_file_and_removes_the_temporary_sandbox(monkeypatch, tmp_path):
    fake = Fake(monkeypatch)
    summary = matrix.run(["internal", "hostonly"], ["virtio", "e1000"], tmp_path,
                         progress=lambda m: None)
    names = [lab["lab"] for lab in summary["labs"]]
    assert names == ["mx-internal-virtio", "mx-internal-e1000", "mx-hostonly-virtio",
                     "mx-hostonly-e1000"]
    for name in names:
        report = json.loads((tmp_path / f"{name}.json").read_text())
        assert report["ok"] and report["matrix"]["verdict"] == "green"
        assert ET.parse(tmp_path / f"{name}.xml").getroot().get("failures") == "0"
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["complete"] and on_disk["exit_code"] == 0 and on_disk["wall_seconds"] >= 0
    assert all("seconds" in lab and lab["cells_ok"] == 2 for lab in on_disk["labs"])
    sb = summary["sandbox"]
    assert fake.calls[0] == ("sandbox up", sb) and fake.calls[-1] == ("sandbox down", sb)
    assert [c for c in fake.calls if c[0] == "destroy"] == [("destroy", n) for n in names]
    assert matrix.exit_status(summary) == 0
    text = matrix.summary_table(summary)
    assert text.splitlines()[0].split() == ["mode", "model", "cells", "ok/total", "seconds",
                                            "verdict"]
    assert text.count("green") == 5 and "4 lab(s) in" in text      # 4 rows + the tally


def test_a_red_cell_exits_1_and_a_broken_lab_3(monkeypatch, tmp_path):
    Fake(monkeypatch, red=["mx-internal-virtio"], broken=["mx-hostonly-virtio"])
    summary = matrix.run(["internal", "hostonly"], ["virtio"], tmp_path, progress=lambda m: None)
    assert [lab["verdict"] for lab in summary["labs"]] == ["red", "error"]
    assert matrix.exit_status(summary) == 1
    junit = ET.parse(tmp_path / "mx-hostonly-virtio.xml").getroot()
    assert junit.get("errors") == "1" and "stopped while booting" in junit.find(
        "testcase/error").get("message")
    assert "RED" in matrix.summary_table(summary)
    summary["labs"] = summary["labs"][1:]
    assert matrix.exit_status(summary) == 3


def test_missing_hardware_is_skipped_cell_by_cell(monkeypatch, tmp_path):
    Fake(monkeypatch, no_hardware=["mx-bridged-vdpa"])
    summary = matrix.run(["bridged"], ["vdpa"], tmp_path, progress=lambda m: None)
    [lab] = summary["labs"]
    assert lab["verdict"] == "skipped" and lab["cells_ok"] == 0
    assert lab["cells_skipped"] == lab["cells_total"] > 0
    report = json.loads((tmp_path / "mx-bridged-vdpa.json").read_text())
    assert report["booted"] is False and report["ok"]
    assert {c["observed"] for c in report["checks"]} == {"skipped"}
    for c in report["checks"]:              # each cell names what its own VM lacks
        vm = c["source"] if c["source"].startswith("vm") else c["target"].split()[0]
        assert c["detail"] == f"skipped: no hardware (no vDPA device for {vm})", c
    assert matrix.exit_status(summary) == 1            # skipped only: nothing was verified


def test_combinations_libvirt_cannot_realize_are_unsupported(monkeypatch, tmp_path):
    fake = Fake(monkeypatch)
    summary = matrix.run(["natnetwork"], ["vdpa"], tmp_path, sandbox_name="keep",
                         progress=lambda m: None)
    [lab] = summary["labs"]
    assert lab["verdict"] == "unsupported" and "bridged network" in lab["detail"]
    assert ("up", "mx-natnetwork-vdpa") not in fake.calls
    assert ("sandbox up", "keep") not in fake.calls and ("sandbox down", "keep") not in fake.calls
    assert matrix.exit_status(summary) == 1            # unsupported only: nothing was verified


def test_nothing_verified_exits_1_and_says_so(monkeypatch, tmp_path):
    Fake(monkeypatch, no_hardware=["mx-bridged-vdpa"])
    result = CliRunner().invoke(main, ["matrix", "--modes", "bridged,natnetwork", "--nic-models",
                                       "vdpa", "--report-dir", str(tmp_path)])
    assert result.exit_code == 1, result.output
    assert "NOTHING VERIFIED" in result.output
    assert "1 skipped, 1 unsupported" in result.output
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["exit_code"] == 1


def test_skipped_labs_beside_a_green_one_exit_0_and_cells_are_counted(monkeypatch, tmp_path):
    Fake(monkeypatch, no_hardware=["mx-bridged-vdpa"])
    summary = matrix.run(["bridged", "hostonly"], ["vdpa", "virtio"], tmp_path,
                         progress=lambda m: None)
    assert [lab["verdict"] for lab in summary["labs"]] == ["skipped", "green", "unsupported",
                                                           "green"]
    assert matrix.exit_status(summary) == 0
    skipped = summary["labs"][0]["cells_skipped"]
    assert f"cells: 4 ok, 0 red, {skipped} skipped" in matrix.summary_table(summary)


def test_ctrl_c_destroys_the_lab_and_removes_the_temporary_sandbox(monkeypatch, tmp_path):
    fake = Fake(monkeypatch, interrupt=["mx-hostonly-virtio"])
    with pytest.raises(KeyboardInterrupt):
        matrix.run(["internal", "hostonly", "nat"], ["virtio"], tmp_path, progress=lambda m: None)
    kinds = [c for c in fake.calls]
    assert ("destroy", "mx-hostonly-virtio") in kinds
    assert kinds[-1][0] == "sandbox down"
    assert ("up", "mx-nat-virtio") not in kinds
    partial = json.loads((tmp_path / "summary.json").read_text())
    assert not partial["complete"] and [l["lab"] for l in partial["labs"]] == ["mx-internal-virtio"]


def test_an_existing_lab_of_the_same_name_is_left_alone(monkeypatch, tmp_path):
    fake = Fake(monkeypatch)
    monkeypatch.setattr(state, "read", lambda target, name: {"lab": name})
    summary = matrix.run(["internal"], ["virtio"], tmp_path, sandbox_name="keep",
                         progress=lambda m: None)
    assert summary["labs"][0]["verdict"] == "error"
    assert not [c for c in fake.calls if c[0] in ("up", "destroy")]


def test_cli_rejects_unknown_modes_with_exit_2(tmp_path):
    result = CliRunner().invoke(main, ["matrix", "--modes", "internal,bogus",
                                       "--report-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert "unknown mode 'bogus'" in result.output and "natnetwork" in result.output
    assert not (tmp_path / "summary.json").exists()


def test_cli_prints_one_table_and_exits_with_the_matrix_status(monkeypatch, tmp_path):
    Fake(monkeypatch, red=["mx-internal-virtio"])
    result = CliRunner().invoke(main, ["matrix", "--modes", "internal", "--nic-models", "virtio",
                                       "--report-dir", str(tmp_path)])
    assert result.exit_code == 1, result.output
    assert result.output.count("cells ok/total") == 1 and "RED" in result.output


def test_an_unexpected_exception_is_one_lab_error_not_the_end(monkeypatch, tmp_path):
    fake = Fake(monkeypatch, crash=["mx-internal-virtio"])
    summary = matrix.run(["internal", "hostonly"], ["virtio"], tmp_path, progress=lambda m: None)
    assert [lab["verdict"] for lab in summary["labs"]] == ["error", "green"]
    assert "unexpected KeyError" in summary["labs"][0]["detail"]
    assert ("destroy", "mx-internal-virtio") in fake.calls
    assert matrix.exit_status(summary) == 3
