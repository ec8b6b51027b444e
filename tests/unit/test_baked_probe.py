"""The probe module precompiled into the tiny image (provisioner/guest/bakedprobe.py) and the
action plugin that runs it in one SSH call (playbooks/action_plugins/vnet_probe.py)."""
from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
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
    """The guest's tools for the command: busybox sh and its nc, seq, sleep (as in the image)."""
    busybox = shutil.which("busybox")
    if busybox is None:
        pytest.skip("busybox is not installed (.ci/setup installs busybox-static)")
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    for applet in ("sh", "nc", "seq", "sleep"):
        if not (bindir / applet).exists():
            (bindir / applet).symlink_to(busybox)
    return {"PATH": f"{bindir}:/usr/bin:/bin"}


def run_command(tmp_path, pyc, port, pidfile, stdin=ARGS):
    env = guest_shell(tmp_path)
    command = bakedprobe.command(str(pyc), sys.executable, port=port, pidfile=str(pidfile))
    return subprocess.run([str(tmp_path / "bin" / "sh"), "-c", command], input=stdin, env=env,
                          capture_output=True, text=True, timeout=60)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_command_says_when_the_guest_lacks_this_bytecode(tmp_path):
    ran = run_command(tmp_path, tmp_path / "none.pyc", free_port(), tmp_path / "pid")
    assert ran.stdout.strip() == bakedprobe.MISSING
    assert "'python3; rm -rf /'" in bakedprobe.command("/x.pyc", "python3; rm -rf /")


def test_without_a_warm_copy_the_command_runs_the_bytecode_with_stdin(tmp_path):
    pyc = compiled_probe(tmp_path)
    ran = run_command(tmp_path, pyc, free_port(), tmp_path / "no-such-pid")
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["timing"] == {
        "python_start_s": ANY, "probes_s": ANY, "forwards_wait_s": ANY, "baked": True,
        "standby": False}


def test_the_warm_copy_answers_and_a_slow_one_is_waited_for(tmp_path):
    """The standby the init starts at boot: the command hands it the arguments, also when it
    is still starting (its PID lives, its port is not open yet); each request in its own
    child, so it answers again. Killed, the command runs the bytecode itself."""
    pyc = compiled_probe(tmp_path)
    port, pidfile = free_port(), tmp_path / "standby.pid"
    late = subprocess.Popen(["sh", "-c", f"sleep 1; exec {sys.executable} -I -S {pyc} "
                             f"--standby {port}"])
    try:
        pidfile.write_text(f"{late.pid}\n")
        for _ in range(2):
            ran = run_command(tmp_path, pyc, port, pidfile)
            assert ran.returncode == 0, ran.stderr
            assert json.loads(ran.stdout)["timing"]["standby"] is True
    finally:
        late.kill()
        late.wait()
    ran = run_command(tmp_path, pyc, port, pidfile)
    assert json.loads(ran.stdout)["timing"]["standby"] is False


def test_a_warm_copy_that_fails_says_why_and_nothing_runs_twice(tmp_path):
    pyc = compiled_probe(tmp_path)
    port = free_port()
    standby = subprocess.Popen([sys.executable, "-I", "-S", str(pyc), "--standby", str(port)])
    try:
        (tmp_path / "pid").write_text(f"{standby.pid}\n")
        for _ in range(50):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        ran = run_command(tmp_path, pyc, port, tmp_path / "pid", stdin="not json\n")
    finally:
        standby.kill()
        standby.wait()
    out = json.loads(ran.stdout)
    assert out["failed"] is True and "standby" in out["msg"] and "JSONDecodeError" in out["msg"]


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
