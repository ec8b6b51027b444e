"""Names from argv, from libvirt metadata and from VirtualBox extradata pass one full-match rule
before they reach a path or an API, and state is removed only where a lab's own record is.

Every test runs with VNET_STATE_DIR in a tmp dir full of decoys, libvirt replaced by a fake
connection, and shutil.rmtree jailed to the tmp dir: run against the old code, `destroy /` must
not reach the real root."""
import shutil
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from provisioner.drivers.libvirt import lifecycle
from provisioner.host import sandbox, ssh, state
from provisioner.cli import main
from provisioner.drivers.virtualbox import lifecycle as vbox_exec
from provisioner.drivers.libvirt.render import XMLNS
from provisioner.errors import VnetError
from provisioner.lab.model import NAME_RULE
from provisioner.host.state import Target

BAD_NAMES = ["/", "..", "", "x\n", ".", "a/b", "../labs", "-x", "X", "a" * 25]


class FakeObject:
    """A libvirt domain or network with a vnet tag."""

    def __init__(self, name, tag, removed):
        self._name, self._tag, self._removed = name, tag, removed

    def name(self):
        return self._name

    def XMLDesc(self, flags):
        from provisioner.host.owner import owner_id    # this state root's objects, so gc may act
        return (f'<domain><name>x</name><metadata><vnet:lab xmlns:vnet="{XMLNS}" '
                f'name="{self._tag}" owner="{owner_id()}"/></metadata></domain>')

    def isActive(self):
        return False

    def undefine(self):
        self._removed.append(self._name)


class FakeLibvirt:
    """Stands in for the libvirt module: open() gives a connection listing `objects`."""

    class libvirtError(Exception):
        pass

    def __init__(self):
        self.domains, self.removed, self.opened = [], [], []

    def registerErrorHandler(self, *args):
        pass

    def open(self, uri):
        self.opened.append(uri)
        return self

    def listAllDomains(self, flags):
        return self.domains

    def listAllNetworks(self, flags):
        return []

    def tag(self, name, tag):
        self.domains.append(FakeObject(name, tag, self.removed))


@pytest.fixture
def world(tmp_path, monkeypatch):
    """A state root with decoys, a fake libvirt, and rmtree that cannot leave tmp_path."""
    root = tmp_path / "state"
    monkeypatch.setenv("VNET_STATE_DIR", str(root))
    fake = FakeLibvirt()
    monkeypatch.setitem(sys.modules, "libvirt", fake)     # what `import libvirt` finds
    monkeypatch.setattr(ssh, "close_masters", lambda directory: None)
    monkeypatch.setattr(lifecycle, "target_for", lambda name, uri: Target(
        uri=uri or "qemu:///fake", sandbox=name))
    real_rmtree, refused = shutil.rmtree, []

    def jailed_rmtree(path, *args, **kwargs):
        if not Path(path).resolve().is_relative_to(tmp_path):
            refused.append(str(path))      # the old code asked for this: record, never do it
            return
        real_rmtree(path, *args, **kwargs)
    monkeypatch.setattr(shutil, "rmtree", jailed_rmtree)
    decoys = [root / "labs" / Target(uri="qemu:///fake", sandbox="s").key / "other" / "lab.json",
              root / "labs" / Target(uri="qemu:///fake").key / "mine" / "lab.json",
              root / "sandboxes" / "s" / "sandbox.json",
              root / "keep.txt"]
    for decoy in decoys:
        decoy.parent.mkdir(parents=True, exist_ok=True)
        decoy.write_text("{}")
    fake.decoys, fake.refused, fake.root = decoys, refused, root
    return fake


def run(*args):
    return CliRunner().invoke(main, list(args))


def one_line(result) -> str:
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    return lines[0]


def assert_untouched(world):
    assert all(d.exists() for d in world.decoys), "a decoy was removed"
    assert world.refused == [], f"rmtree was asked for {world.refused}"
    assert world.removed == [] and world.opened == [], "libvirt was reached"


@pytest.mark.parametrize("name", ["/", "..", "", "x\n", "../labs", "."])
@pytest.mark.parametrize("extra", [[], ["--sandbox", "s"]])
def test_destroy_with_a_bad_lab_name_exits_2_and_removes_nothing(world, name, extra):
    result = run("destroy", name, *extra)
    assert result.exit_code == 2, result.output
    assert one_line(result) == (f"vnet: error: LAB_NAME: {name!r} is not a valid name: "
                                f"use {NAME_RULE}")
    assert_untouched(world)


@pytest.mark.parametrize("argv", [
    ["destroy", "x\n"], ["status", "x\n"], ["verify", "x\n"],
    ["destroy", "lab", "--sandbox", "x\n"], ["status", "lab", "--sandbox", "x\n"],
    ["verify", "lab", "--sandbox", "x\n"], ["list", "--sandbox", "x\n"], ["gc", "--sandbox", "x\n"],
    ["destroy", "lab", "--sandbox", ""], ["gc", "--sandbox", ""], ["list", "--sandbox", "../s"],
    ["create", "--mode", "hostonly", "--dry-run", "--sandbox", "x\n"],
    ["create", "--mode", "hostonly", "--dry-run", "--name", "x\n"],
    ["create", "--mode", "bridged", "--dry-run", "--bridge", "br0\n"],
    ["create", "--mode", "hostonly", "--nic-model", "sriov", "--dry-run", "--pf", "eth0\n"],
    ["doctor", "--sandbox", "x\n"],
    ["matrix", "--sandbox", "x\n", "--report-dir", "/nonexistent/vnet-test-never-written"],
    ["sandbox", "up", "x\n"], ["sandbox", "down", "x\n"], ["sandbox", "status", "x\n"],
    ["sandbox", "exec", "x\n", "--", "true"], ["sandbox", "down", ".."], ["sandbox", "down", "/"],
    ["list", "--sandbox", "x" * 100_000], ["destroy", "y" * 100_000],
])
def test_every_cli_name_argument_refuses_a_trailing_newline_and_bad_names(world, argv):
    result = run(*argv)
    assert result.exit_code == 2, result.output
    assert one_line(result).startswith("vnet: error: ") and len(one_line(result)) < 300
    assert_untouched(world)


