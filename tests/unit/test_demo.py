"""`vnet demo` (provisioner/ops/demo.py): the command sequence from nothing to a verified Vagrant
demo and back, with FAKES: the process runner records each command instead of running it, the
sandbox and the box build are stand-ins, and the verification returns a canned result. The
copied demo is rendered by the Vagrant recorder (tests/fakes/vagrant_recorder.rb) to show that
the copy still finds its shared lib. tests/integration/test_demo.py runs the real thing."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from provisioner.ops import demo, vagrant
from provisioner.guest import images, vagrantbox
from provisioner.host import runner, sandbox
from provisioner.cli import main
from provisioner.errors import CommandFailed, NotFound
from tests.conftest import ROOT

RECORDER = ROOT / "tests" / "fakes" / "vagrant_recorder.rb"
VOLUME = demo.BOX_VOLUME_PREFIX + "0_box.img"


class Recorder:
    """FAKE runner.run: records (argv without the sandbox prefix, cwd, VAGRANT_HOME)."""

    def __init__(self, fail_on: tuple[str, ...] = ()):
        self.calls: list[tuple[list[str], str | None, str | None]] = []
        self.fail_on = fail_on

    def __call__(self, argv, *, check=True, input=None, timeout=None, env=None, cwd=None):
        assert argv[:4] == ["ip", "netns", "exec", "vnet-h7-host"], argv   # on the sandbox host
        inner = argv[argv.index("env") + 2:]
        self.calls.append((inner, cwd, (env or {}).get("VAGRANT_HOME")))
        if tuple(inner[:2]) == self.fail_on:
            raise CommandFailed(list(argv), 1, "machine vm1 failed to boot")
        out = VOLUME + "\nother.qcow2\n" if inner[:2] == ["virsh", "vol-list"] else ""
        return runner.Result(list(argv), 0, out, "")

    def commands(self) -> list[list[str]]:
        return [argv for argv, _, _ in self.calls]


@pytest.fixture
def world(tmp_path, monkeypatch):
    """State root and cache in tmp; a sandbox that is not up until made; a box stand-in."""
    monkeypatch.setenv("VNET_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("VNET_CACHE_DIR", str(tmp_path / "cache"))
    sb = SimpleNamespace(name="h7", host_netns="vnet-h7-host", uri="qemu:///system?socket=/x")
    events: list[str] = []
    up = {"h7": False}

    def load(name):
        if not up[name]:
            raise NotFound(f"sandbox {name} is not up")
        return sb

    def made(name, progress):
        events.append("sandbox up")
        up[name] = True
        return sb

    def down(name, progress):
        events.append("sandbox down")
        up[name] = False

    digest = {"value": "abc123"}

    def build(provider, out_dir, progress):            # FAKE box build
        assert provider == "libvirt"
        events.append("box built")
        out_dir.mkdir(parents=True, exist_ok=True)
        path = out_dir / f"vnet-tiny-{digest['value']}-libvirt.box"
        path.write_text("box")
        return vagrantbox.Box(path=path, provider="libvirt", name="vnet/tiny",
                              digest=digest["value"])

    monkeypatch.setattr(images, "find_tiny", lambda: SimpleNamespace(digest=digest["value"]))
    seen = {}

    def verify(project, sandbox_name, progress):       # FAKE verification
        import os

        seen.update(project=project, sandbox=sandbox_name, home=os.environ.get("VAGRANT_HOME"),
                    files=sorted(p.name for p in project.iterdir()))
        if shutil.which("ruby"):
            rendered = subprocess.run(["ruby", str(RECORDER), str(project / "Vagrantfile")],
                                      capture_output=True, text=True, timeout=60)
            seen["rendered"] = rendered.returncode == 0 and \
                json.loads(rendered.stdout)[0]["vm"]["settings"]["box"] == "vnet/tiny"
        events.append("verify")
        cell = {"kind": "vm_to_vm", "network": "natnet", "mode": "natnetwork", "source": "vm1",
                "target": "vm2 (192.168.160.11)", "expected": "pass", "observed": "pass",
                "ok": True, "detail": "fake"}
        return {"lab": "vagrant-natnetwork", "backend": "libvirt", "ok": True, "checks": [cell],
                "timings": {}, "notes": []}

    recorder = Recorder()
    monkeypatch.setattr(sandbox, "load", load)
    monkeypatch.setattr(sandbox, "up", made)
    monkeypatch.setattr(sandbox, "down", down)
    monkeypatch.setattr(vagrantbox, "build", build)
    monkeypatch.setattr(vagrant, "verify", verify)
    monkeypatch.setattr(runner, "run", recorder)
    return SimpleNamespace(root=tmp_path / "state", events=events, up=up, run=recorder,
                           seen=seen, digest=digest)


def demo_cmd(*args):
    return CliRunner().invoke(main, ["demo", *args])


def box_add(world):
    return ["vagrant", "box", "add", "--force", "--name", "vnet/tiny",
            str(Path(world.root).parent / "cache" / "boxes" / "vnet-tiny-abc123-libvirt.box")]


TEARDOWN = [["vagrant", "destroy", "-f"], ["virsh", "vol-list", "default", "--name"],
            ["virsh", "vol-delete", VOLUME, "--pool", "default"]]


def test_demo_goes_from_nothing_to_verified_and_back(world):
    done = demo_cmd("natnetwork", "--sandbox", "h7")
    assert done.exit_code == 0, done.output
    assert "VERIFIED" in done.output
    assert world.run.commands() == [box_add(world), ["vagrant", "up", "--provider", "libvirt"],
                                     *TEARDOWN]
    work = world.root / "demos" / "h7" / "natnetwork"
    home = str(world.root / "demos" / "vagrant.d")
    vagrant_calls = [(cwd, h) for argv, cwd, h in world.run.calls if argv[0] == "vagrant"]
    assert vagrant_calls == [(None, home), (str(work), home), (str(work), home)]
    assert world.events == ["sandbox up", "box built", "verify", "sandbox down"]
    assert world.seen["project"] == work and world.seen["sandbox"] == "h7"
    assert world.seen["home"] == home                       # ssh-config finds the box's key
    assert {"Vagrantfile", "vnet.yaml", demo.MARKER} <= set(world.seen["files"])
    if shutil.which("ruby"):
        assert world.seen["rendered"], "the copied Vagrantfile does not load its lib"
    assert not (world.root / "demos" / "h7").exists()       # the copy went with the demo


def test_keep_leaves_the_demo_up_and_destroy_removes_it_later(world):
    kept = demo_cmd("natnetwork", "--sandbox", "h7", "--keep")
    assert kept.exit_code == 0, kept.output
    assert world.run.commands() == [box_add(world), ["vagrant", "up", "--provider", "libvirt"]]
    assert world.events == ["sandbox up", "box built", "verify"]
    listed = json.loads(demo_cmd("--list", "--format", "json").output)
    assert [d["kept_in"] for d in listed if d["demo"] == "natnetwork"] == [["h7"]]
    world.run.calls.clear()
    gone = demo_cmd("natnetwork", "--sandbox", "h7", "--destroy")
    assert gone.exit_code == 0, gone.output
    assert world.run.commands() == TEARDOWN
    assert world.events[-1] == "sandbox down"               # the demo had made it
    assert not (world.root / "demos" / "h7").exists()
    again = demo_cmd("natnetwork", "--sandbox", "h7", "--destroy")
    assert again.exit_code == 2 and "no demo natnetwork is kept" in again.output


def test_a_sandbox_that_was_up_is_used_and_left_up(world):
    world.up["h7"] = True
    assert demo_cmd("hostonly", "--sandbox", "h7").exit_code == 0
    assert world.events == ["box built", "verify"]


def test_the_box_is_added_once_per_image(world):
    world.up["h7"] = True
    assert demo_cmd("internal", "--sandbox", "h7").exit_code == 0
    assert demo_cmd("internal", "--sandbox", "h7").exit_code == 0
    assert world.run.commands().count(box_add(world)) == 1
    assert world.events.count("box built") == 1              # not even built again
    world.digest["value"] = "def456"                          # the image changed
    assert demo_cmd("internal", "--sandbox", "h7").exit_code == 0
    assert world.run.commands()[-5][:4] == ["vagrant", "box", "add", "--force"]
    assert world.run.commands()[-5][-1].endswith("vnet-tiny-def456-libvirt.box")


def test_a_second_kept_demo_keeps_the_box_volume_until_the_last_goes(world):
    world.up["h7"] = True
    assert demo_cmd("internal", "--sandbox", "h7", "--keep").exit_code == 0
    assert demo_cmd("hostonly", "--sandbox", "h7").exit_code == 0
    assert world.run.commands()[-1] == ["vagrant", "destroy", "-f"]     # no vol-delete yet
    assert demo_cmd("internal", "--sandbox", "h7", "--destroy").exit_code == 0
    assert world.run.commands()[-3:] == TEARDOWN
    assert world.events.count("sandbox down") == 0            # it was up before the demos


def test_a_failed_vagrant_up_still_tears_everything_down(world, monkeypatch):
    monkeypatch.setattr(runner, "run", world.run)
    world.run.fail_on = ("vagrant", "up")
    done = demo_cmd("natnetwork", "--sandbox", "h7")
    assert done.exit_code == 3 and "`vagrant up` of demo natnetwork failed" in done.output
    assert world.run.commands()[-3:] == TEARDOWN
    assert world.events == ["sandbox up", "box built", "sandbox down"]


def test_bad_input_exits_2_and_creates_nothing(world):
    bad = demo_cmd("bogus", "--sandbox", "h7")
    assert bad.exit_code == 2 and "'bogus' is not one of 'bridged', 'nat', 'natnetwork', " \
        "'hostonly', 'internal'" in bad.output
    assert demo_cmd("--sandbox", "h7").exit_code == 2
    assert demo_cmd("nat", "--keep", "--destroy").exit_code == 2
    assert demo_cmd("nat", "--sandbox", "../x").exit_code == 2
    assert world.run.calls == [] and world.events == []
    assert not (world.root / "demos").exists()


def test_list_shows_the_five_demos():
    listed = CliRunner().invoke(main, ["demo", "--list"])
    assert listed.exit_code == 0
    for mode in ("bridged", "nat", "natnetwork", "hostonly", "internal"):
        assert f"vagrant/{mode}" in listed.output


def test_teardown_removes_only_the_lib_copy_vnet_marked(world):
    """The shared lib/ beside the demos is removed only with vnet's marker in it: a lib/ that
    someone else put there stays (it was rmtree'd whatever it held)."""
    kept = demo_cmd("natnetwork", "--sandbox", "h7", "--keep")
    assert kept.exit_code == 0, kept.output
    lib = world.root / "demos" / "h7" / "lib"
    assert (lib / demo.LIB_MARKER).is_file()
    (lib / demo.LIB_MARKER).unlink()                          # as if not vnet's copy
    (lib / "mine.txt").write_text("mine")
    gone = demo_cmd("natnetwork", "--sandbox", "h7", "--destroy")
    assert gone.exit_code == 0, gone.output
    assert (lib / "mine.txt").read_text() == "mine" and ".vnet-demo-lib" in gone.output


def test_a_demo_whose_copy_fails_is_still_torn_down_whole(world, monkeypatch):
    """The demo's marker is written first: a failure while copying the files leaves nothing
    the teardown would refuse, and the sandbox the demo made goes too."""
    def broken_copy(src, dst, *a, **kw):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(demo.shutil, "copyfile", broken_copy)
    failed = demo_cmd("natnetwork", "--sandbox", "h7")
    assert failed.exit_code != 0
    assert not (world.root / "demos" / "h7").exists()
    assert world.events[-1] == "sandbox down"
