"""The probe module precompiled into the tiny image (provisioner/guest/bakedprobe.py) and the
action plugin that runs it in one SSH call (playbooks/action_plugins/vnet_probe.py)."""
from __future__ import annotations

import json
import subprocess
import sys
from types import SimpleNamespace

from provisioner.guest import bakedprobe, buildtree
from provisioner.resources import data_dir, playbook_code


def test_the_baked_path_is_named_by_the_source_so_a_stale_copy_is_never_run():
    one, other = b"print(1)\n", b"print(2)\n"
    assert bakedprobe.baked_path(one) != bakedprobe.baked_path(other)
    assert bakedprobe.baked_path(one) == bakedprobe.baked_path(one)
    # compileall puts the bytecode of source_rel() exactly where baked_path() looks
    src = bakedprobe.source_rel(one)
    assert bakedprobe.baked_path(one) == (
        f"/{src.rsplit('/', 1)[0]}/__pycache__/vnet_probe.{bakedprobe.GUEST_PYTHON_TAG}.pyc")


def test_the_command_runs_the_bytecode_with_stdin_or_says_it_is_missing(tmp_path):
    source = bakedprobe.probe_source()
    command = bakedprobe.command(source, "/usr/bin/python3")
    missing = subprocess.run(["sh", "-c", command], capture_output=True, text=True)
    assert missing.stdout.strip() == bakedprobe.MISSING      # no such file on this machine
    assert "'" not in bakedprobe.command(source, "/usr/bin/python3")
    assert bakedprobe.command(source, "python3; rm -rf /").count("'python3; rm -rf /'") == 1


def test_the_builder_compiles_the_probe_where_the_plugin_looks(tmp_path):
    """The same compileall step the image build runs (this interpreter stands in for the
    guest's when both are 3.11), on a tree holding only the probe."""
    source = bakedprobe.probe_source()
    rel = tmp_path / bakedprobe.source_rel(source)
    rel.parent.mkdir(parents=True)
    rel.write_bytes(source)
    argv, env = buildtree.compile_command(tmp_path, tmp_path / "usr" / "lib" / "vnet")
    subprocess.run(argv, env=env, check=True, cwd="/")
    tag = sys.implementation.cache_tag
    built = tmp_path / bakedprobe.baked_path(source).lstrip("/").replace(
        bakedprobe.GUEST_PYTHON_TAG, tag)
    assert built.is_file()
    ran = subprocess.run([sys.executable, "-I", "-S", str(built), "-"],
                         input=json.dumps({"probes": [], "nic_macs": []}),
                         capture_output=True, text=True, check=True)
    assert json.loads(ran.stdout)["timing"]["baked"] is True


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
