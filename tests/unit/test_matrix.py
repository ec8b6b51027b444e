"""vnet matrix with a FAKE driver registered for the backend (drivers/base.py's registry):
verdicts, files, exit codes, and the temporary sandbox removed whatever happens (Ctrl-C
included). The matrix reaches the fake only through the Driver contract and the ops layer."""
import json
import xml.etree.ElementTree as ET

import pytest
from click.testing import CliRunner

from types import SimpleNamespace

from provisioner import doctor
from provisioner.drivers import base as drivers
from provisioner.ops import matrix
from provisioner.host import sandbox, state
from provisioner.verify import run as verifier
from provisioner.cli import main
from provisioner.doctor import error
from provisioner.errors import HypervisorError, Unsupported
from provisioner.host.state import Target
from provisioner.lab.model import Backend

REPLACED: dict = {}      # backend -> the driver a Fake replaced in the registry


def real_drivers_back() -> None:
    """Put back the drivers the Fakes replaced (tests/unit/conftest.py, after every test, so
    a module that borrows Fake cannot leave a fake in the registry for the next tests)."""
    for backend, previous in REPLACED.items():
        drivers.register(backend, previous)
    REPLACED.clear()


class Fake:
    """A FAKE driver registered for `backend`: records what the matrix did; lab outcomes are
    chosen per lab name."""

    def __init__(self, monkeypatch, red=(), broken=(), interrupt=(), no_hardware=(), crash=(),
                 backend=Backend.LIBVIRT):
        self.calls, self.crash = [], crash
        self.red, self.broken, self.interrupt, self.no_hardware = red, broken, interrupt, no_hardware
        fake = self

        class FakeDriver(drivers.Driver):
            @classmethod
            def target_for(cls, sandbox_name, uri):
                return Target(uri=f"qemu:///system?socket=/x/{sandbox_name}",
                              sandbox=sandbox_name, netns=f"vnet-{sandbox_name}-host")

            def up(self, lab, progress, wait=True):
                return fake.up(lab, self.target, progress)

            def destroy(self, lab_name, progress):
                return fake.destroy(lab_name, progress)

            def status(self, lab_name):
                raise AssertionError("the matrix asks no status")

            def labs(self):
                return []

            def gc(self, progress):
                return []
        FakeDriver.backend = Backend(backend)
        REPLACED.setdefault(FakeDriver.backend, drivers.register(backend, FakeDriver))
        monkeypatch.setattr(sandbox, "up", lambda name, progress: self.calls.append(("sandbox up", name)))
        monkeypatch.setattr(sandbox, "down", lambda name, progress: self.calls.append(("sandbox down", name)))
        monkeypatch.setattr(verifier, "verify", self.verify)
        monkeypatch.setattr(state, "read", lambda target, name: None)
        monkeypatch.setattr(doctor, "diagnose", lambda backend, sandbox, progress: SimpleNamespace(
            errors=[], of=lambda level: [], as_json=lambda: {"status": "warn", "findings": [],
                                                              "backend": Backend(backend).value}))

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

    def destroy(self, lab_name, say):
        self.calls.append(("destroy", lab_name))
        return []

    def verify(self, lab, target, say, timings=None, inventory=None):
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


def test_the_matrix_runs_on_any_registered_backend(monkeypatch, tmp_path):
    """A FAKE VirtualBox driver in the registry: the matrix plans with that backend's renderer
    (bridged x vdpa is libvirt-only), creates, verifies and destroys through the driver, and
    leaves libvirt's driver alone."""
    fake = Fake(monkeypatch, backend=Backend.VIRTUALBOX)

    def no_libvirt(*a, **k):
        raise AssertionError("the matrix asked libvirt")
    libvirt = drivers.driver_class(Backend.LIBVIRT)
    monkeypatch.setattr(libvirt, "target_for", classmethod(no_libvirt))
    monkeypatch.setattr(libvirt, "up", no_libvirt)
    summary = matrix.run(["hostonly", "bridged"], ["virtio", "vdpa"], tmp_path,
                         progress=lambda m: None, backend="virtualbox")
    assert [(lab["lab"], lab["verdict"]) for lab in summary["labs"]] == [
        ("mx-hostonly-virtio", "green"), ("mx-hostonly-vdpa", "unsupported"),
        ("mx-bridged-virtio", "green"), ("mx-bridged-vdpa", "unsupported")]
    assert summary["doctor"]["backend"] == "virtualbox"
    assert [c for c in fake.calls if c[0] in ("up", "destroy")] == [
        ("up", "mx-hostonly-virtio"), ("destroy", "mx-hostonly-virtio"),
        ("up", "mx-bridged-virtio"), ("destroy", "mx-bridged-virtio")]
    report = json.loads((tmp_path / "mx-bridged-vdpa.json").read_text())
    assert report["backend"] == "virtualbox" and report["unsupported"]
