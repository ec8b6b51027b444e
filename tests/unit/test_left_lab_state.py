"""Lab state that outlived its sandbox (found on a CI machine: a matrix worker wrote a lab's key
into labs/sandbox-<temporary sandbox> after `sandbox down` had removed it, and no command
removed it again). An `up` checks its sandbox under the lock before writing anything;
`vnet sandbox list` names such a sandbox and `vnet gc --sandbox NAME` removes what it left."""
from __future__ import annotations

import json
import uuid
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from provisioner.cli import main
from provisioner.drivers.libvirt import lifecycle
from provisioner.errors import NotFound, VnetError
from provisioner.guest import images
from provisioner.host import sandbox, state
from provisioner.host.state import Target
from provisioner.ops import labs as ops_labs

GONE = f"ut{uuid.uuid4().hex[:6]}"     # no machine-wide namespace of this name exists


@pytest.fixture(autouse=True)
def root(tmp_path, monkeypatch):
    monkeypatch.setenv("VNET_STATE_DIR", str(tmp_path))
    return tmp_path


def left_state(root):
    """What the stray directory held: a lab's marker and key, a lab with a record, and two
    things that are not a lab's (an invalid name, a directory without a marker)."""
    base = root / "labs" / f"sandbox-{GONE}"
    (base / "mx-nat-e1000").mkdir(parents=True)
    (base / "mx-nat-e1000" / state.MARKER).touch()
    (base / "mx-nat-e1000" / "id_ed25519").write_text("key")
    (base / "lab2").mkdir()
    (base / "lab2" / state.RECORD).write_text("{}")
    (base / "NOTES").write_text("mine")
    (base / "stranger").mkdir()
    (base / "stranger" / "data").write_text("mine")
    return base


def test_an_up_whose_sandbox_went_down_while_it_waited_writes_nothing(root, monkeypatch):
    def no_image(**kw):
        raise AssertionError("an up went on in a sandbox that is down")
    monkeypatch.setattr(images, "build_tiny", no_image)
    target = Target(uri=sandbox.describe(GONE).uri, sandbox=GONE)
    with pytest.raises(NotFound, match=f"sandbox {GONE} is not up"):
        lifecycle._up(SimpleNamespace(name="mx-nat-e1000"), target, None, lambda m: None, True)
    assert not (root / "labs").exists()


def test_gc_of_a_sandbox_that_is_gone_removes_the_lab_state_it_left_and_nothing_else(root):
    base = left_state(root)
    said = []
    assert ops_labs.gc(said.append, sandbox=GONE) == []
    assert sorted(p.name for p in base.iterdir()) == ["NOTES", "stranger"]
    assert (base / "stranger" / "data").read_text() == "mine"
    assert any("NOTES is not a lab directory" in line for line in said)
    assert any("is down: removing the lab state" in line for line in said)


def test_a_verify_whose_sandbox_went_down_while_it_waited_writes_nothing(root):
    from provisioner.verify import run as verifier

    target = Target(uri=sandbox.describe(GONE).uri, sandbox=GONE)
    with pytest.raises(NotFound, match=f"sandbox {GONE} is not up"):
        verifier.verify(SimpleNamespace(name="mx-nat-e1000"), target, lambda m: None)
    assert not (root / "labs").exists()


def test_gc_stops_the_port_proxies_of_lab_directories_only(root, monkeypatch):
    from provisioner.host import forwarding

    base = left_state(root)
    (base / "stranger" / "portproxy.pid").write_text("1\n")
    stopped = []
    monkeypatch.setattr(forwarding, "stop_proxy", lambda lab_dir, progress: stopped.append(
        lab_dir.name))
    ops_labs.gc(lambda m: None, sandbox=GONE)
    assert sorted(stopped) == ["lab2", "mx-nat-e1000"]


def test_gc_of_a_sandbox_that_is_gone_and_left_nothing_is_quiet(root):
    said = []
    assert ops_labs.gc(said.append, sandbox=GONE) == []
    assert said == [] and not (root / "labs").exists()


def test_gc_of_a_half_up_sandbox_points_to_sandbox_down(root):
    left_state(root)
    (root / "sandboxes" / GONE).mkdir(parents=True)
    with pytest.raises(VnetError, match="half up") as caught:
        ops_labs.gc(lambda m: None, sandbox=GONE)
    assert caught.value.hint == f"vnet sandbox down {GONE}"
    assert (root / "labs" / f"sandbox-{GONE}" / "mx-nat-e1000").is_dir()


def test_gc_of_a_sandbox_that_is_up_asks_its_drivers(root, monkeypatch):
    base = left_state(root)
    monkeypatch.setattr(sandbox, "is_up", lambda name: True)
    monkeypatch.setattr(ops_labs, "drivers_here", lambda sb, uri: [
        SimpleNamespace(gc=lambda progress: ["domain vm1"])])
    assert ops_labs.gc(lambda m: None, sandbox=GONE) == ["domain vm1"]
    assert (base / "mx-nat-e1000").is_dir()


def test_sandbox_list_and_status_name_a_gone_sandbox_that_left_lab_state(root):
    left_state(root)
    listed = CliRunner().invoke(main, ["sandbox", "list", "--format", "json"])
    assert listed.exit_code == 0, listed.output
    row, = [r for r in json.loads(listed.output) if r["name"] == GONE]
    assert not row["up"]
    assert any(f"`vnet sandbox down {GONE}`" in p for p in row["problems"])


