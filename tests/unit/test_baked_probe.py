"""The probe module precompiled into the tiny image (provisioner/guest/bakedprobe.py) and the
action plugin that runs it in one SSH call (playbooks/action_plugins/vnet_probe.py)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from unittest.mock import ANY

import pytest

from provisioner.guest import bakedprobe, buildtree
from provisioner.resources import data_dir, playbook_code

ARGS = json.dumps({"probes": [], "nic_macs": []})


def test_the_baked_path_is_named_by_the_source_so_a_stale_copy_is_never_run():
    one, other = b"print(1)\n", b"print(2)\n"
    assert bakedprobe.baked_path(one) != bakedprobe.baked_path(other)
    assert bakedprobe.baked_path(one) == bakedprobe.baked_path(one)
    # compileall puts the bytecode of source_rel() exactly where baked_path() looks
    src = bakedprobe.source_rel(one)
    assert bakedprobe.baked_path(one) == (
        f"/{src.rsplit('/', 1)[0]}/__pycache__/vnet_probe.{bakedprobe.GUEST_PYTHON_TAG}.pyc")


def compiled_probe(tmp_path):
    """The probe compiled by the image build's own compileall step, into tmp_path (this
    interpreter stands in for the guest's when both are 3.11); -> the bytecode's path."""
    source = bakedprobe.probe_source()
    rel = tmp_path / bakedprobe.source_rel(source)
    rel.parent.mkdir(parents=True)
    rel.write_bytes(source)
    argv, env = buildtree.compile_command(tmp_path, tmp_path / "usr" / "lib" / "vnet")
    subprocess.run(argv, env=env, check=True, cwd="/")
    return tmp_path / bakedprobe.baked_path(source).lstrip("/").replace(
        bakedprobe.GUEST_PYTHON_TAG, sys.implementation.cache_tag)


def test_the_builder_compiles_the_probe_where_the_plugin_looks(tmp_path):
    built = compiled_probe(tmp_path)
    assert built.is_file()
    ran = subprocess.run([sys.executable, "-I", "-S", str(built), "-"], input=ARGS,
                         capture_output=True, text=True, check=True)
    assert json.loads(ran.stdout)["timing"]["baked"] is True


def guest_shell(tmp_path):
    """The guest's tools for the command: busybox sh and its nc (as in the image)."""
    busybox = shutil.which("busybox")
    if busybox is None:
        pytest.skip("busybox is not installed (.ci/setup installs busybox-static)")
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    for applet in ("sh", "nc"):
        if not (bindir / applet).exists():
            (bindir / applet).symlink_to(busybox)
    return {"PATH": f"{bindir}:/usr/bin:/bin"}


def run_command(tmp_path, pyc, port, stdin=ARGS):
    env = guest_shell(tmp_path)
    command = bakedprobe.command(str(pyc), sys.executable, port=port)
    return subprocess.run([str(tmp_path / "bin" / "sh"), "-c", command], input=stdin, env=env,
                          capture_output=True, text=True, timeout=60)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def warm_pid(port: int) -> int | None:
    """The PID of the process listening on loopback `port` (the warm copy), from /proc."""
    inodes = {line.split()[9] for line in open("/proc/net/tcp").read().splitlines()[1:]
              if line.split()[1] == f"0100007F:{port:04X}" and line.split()[3] == "0A"}
    for fd in Path("/proc").glob("[0-9]*/fd/*"):
        try:
            if os.readlink(fd).removeprefix("socket:[").rstrip("]") in inodes:
                return int(fd.parts[2])
        except OSError:
            continue
    return None


@pytest.fixture
def warm(tmp_path):
    """A compiled probe and a free port; the warm copy a test leaves there is ended after."""
    pyc, port = compiled_probe(tmp_path), free_port()
    yield pyc, port
    for _ in range(50):               # the warm copy detaches: end it by the PID on its port
        pid = warm_pid(port)
        if pid is None:
            return
        os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)


