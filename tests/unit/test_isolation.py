"""No helper vnet starts imports a module from the caller's directory (issue 10, point 4).

vnet runs as root; `cd /tmp && vnet up lab.yaml` must not run a planted /tmp/asyncio.py. Each
helper's real command line runs here from a directory full of planted standard-library names
(and with PYTHONPATH pointing there): every planted module would write a marker file."""
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from provisioner import forwarding, images, sandbox, verify
from provisioner.resources import data_dir

PLANTED = ("asyncio", "json", "socket", "argparse", "runpy", "time", "struct", "threading",
           "compileall", "functools", "http", "socketserver", "secrets", "errno", "dataclasses",
           "selectors", "signal", "sitecustomize", "usercustomize")


@pytest.fixture
def trap(tmp_path) -> Path:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    for name in PLANTED:
        (cwd / f"{name}.py").write_text(
            f"open({str(tmp_path / 'PLANTED-RAN')!r}, 'a').write({name!r} + '\\n')\n"
            "raise SystemExit('planted module ran')\n")
    return cwd


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_until_ready(argv, cwd: Path, log: Path, word: str) -> None:
    """Start argv in cwd (PYTHONPATH there too), wait until it logs `word`, then end it."""
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(cwd)}
    with open(log, "w") as out:
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while word not in log.read_text():
            assert proc.poll() is None, f"exited {proc.returncode}: {log.read_text()}"
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.02)
    finally:
        proc.kill()
        proc.wait()


def assert_nothing_planted_ran(trap: Path) -> None:
    marker = trap.parent / "PLANTED-RAN"
    assert not marker.exists(), f"planted module(s) imported: {marker.read_text().split()}"


def test_port_proxy_imports_nothing_from_the_callers_directory(trap):
    rules = [{"proto": p, "host_ip": "127.0.0.1", "host_port": free_port(),
              "guest_ip": "127.0.0.1", "guest_port": 9} for p in ("tcp", "udp")]
    run_until_ready(forwarding.proxy_argv(trap.parent, rules), trap, trap.parent / "log", "ready")
    assert_nothing_planted_ran(trap)


def test_verifier_listener_imports_nothing_from_the_callers_directory(trap):
    script = str(data_dir("playbooks") / "library" / "vnet_probe.py")
    argv = verify.listener_argv(script, free_port(), "host", "127.0.0.1")
    run_until_ready(argv, trap, trap.parent / "log", "ready")
    assert_nothing_planted_ran(trap)


def test_sandbox_http_service_imports_nothing_from_the_callers_directory(trap):
    argv = sandbox.http_argv("127.0.0.1", free_port(), trap.parent)
    run_until_ready(argv, trap, trap.parent / "log", "serving")
    assert_nothing_planted_ran(trap)


def test_image_build_compile_step_imports_nothing_from_the_callers_directory(trap, tmp_path):
    if sys.version_info[:2] != (3, 11):
        pytest.skip("the guest-interpreter branch needs a built guest root; this host's Python "
                    "is not 3.11")
    stdlib = tmp_path / "stdlib"
    stdlib.mkdir()
    (stdlib / "mod.py").write_text("X = 1\n")
    argv, env = images.compile_command(tmp_path, stdlib)
    subprocess.run(argv, cwd=trap, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(trap),
                                        **(env or {})}, check=True, capture_output=True)
    assert list((stdlib / "__pycache__").glob("mod.*.pyc"))
    assert_nothing_planted_ran(trap)
