"""Sandbox and netns logic that needs no root: names, paths, argv shapes, result transport."""
import json
import os
from pathlib import Path

import pytest

from provisioner.host import netns, paths, procs, runner, sandbox
from provisioner.errors import CommandFailed, ExitStatus, LabFileError, NotFound, VnetError


@pytest.fixture
def state(tmp_path, monkeypatch):
    monkeypatch.setenv("VNET_STATE_DIR", str(tmp_path))
    return tmp_path


@pytest.mark.parametrize("name", ["a", "default", "lab-1", "x2", "abcdefghijkl", "a-b-c"])
def test_valid_names(name):
    assert paths.validate_name(name) == name


@pytest.mark.parametrize("name", ["", "1lab", "-a", "Lab", "a_b", "a.b", "a b", "../x", "a/b",
                                  "abcdefghijklm", "ümlaut", None])
def test_invalid_names_name_the_alphabet(name):
    with pytest.raises(LabFileError) as err:
        paths.validate_name(name)
    assert err.value.status == ExitStatus.BAD_INPUT
    assert err.value.path == "sandbox name"
    assert "1-12 characters from a-z, 0-9 and '-', starting with a letter" in err.value.message
    assert "\n" not in err.value.message


def test_invalid_name_fails_before_anything_happens(state):
    for call in (sandbox.up, sandbox.down, sandbox.status, sandbox.load):
        with pytest.raises(LabFileError):
            call("Bad_Name")
    assert list(state.iterdir()) == []


def test_state_root_env_override(monkeypatch, tmp_path):
    monkeypatch.setenv("VNET_STATE_DIR", str(tmp_path / "s"))
    assert paths.state_root() == tmp_path / "s"