def test_the_guest_side_and_the_command_agree_on_how_to_stay_warm(warm, tmp_path):
    """The first run is a fresh Python on the bytecode; the SSH call ends with its result
    (nothing holds its streams), and it leaves a warm copy on the port, which the next runs
    are handed to, each in a child of its own. With the copy gone, a fresh Python runs again."""
    pyc, port = warm
    first = run_command(tmp_path, pyc, port)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["timing"] == {
        "python_start_s": ANY, "probes_s": ANY, "forwards_wait_s": ANY, "baked": True,
        "warm": False}
    for _ in range(50):
        if warm_pid(port):
            break
        time.sleep(0.1)
    copy = warm_pid(port)
    assert copy is not None
    for _ in range(2):
        ran = run_command(tmp_path, pyc, port)
        assert ran.returncode == 0, ran.stderr
        assert json.loads(ran.stdout)["timing"]["warm"] is True
    assert warm_pid(port) == copy                 # one warm copy, not one per run
    os.kill(copy, signal.SIGKILL)
    for _ in range(50):
        if warm_pid(port) is None:
            break
        time.sleep(0.1)
    assert json.loads(run_command(tmp_path, pyc, port).stdout)["timing"]["warm"] is False


def test_the_command_says_when_the_guest_lacks_this_bytecode(tmp_path):
    ran = run_command(tmp_path, tmp_path / "none.pyc", free_port())
    assert ran.stdout.strip() == bakedprobe.MISSING
    assert "'python3; rm -rf /'" in bakedprobe.command("/x.pyc", "python3; rm -rf /")


def test_a_warm_copy_that_fails_says_why_and_nothing_runs_twice(warm, tmp_path):
    pyc, port = warm
    run_command(tmp_path, pyc, port)            # leaves the warm copy
    for _ in range(50):
        if warm_pid(port):
            break
        time.sleep(0.1)
    ran = run_command(tmp_path, pyc, port, stdin="not json\n")
    out = json.loads(ran.stdout)
    assert out["failed"] is True and "warm copy" in out["msg"] and "JSONDecodeError" in out["msg"]


def plugin_run(monkeypatch, ran: dict, args: dict | None = None):
    """The plugin's run() against a fake connection: `ran` is what the guest returned."""
    module = playbook_code("action_plugins", "vnet_probe")
    monkeypatch.setattr(module.ActionBase, "run", lambda self, tmp=None, task_vars=None: {})
    action = module.ActionModule.__new__(module.ActionModule)
    action._task = SimpleNamespace(args=args or {"probes": [{"id": "0"}]})
    calls: dict = {"sent": [], "module": 0, "removed": 0}

    def low_level(cmd, in_data=None, **_):
        calls["sent"].append((cmd, in_data))
        return ran

    def execute_module(task_vars=None):
        calls["module"] += 1
        return {"probes": {"0": {"outcome": "pass"}}, "sent": True}
    action._low_level_execute_command = low_level
    action._execute_module = execute_module
    action._remove_tmp_path = lambda path: calls.__setitem__("removed", calls["removed"] + 1)
    action._connection = SimpleNamespace(_shell=SimpleNamespace(tmpdir=None))
    library = str(data_dir("playbooks") / "library" / "vnet_probe.py")
    action._shared_loader_obj = SimpleNamespace(module_loader=SimpleNamespace(
        find_plugin=lambda name: library if name == "vnet_probe" else None))
    return action.run(task_vars={"ansible_python_interpreter": "/usr/bin/python3"}), calls


def test_the_plugin_runs_the_baked_probe_in_one_call_with_the_arguments_on_stdin(monkeypatch):
    out = {"changed": False, "probes": {"0": {"outcome": "fail"}}, "timing": {"baked": True}}
    result, calls = plugin_run(monkeypatch, {"rc": 0, "stdout": json.dumps(out), "stderr": ""})
    assert result["probes"] == out["probes"] and calls["module"] == 0
    (cmd, stdin), = calls["sent"]
    assert bakedprobe.baked_path(bakedprobe.probe_source()) in cmd
    assert json.loads(stdin) == {"probes": [{"id": "0"}]}


def test_a_guest_without_the_bytecode_gets_the_module_sent_as_usual(monkeypatch):
    result, calls = plugin_run(monkeypatch, {"rc": 0, "stdout": bakedprobe.MISSING + "\n",
                                             "stderr": ""})
    assert calls["module"] == 1 and calls["removed"] == 1
    assert result["sent"] is True and result["probes"]["0"]["outcome"] == "pass"


def test_a_baked_run_that_fails_says_what_the_guest_printed(monkeypatch):
    result, calls = plugin_run(monkeypatch, {"rc": 1, "stdout": "",
                                             "stderr": "Traceback: boom"})
    assert result["failed"] is True and result["stderr"] == "Traceback: boom"
    assert "exit 1" in result["msg"] and calls["module"] == 0
    garbled, _ = plugin_run(monkeypatch, {"rc": 0, "stdout": "not json", "stderr": ""})
    assert garbled["failed"] is True and garbled["stdout"] == "not json"