def test_gc_ignores_tags_that_are_not_lab_names(world):
    """A tag read back from libvirt is data from outside: a bogus one is warned about and never
    becomes a path or a libvirt call; a real orphan is still collected."""
    for i, tag in enumerate(["..", "/", "", "x&#10;", "../../state"]):
        world.tag(f"bogus{i}", tag)
    world.tag("vnet-orphan-a", "orphan")
    result = run("gc")
    assert result.exit_code == 0, result.output
    assert world.removed == ["vnet-orphan-a"]
    assert result.stdout.strip() == "removed 1 object(s)"
    warnings = [line for line in result.stderr.splitlines() if "invalid lab name" in line]
    assert len(warnings) == 5 and "'../../state'" in result.stderr and "bogus4" in result.stderr
    assert all(d.exists() for d in world.decoys) and world.refused == []


def test_list_ignores_bogus_tags(world):
    world.tag("bogus", "..")
    world.tag("vnet-ok-a", "ok")
    result = run("list", "--format", "json")
    assert result.exit_code == 0, result.output
    assert [lab["lab"] for lab in __import__("json").loads(result.stdout)] == ["mine", "ok"]
    assert "invalid lab name '..'" in result.stderr


def test_virtualbox_tags_that_are_not_lab_names_count_as_untagged(capsys):
    class Backend:
        def run(self, argv, check=True):
            class Result:
                returncode = 0
                stdout = ('"good" {1}\n"evil" {2}\n"plain" {3}\n' if argv[1] == "list" else
                          {"good": "Value: lab1\n", "evil": "Value: ../..\n",
                           "plain": "No value set!\n"}[argv[2]])
            return Result()
    assert vbox_exec.vm_tags(Backend()) == {"good": "lab1", "evil": None, "plain": None}
    assert "ignoring VM 'evil'" in capsys.readouterr().err


# --- the guarded paths themselves -------------------------------------------------------------

@pytest.mark.parametrize("name", BAD_NAMES)
def test_state_paths_refuse_bad_names(world, name):
    with pytest.raises(VnetError):
        state.lab_dir(Target(uri="qemu:///fake"), name)
    with pytest.raises(VnetError):
        state.remove(Target(uri="qemu:///fake"), name)
    with pytest.raises(VnetError):
        state.save(Target(uri="qemu:///fake"), name, {})
    assert_untouched(world)


@pytest.mark.parametrize("name", ["", ".", "..", "a/b", "/", "../x"])
def test_child_is_only_a_direct_child(tmp_path, name):
    from provisioner.host import safepath

    with pytest.raises(VnetError):
        safepath.child(tmp_path, name)


def test_child_refuses_a_symlink_out_of_its_parent(tmp_path):
    from provisioner.host import safepath

    (tmp_path / "parent").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "lab.json").write_text("{}")
    (tmp_path / "parent" / "lab").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(VnetError, match="not a directory directly under"):
        safepath.remove_tree(tmp_path / "parent", "lab", ["lab.json"])
    assert (tmp_path / "elsewhere" / "lab.json").exists()


def test_remove_needs_the_labs_own_record(world):
    target = Target(uri="qemu:///fake")
    stranger = state.target_dir(target) / "stranger"
    (stranger / "data").mkdir(parents=True)
    with pytest.raises(VnetError, match="refusing to remove"):
        state.remove(target, "stranger")
    assert (stranger / "data").exists()
    state.save(target, "real", {"lab": "real"})
    state.remove(target, "real")
    assert not state.lab_dir(target, "real").exists()
    state.remove(target, "real")                 # gone: nothing to do, no error


def test_a_lab_dir_made_before_its_record_is_still_removable(world, monkeypatch):
    """up makes the SSH key before the record: a crash in between must stay removable."""
    monkeypatch.setattr(state.runner, "run", lambda argv, **kw: (
        Path(argv[-1]).write_text("key"), Path(argv[-1] + ".pub").write_text("ssh-ed25519 x")))
    target = Target(uri="qemu:///fake")
    state.ssh_key(target, "early")
    assert state.read(target, "early") is None
    state.remove(target, "early")
    assert not state.lab_dir(target, "early").exists()


def test_sandbox_down_removes_lab_state_through_the_guard(world, monkeypatch):
    """`sandbox down` removes its labs' directories only where a lab record is, and leaves a
    stranger directory in place with a warning."""
    monkeypatch.setattr(sandbox, "pids_in_netns", lambda names: {})
    monkeypatch.setattr(sandbox, "netns_inode", lambda ns: None)
    target = Target(uri="qemu:///fake", sandbox="s")
    stranger = state.target_dir(target) / "stranger"
    stranger.mkdir()
    said = []
    sandbox.down("s", progress=said.append)
    assert not (world.root / "sandboxes" / "s").exists()
    assert not state.lab_dir(target, "other").exists() and stranger.exists()
    assert any("refusing to remove" in line for line in said)
    assert world.refused == []


def test_names_are_full_match():
    from provisioner.lab.model import is_name

    assert is_name("a") and is_name("web-1") and is_name("a" * 24)
    assert not any(is_name(n) for n in [*BAD_NAMES, "a-", "a\n", "\na", None, 5, ["a"]])
