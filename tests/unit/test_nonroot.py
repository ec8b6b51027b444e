"""Non-root callers and unreachable libvirt URIs (issue 10, point 11): one error line, exit 2
(NeedsRoot: BAD_INPUT, nothing was read or written) or 3 (an unreachable URI: ENVIRONMENT), and
nothing written under the state root or the image cache."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from click.testing import CliRunner

from provisioner import images
from provisioner.cli import main
from tests.conftest import ROOT

LAB = str(ROOT / "tests" / "golden" / "hostonly" / "lab.yaml")
NEEDS_ROOT = [
    ["sandbox", "up", "h3n"],
    ["sandbox", "down", "h3n"],
    ["sandbox", "exec", "h3n", "--", "true"],
    ["up", LAB, "--sandbox", "h3n"],
    ["create", "--mode", "hostonly", "--sandbox", "h3n"],
    ["destroy", "x", "--sandbox", "h3n"],
    ["gc", "--sandbox", "h3n"],
    ["list", "--sandbox", "h3n"],
    ["status", "x", "--sandbox", "h3n"],
    ["verify", "x", "--sandbox", "h3n"],
    ["matrix", "--modes", "hostonly", "--report-dir", "REPORTS"],
]


@pytest.fixture
def dirs(tmp_path, monkeypatch):
    monkeypatch.setenv("VNET_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("VNET_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path


def one_error_line(stderr: str) -> str:
    errors = [line for line in stderr.splitlines() if line.startswith("vnet: error:")]
    assert len(errors) == 1 and "Traceback" not in stderr, stderr
    return errors[0]


@pytest.mark.parametrize("argv", NEEDS_ROOT, ids=lambda a: " ".join(a[:2]))
def test_every_root_command_says_so_in_one_line_and_writes_nothing(dirs, monkeypatch, argv):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    argv = [str(dirs / "reports") if a == "REPORTS" else a for a in argv]
    result = CliRunner().invoke(main, argv)
    assert result.exit_code == 2, result.output
    line = one_error_line(result.stderr)
    assert "needs root" in line and "uid 1000" in line
    assert list(dirs.iterdir()) == []


@pytest.mark.skipif(not shutil.which("setpriv"), reason="setpriv (util-linux) is missing")
@pytest.mark.skipif(os.geteuid() != 0, reason="switching to nobody with setpriv needs root")
@pytest.mark.parametrize("argv", [["sandbox", "down", "h3n"], ["sandbox", "up", "h3n"]])
def test_sandbox_commands_as_nobody(tmp_path, argv):
    """The real thing: the CLI as uid 65534 (nobody), no patching."""
    env = {**os.environ, "VNET_STATE_DIR": str(tmp_path / "state"), "PYTHONDONTWRITEBYTECODE": "1"}
    nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable]
    if subprocess.run([*nobody, "-c", "import provisioner.cli"], cwd=ROOT, env=env,
                      capture_output=True).returncode != 0:
        pytest.skip(f"nobody cannot run {sys.executable} with this checkout (a python or a "
                    "checkout under a private home directory)")
    result = subprocess.run([*nobody, "-c", "from provisioner.cli import main; main()", *argv],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert "needs root" in one_error_line(result.stderr) and "uid 65534" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_up_checks_the_libvirt_uri_before_building_anything(dirs, monkeypatch):
    monkeypatch.setattr(images, "build_tiny", lambda **kw: pytest.fail("built the image"))
    uri = f"qemu:///system?socket={dirs}/no-such-dir/libvirt-sock"
    result = CliRunner().invoke(main, ["up", LAB, "--uri", uri])
    assert result.exit_code == 3, result.output
    line = one_error_line(result.stderr)
    assert f"cannot connect to libvirt at {uri}" in line
    assert list(dirs.iterdir()) == []
