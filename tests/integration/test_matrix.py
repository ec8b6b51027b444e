"""`vnet matrix` for real, kept small (the full mode x model matrix runs in test_labs.py): two
modes with virtio in a temporary sandbox (by default in one shared lab), its files and exit
code; and Ctrl-C removing the temporary sandbox."""
import json
import os
import signal
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET

import pytest

from provisioner.host import sandbox, state

pytestmark = pytest.mark.integration
VNET = os.path.join(os.path.dirname(sys.executable), "vnet")


def namespaces() -> set[str]:
    """Every network namespace: compare only a run's own (other people's sandboxes come and
    go on a shared machine)."""
    return set(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else set()


def test_matrix_two_modes_writes_reports_and_removes_its_sandbox(tiny_image, tmp_path):
    report_dir = tmp_path / "tmp"
    before = namespaces()
    result = subprocess.run([VNET, "matrix", "--modes", "internal,hostonly", "--nic-models",
                             "virtio", "--report-dir", str(report_dir)],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    summary = json.loads((report_dir / "summary.json").read_text())
    assert summary["complete"] and summary["temporary_sandbox"] and summary["exit_code"] == 0
    labs = {lab["lab"]: lab for lab in summary["labs"]}
    assert set(labs) == {"mx-internal-virtio", "mx-hostonly-virtio"}
    assert all(lab["verdict"] == "green" and lab["seconds"] > 0 for lab in labs.values())
    # by default the two modes shared one lab (virtio's), whose seconds each row carries
    assert summary["strategy"] == "shared"
    assert {lab["shared_lab"] for lab in labs.values()} == {"mx-shared-virtio"}
    [shared] = summary["shared_labs"]
    assert shared["modes"] == ["internal", "hostonly"]
    # labs run at once (--jobs default): the wall time covers the longest lab; one at a time, all
    seconds = [lab["seconds"] for lab in summary["shared_labs"]]
    assert summary["wall_seconds"] >= (sum(seconds) if summary["jobs"] == 1 else max(seconds))
    assert summary["doctor"]["sandbox"] == summary["sandbox"]
    for name, lab in labs.items():
        report = json.loads((report_dir / f"{name}.json").read_text())
        assert report["ok"] and report["lab"] == name and report["matrix"]["verdict"] == "green"
        assert {c["network"] for c in report["checks"]} == {lab["mode"]}
        assert lab["cells_ok"] == lab["cells_total"] == len(report["checks"]) > 0
        junit = ET.parse(report_dir / f"{name}.xml").getroot()
        assert int(junit.get("tests")) == len(report["checks"]) and junit.get("failures") == "0"
    # one summary table on stdout: its header once, one row per lab
    assert result.stdout.count("cells ok/total") == 1
    rows = [line.split() for line in result.stdout.splitlines()
            if line.split()[:1] in (["internal"], ["hostonly"])]
    assert [r[:2] for r in rows] == [["internal", "virtio"], ["hostonly", "virtio"]]
    # the temporary sandbox is gone: namespaces and state
    box = sandbox.describe(summary["sandbox"])
    assert {n for n in namespaces() - before if box.name in n} == set()
    assert not box.state_dir.exists()
    assert not state.target_dir(state.Target(uri="", sandbox=box.name)).exists()


def test_ctrl_c_removes_the_temporary_sandbox(tiny_image, tmp_path):
    before = namespaces()
    proc = subprocess.Popen([VNET, "matrix", "--modes", "internal", "--nic-models", "virtio",
                             "--report-dir", str(tmp_path)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    deadline = time.monotonic() + 120
    while not any("] creating" in line for line in lines) and time.monotonic() < deadline:
        assert proc.poll() is None, "".join(lines)
        time.sleep(0.1)
    time.sleep(2)                         # inside lifecycle.up: domains being defined or booting
    created = namespaces() - before
    assert created, "".join(lines)        # the temporary sandbox exists now
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=120) == 130, "".join(lines)
    reader.join(timeout=10)
    output = "".join(lines)
    assert "removing temporary sandbox" in output and "partial results" in output
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert {n for n in namespaces() - before if summary["sandbox"] in n} == set(), output
    assert not summary["complete"]
    assert not sandbox.describe(summary["sandbox"]).state_dir.exists()