def test_state_root_defaults(monkeypatch, tmp_path):
    monkeypatch.delenv("VNET_STATE_DIR", raising=False)
    monkeypatch.delenv("XDG_STATE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert paths.state_root() == Path("/var/lib/vnet")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert paths.state_root() == tmp_path / ".local/state/vnet"
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert paths.state_root() == tmp_path / "xdg/vnet"


def test_describe_derives_everything_from_the_name(state):
    sb = sandbox.describe("lab-1")
    assert sb.state_dir == state / "sandboxes" / "lab-1"
    assert (sb.host_netns, sb.inet_netns) == ("vnet-lab-1-host", "vnet-lab-1-inet")
    assert sb.uri == f"qemu:///system?socket={state}/sandboxes/lab-1/run/libvirt-sock"
    assert (sb.lan_bridge, sb.lan_subnet, sb.host_lan_ip, sb.lan_gateway) == \
        ("lan0", "198.51.100.0/24", "198.51.100.2", "198.51.100.1")
    assert (sb.host_uplink_ip, sb.internet_ip) == ("203.0.113.2", "203.0.113.1")


def test_exec_argv_shape(state):
    sb = sandbox.describe("lab")
    assert sandbox.exec_argv(sb, ["virsh", "list", "--all"]) == [
        "ip", "netns", "exec", "vnet-lab-host",
        "env", f"LIBVIRT_DEFAULT_URI=qemu:///system?socket={state}/sandboxes/lab/run/libvirt-sock",
        "virsh", "list", "--all"]


def test_netns_argv_shape():
    assert netns.netns_argv("ns1", ["curl", "-s", "http://203.0.113.1/"]) == \
        ["ip", "netns", "exec", "ns1", "curl", "-s", "http://203.0.113.1/"]


def test_load_of_a_missing_sandbox_says_how_to_start_it(state):
    with pytest.raises(NotFound) as err:
        sandbox.load("nope")
    assert err.value.message == "sandbox nope is not up"
    assert err.value.hint == "vnet sandbox up nope"


def test_status_of_a_missing_sandbox_is_down_without_problems(state):
    st = sandbox.status("nope")
    assert st["up"] is False and st["problems"] == [] and st["libvirtd_pid"] is None
    assert st["namespaces"] == {"vnet-nope-host": False, "vnet-nope-inet": False}
    assert st["addresses"]["internet_ip"] == "203.0.113.1"
    json.dumps(st)


def test_status_of_leftover_state_lists_problems(state):
    (state / "sandboxes" / "crashed").mkdir(parents=True)
    (state / "sandboxes" / "crashed" / "libvirtd.pid").write_text("999999999\n")
    st = sandbox.status("crashed")
    assert st["up"] is False
    assert "libvirtd is not running" in st["problems"]
    assert "network namespace vnet-crashed-host is missing" in st["problems"]


def test_list_names_reads_state_dirs(state):
    for d in ("b-lab", "a", "Not_A_Name"):
        (state / "sandboxes" / d).mkdir(parents=True)
    names = sandbox.list_names()
    assert {"a", "b-lab"} <= set(names) and "Not_A_Name" not in names
    assert names == sorted(names)


def test_up_refuses_without_root_and_creates_nothing(state, monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(VnetError, match="needs root"):
        sandbox.up("lab", progress=lambda m: None)
    assert list(state.iterdir()) == []


def test_up_refuses_a_state_dir_too_long_for_a_socket(monkeypatch, tmp_path):
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(runner, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setenv("VNET_STATE_DIR", str(tmp_path / ("x" * 90)))
    with pytest.raises(VnetError, match="too long for a unix socket"):
        sandbox.up("lab", progress=lambda m: None)


def test_sandbox_files_are_shipped():
    for f in (sandbox.LAUNCHER, sandbox.HTTP_SERVER, sandbox.FILES / "libvirtd.conf",
              sandbox.FILES / "qemu.conf"):
        assert f.is_file(), f
    runner.run(["sh", "-n", str(sandbox.LAUNCHER)])
    assert "@RUN_DIR@" in (sandbox.FILES / "libvirtd.conf").read_text()


# ---- run_in_netns: the fork + result transport, without entering a namespace (no root)

def _boom_lab():
    raise LabFileError("vms.web.nics[1]", "no such network", hint="define it first")


def _boom_command():
    raise CommandFailed(["ip", "link"], 2, "RTNETLINK answers: File exists\n")


class _Local(Exception):
    def __init__(self, a, b):
        super().__init__(f"{a}/{b}")


def _raise_local():
    raise _Local(1, 2)


def test_child_returns_the_result():
    assert netns._call_in_child(None, lambda a, b=0: {"pid": os.getpid(), "sum": a + b},
                                (1,), {"b": 2})["sum"] == 3
    assert netns._call_in_child(None, os.getpid, (), {}) != os.getpid()


@pytest.mark.parametrize("fn,cls", [(_boom_lab, LabFileError), (_boom_command, CommandFailed),
                                    (_raise_local, _Local)])
def test_child_exceptions_keep_class_and_fields(fn, cls):
    with pytest.raises(cls) as err:
        netns._call_in_child(None, fn, (), {})
    if cls is LabFileError:
        assert (err.value.path, err.value.hint) == ("vms.web.nics[1]", "define it first")
        assert err.value.message == "vms.web.nics[1]: no such network"
    if cls is CommandFailed:
        assert err.value.argv == ["ip", "link"] and err.value.returncode == 2
    assert any("raised in a child process" in n for n in err.value.__notes__)


def test_child_unpicklable_result_is_an_error():
    with pytest.raises(TypeError, match="cannot be returned"):
        netns._call_in_child(None, lambda: (lambda: None), (), {})


def test_run_in_missing_netns_is_not_found():
    with pytest.raises(NotFound, match="vnet-absent-host does not exist"):
        netns.run_in_netns("vnet-absent-host", os.getpid)
    with pytest.raises(ValueError):
        netns.run_in_netns("../etc", os.getpid)


def test_process_ownership_is_by_exact_state_dir():
    argv = ["libvirtd", "--pid-file", "/v/sandboxes/ab/libvirtd.pid"]
    assert procs.mentions(argv, "/v/sandboxes/ab")
    assert not procs.mentions(argv, "/v/sandboxes/a")
    assert procs.mentions(["sh", "launcher.sh", "/v/sandboxes/a"], "/v/sandboxes/a")
