"""The probe module precompiled into the tiny image (provisioner/guest/bakedprobe.py) and the
action plugin that runs it in one SSH call (playbooks/action_plugins/vnet_probe.py)."""
from __future__ import annotations

import json
import os
import re
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
    assert re.fullmatch(r"/usr/lib/vnet/probe-[0-9a-f]{16}/__pycache__/vnet_probe\.cpython-311\.pyc",
                        bakedprobe.baked_path(one))


def test_the_guest_side_and_the_command_agree_on_the_warm_copys_answer():
    """The marker is written twice (the guest's module cannot import vnet): checked here."""
    module = playbook_code("library", "vnet_probe")
    assert module.WARM_ACCEPTED.decode() == bakedprobe.WARM_ACCEPTED


def compiled_probe(tmp_path):
    """The probe compiled by the image build's own compileall step, into tmp_path (this
    interpreter stands in for the guest's when both are 3.11); -> the bytecode's path."""
    if sys.version_info[:2] != (3, 11):
        pytest.skip("the guest's bytecode is Python 3.11's: run the tests with a Python 3.11 "
                    "(as .ci/setup does)")
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


def started_warm_copy(tmp_path, pyc, port) -> int:
    """Run once, so the run leaves its warm copy on `port`; -> the copy's PID."""
    run_command(tmp_path, pyc, port)
    for _ in range(50):
        if (pid := warm_pid(port)) is not None:
            return pid
        time.sleep(0.1)
    raise AssertionError("no warm copy listens after a run")


def test_the_warm_copy_runs_each_request_with_its_own_arguments(warm, tmp_path):
    pyc, port = warm
    started_warm_copy(tmp_path, pyc, port)
    for macs in (["52:54:00:00:00:01"], ["52:54:00:00:00:02", "52:54:00:00:00:03"]):
        ran = run_command(tmp_path, pyc, port, json.dumps({"probes": [], "nic_macs": macs}))
        out = json.loads(ran.stdout)
        assert out["timing"]["warm"] is True and sorted(out["drivers"]) == macs


def test_a_warm_copy_that_fails_says_why_and_nothing_runs_twice(warm, tmp_path):
    pyc, port = warm
    started_warm_copy(tmp_path, pyc, port)
    ran = run_command(tmp_path, pyc, port, stdin="not json\n")
    out = json.loads(ran.stdout)
    assert out["failed"] is True and "warm copy" in out["msg"] and "not JSON" in out["msg"]


def test_a_warm_copy_that_took_the_run_and_died_is_a_failure_not_a_second_run(warm, tmp_path):
    """Its child is killed while a probe waits for an answer (a loopback listener that never
    answers): the run was taken, so the command reports that, and runs nothing again."""
    pyc, port = warm
    copy = started_warm_copy(tmp_path, pyc, port)
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        probe = {"id": "0", "target": "127.0.0.1", "port": silent.getsockname()[1],
                 "expect_name": "x", "timeout": 3.0, "answer_timeout": 30.0}
        env = guest_shell(tmp_path)
        cmd = subprocess.Popen([str(tmp_path / "bin" / "sh"), "-c",
                                bakedprobe.command(str(pyc), sys.executable, port=port)],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        cmd.stdin.write(json.dumps({"probes": [probe], "nic_macs": []}))
        cmd.stdin.close()
        for _ in range(100):        # the warm copy's child, waiting for the silent answer
            children = Path(f"/proc/{copy}/task/{copy}/children").read_text().split()
            if children:
                break
            time.sleep(0.05)
        os.kill(int(children[0]), signal.SIGKILL)
        out = json.loads(cmd.stdout.read())
        cmd.wait(timeout=30)
    assert out == {"failed": True,
                   "msg": "the warm probe copy took the run and ended without a result"}


def test_a_warm_copy_of_another_bytecode_is_not_used(warm, tmp_path):
    pyc, port = warm
    started_warm_copy(tmp_path, pyc, port)
    other = tmp_path / "other" / pyc.name
    other.parent.mkdir()
    other.write_bytes(pyc.read_bytes())          # another path: another version, to the copy
    ran = run_command(tmp_path, other, port)
    assert json.loads(ran.stdout)["timing"]["warm"] is False


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


def test_a_guest_cannot_set_ansibles_internal_keys(monkeypatch):
    """The baked result is the guest's own JSON: the keys Ansible keeps for itself are dropped,
    as _execute_module drops them from a module's result."""
    out = {"probes": {}, "_ansible_no_log": True, "_ansible_verbose_always": True}
    result, _ = plugin_run(monkeypatch, {"rc": 0, "stdout": json.dumps(out), "stderr": ""})
    assert "probes" in result and not any(k.startswith("_ansible_") for k in result)