def test_sandbox_down_of_a_gone_sandbox_removes_the_lab_state_it_left(root):
    base = left_state(root)
    sandbox.down(GONE, progress=lambda m: None)
    assert sorted(p.name for p in base.iterdir()) == ["NOTES", "stranger"]
    assert not any((root / "locks").iterdir())       # its lock file went too (locks.sweep)


def test_acting_on_a_lab_never_makes_its_key_or_directory(root):
    target = Target(uri=sandbox.describe(GONE).uri, sandbox=GONE)
    with pytest.raises(NotFound, match="has no SSH key"):
        state.existing_key(target, "mx-nat-e1000")
    assert not (root / "labs").exists()
    base = left_state(root)
    assert state.existing_key(target, "mx-nat-e1000") == base / "mx-nat-e1000" / "id_ed25519"


# --- `vnet verify --vagrant`'s files (found on a CI machine: 55 directories under
# <state root>/vagrant/sandbox-<test sandbox>, one per test run, that nothing removed) ---------

def vagrant_runs(root, name=GONE):
    """A Vagrant run's directory as verify leaves it (marked), and one vnet did not make."""
    base = root / state.VAGRANT_RUNS / f"sandbox-{name}"
    run = base / "vagrant-natnetwork-447662b5081d"
    (run / "ansible").mkdir(parents=True)
    (run / state.VAGRANT_MARKER).touch()
    (run / "listener-host-0.log").write_text("log")
    (base / "stranger").mkdir()
    (base / "stranger" / "data").write_text("mine")
    return base


def test_sandbox_down_removes_its_vagrant_runs_and_nothing_else(root):
    base = vagrant_runs(root)
    said = []
    sandbox.down(GONE, progress=said.append)
    assert sorted(p.name for p in base.iterdir()) == ["stranger"]
    assert (base / "stranger" / "data").read_text() == "mine"
    assert any("stranger: it holds none of" in line for line in said)


def test_a_gone_sandbox_that_left_only_vagrant_runs_is_listed_and_gc_removes_them(root):
    base = vagrant_runs(root)
    (base / "stranger" / "data").unlink()
    (base / "stranger").rmdir()
    listed = CliRunner().invoke(main, ["sandbox", "list", "--format", "json"])
    row, = [r for r in json.loads(listed.output) if r["name"] == GONE]
    assert any(str(base) in p and f"`vnet sandbox down {GONE}`" in p for p in row["problems"])
    said = []
    assert ops_labs.gc(said.append, sandbox=GONE) == []
    assert not base.exists()
    assert any("is down: removing the lab state" in line for line in said)


def test_a_vagrant_verify_marks_its_run_directory_under_its_target(root, monkeypatch, tmp_path):
    """The run directory is the target's (so the sandbox's `down` removes it), checked under
    its parent, and verify writes the marker before anything else (FAKE probe sources)."""
    from provisioner.lab import loader as labfile
    from provisioner.ops import vagrant
    from provisioner.verify import run as verifier

    monkeypatch.setattr(vagrant, "host_address_towards", lambda address: "192.168.121.1")
    lab = labfile.resolve({"name": "demo", "networks": [{"name": "n", "mode": "hostonly"}],
                           "vms": [{"name": "a", "nics": [{"network": "n"}]}]})
    target = Target(uri="test:///default")
    machines = {"a": {"hostname": "192.168.121.10", "port": "22", "user": "root"}}
    inventory = vagrant.inventory(tmp_path / "project", lab, target, machines)
    assert inventory.work_dir.parent == state.vagrant_runs_dir(target)
    assert inventory.work_dir.name.startswith("demo-")
    fakes = verifier.ProbeSources(start_listeners=lambda *a: None, guests=lambda *a: {},
                                  probe_module=lambda: SimpleNamespace(
                                      run_all=lambda specs: {}, probe=lambda spec: {}))
    verifier.verify(lab, target, lambda m: None, inventory=inventory, sources=fakes)
    assert (inventory.work_dir / state.VAGRANT_MARKER).is_file()
    state.forget_vagrant_runs(target, lambda m: None)
    assert not state.vagrant_runs_dir(target).exists()


def test_a_vagrant_run_directory_cannot_leave_its_parent(root):
    target = Target(uri="test:///default")
    with pytest.raises(VnetError):
        state.vagrant_run_dir(target, "../../etc", root)


def test_gc_of_an_up_target_removes_its_vagrant_runs_too(root, monkeypatch):
    """Outside a sandbox no `down` ever comes: `vnet gc` removes the Vagrant runs' files (logs
    of past runs, each under its lab's lock), and only those vnet marked."""
    base = vagrant_runs(root)
    monkeypatch.setattr(sandbox, "is_up", lambda name: True)
    monkeypatch.setattr(ops_labs, "drivers_here", lambda sb, uri: [
        SimpleNamespace(gc=lambda progress: [])])
    said = []
    assert ops_labs.gc(said.append, sandbox=GONE) == []
    assert sorted(p.name for p in base.iterdir()) == ["stranger"]
    assert any("stranger: it holds none of" in line for line in said)
