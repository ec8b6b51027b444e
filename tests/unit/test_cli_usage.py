"""Usage errors are one line and come before any work (issue 10, point 3): a bad choice on the
command line prints `vnet: error: ...` naming the option and its choices, exit 2; `--report`
without `--out` is refused before the lab file is read or anything is built."""
from __future__ import annotations

import pytest
from click.testing import CliRunner

from provisioner.guest import images
from provisioner.lab import loader as labfile
from provisioner.drivers.libvirt import lifecycle
from provisioner.host import state
from provisioner.cli import main
from provisioner.drivers.virtualbox import lifecycle as vbox_exec


def one_line(result) -> str:
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vnet: error: "), result.output
    return lines[0]


def test_a_bad_choice_is_one_line_naming_the_option_and_the_choices():
    line = one_line(CliRunner().invoke(main, ["create", "--mode", "bogus", "--dry-run"]))
    assert "'--mode'" in line and "'bogus'" in line
    assert all(mode in line for mode in ("nat", "natnetwork", "hostonly", "internal", "bridged"))


@pytest.mark.parametrize("argv", [["sandbox", "up", "--bogus"], ["--bogus"], ["create"],
                                  ["nonesuch"]], ids=["nested", "root", "missing", "command"])
def test_other_usage_errors_are_one_line_too(argv):
    one_line(CliRunner().invoke(main, argv))


def test_help_is_unchanged():
    result = CliRunner().invoke(main, ["create", "--help"])
    assert result.exit_code == 0 and result.output.startswith("Usage: ")


@pytest.fixture
def nothing_may_run(monkeypatch, tmp_path):
    """Everything `up`, `create` and `verify` would do first is replaced by a recorder."""
    called = []
    for module, name in ((labfile, "load"), (labfile, "resolve"), (images, "build_tiny"),
                         (lifecycle, "up"), (vbox_exec, "up"), (state, "read")):
        monkeypatch.setattr(module, name, lambda *a, _name=name, **kw: called.append(_name))
    monkeypatch.setenv("VNET_STATE_DIR", str(tmp_path / "state"))
    return called


@pytest.mark.parametrize("argv", [["up", "lab.yaml", "--report", "json"],
                                  ["up", "lab.yaml", "--report", "junit", "--backend", "virtualbox"],
                                  ["create", "--mode", "internal", "--report", "json"],
                                  ["verify", "internal", "--report", "junit"]],
                         ids=["up", "up-virtualbox", "create", "verify"])
def test_report_without_out_is_refused_before_anything_is_built(nothing_may_run, tmp_path, argv):
    lab = tmp_path / "lab.yaml"
    lab.write_text("name: x\nnetworks: [{name: n, mode: internal}]\n"
                   "vms: [{name: a, nics: [{network: n}]}]\n")
    argv = [str(lab) if a == "lab.yaml" else a for a in argv]
    line = one_line(CliRunner().invoke(main, argv))
    assert "--report needs --out FILE" in line
    assert nothing_may_run == []
    assert not (tmp_path / "state").exists()


@pytest.mark.parametrize("argv", [
    ["create", "--mode", "natnetwork"], ["up", "lab.yaml"], ["destroy", "lab"], ["gc"],
    ["list"], ["status", "lab"], ["verify", "lab"], ["doctor"]])
def test_a_sandbox_and_a_uri_together_are_refused_before_any_work(argv, monkeypatch):
    """Combined, the URI won: the lab's networks went to the machine's own libvirtd while its
    record said "sandbox"."""
    def no_target(*args, **kwargs):
        raise AssertionError("a target was opened")
    monkeypatch.setattr(lifecycle, "target_for", no_target)
    line = one_line(CliRunner().invoke(main, [*argv, "--sandbox", "s", "--uri",
                                              "qemu:///system"]))
    assert "--sandbox and --uri exclude each other" in line


@pytest.mark.parametrize("backend,key", [("libvirt", "documents"), ("virtualbox", "commands")])
def test_a_dry_run_with_format_json_prints_the_plan_as_json(backend, key):
    """It printed the XML plan with --format json (json.tool refused it)."""
    import json

    result = CliRunner().invoke(main, ["create", "--mode", "natnetwork", "--dry-run",
                                       "--backend", backend, "--format", "json"])
    assert result.exit_code == 0, result.output
    plan = json.loads(result.output)
    assert plan["lab"] == "natnetwork" and plan["backend"] == backend and plan[key]


def test_a_report_of_a_dry_run_is_refused():
    line = one_line(CliRunner().invoke(main, ["create", "--mode", "nat", "--dry-run",
                                              "--report", "json", "--out", "r.json"]))
    assert "--report" in line and "dry run" in line


@pytest.mark.parametrize("argv,named", [
    (["--mode", "natnetwork", "--bridge", "br0"], "--bridge"),
    (["--mode", "bridged", "--nic-model", "sriov"], "--pf"),
    (["--mode", "natnetwork", "--pf", "eth0"], "--pf"),
    (["--mode", "nat", "--tunnel", "vxlan"], "--tunnel"),
    (["--mode", "natnetwork", "--nic-model", "sriov", "--pf", "eth0"], "--nic-model"),
    (["--mode", "bridged", "--bridge", "br0\n"], "--bridge"),       # values resolve refuses
    (["--mode", "bridged", "--nic-model", "sriov", "--pf", "a b"], "--pf"),
    (["--mode", "nat", "--name", "Bad_Name"], "--name"),
])
def test_create_names_the_option_not_a_field_of_a_lab_file_nobody_wrote(argv, named):
    line = one_line(CliRunner().invoke(main, ["create", *argv, "--dry-run"]))
    assert line.startswith(f"vnet: error: {named}") or f" {named} " in line, line
    assert "networks." not in line and "vms." not in line and "tunnels." not in line
