"""`vnet demo MODE`: from nothing to a verified Vagrant demo (vagrant/<mode>/), in one command.

Steps, each one skipped when its result is already there:
  1. the sandbox (`vnet sandbox up S`; removed again at the end only if this command made it);
  2. the tiny box (`vnet image box`), added as vnet/tiny under vnet's own VAGRANT_HOME,
     <state root>/demos/vagrant.d, so the user's ~/.vagrant.d is never touched; added again
     only when the box's image changed;
  3. a copy of the demo in <state root>/demos/<sandbox>/<mode>/ (Vagrant writes .vagrant/
     beside its Vagrantfile, and the installed demos are read-only data);
  4. `vagrant up --provider libvirt` on the sandbox host (Vagrant runs only inside a sandbox);
  5. `vnet verify --vagrant` of that copy (provisioner/ops/vagrant.py);
  6. unless --keep: `vagrant destroy -f`, the box's base volume in the sandbox's pool (when no
     other demo there still uses it), the copy, and the sandbox if step 1 made it.
`vnet demo MODE --destroy` is step 6 for a demo kept earlier. Teardown runs also when a step
fails or the user interrupts.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path

from ..host import paths, runner, safepath, sandbox
from ..errors import CommandFailed, LabFileError, NotFound, VnetError
from ..resources import data_dir
from ..guest.vagrantbox import BOX_NAME
from ..progress import Progress

MARKER = "vnet-demo.json"          # in a demo's copy: what made it, and whether vnet made the sandbox
LIB_MARKER = ".vnet-demo-lib"      # in the demos' shared lib/ copy: vnet put it there
BOX_RECORD = "vnet-box.json"       # in VAGRANT_HOME: the digest of the box added as vnet/tiny
BOX_VOLUME_PREFIX = "vnet-VAGRANTSLASH-tiny_vagrant_box_image_"   # vagrant-libvirt's base volume
UP_TIMEOUT = 1200


def demos_dir() -> Path:
    """The demos vnet ships: vagrant/<mode>/ with a Vagrantfile and a vnet.yaml, and lib/."""
    return data_dir("vagrant")


def names() -> list[str]:
    return sorted(p.parent.name for p in demos_dir().glob("*/Vagrantfile"))


def check_mode(mode: str) -> str:
    if mode not in names():
        raise LabFileError("MODE", f"unknown demo {mode!r}; demos: {', '.join(names())}")
    return mode


def description(mode: str) -> str:
    """The demo's one-line summary: the first comment line of its Vagrantfile."""
    first = (demos_dir() / mode / "Vagrantfile").read_text().splitlines()[0]
    return first.lstrip("# ").split(": ", 1)[-1]


def root() -> Path:
    base = paths.state_root()
    base.mkdir(parents=True, exist_ok=True)
    path = safepath.child(base, "demos")
    path.mkdir(exist_ok=True)
    return path


def vagrant_home() -> Path:
    path = safepath.child(root(), "vagrant.d")
    path.mkdir(exist_ok=True)
    return path


def workdir(sandbox_name: str, mode: str) -> Path:
    """<state root>/demos/<sandbox>/<mode>, each part checked to sit under its parent."""
    return safepath.child(safepath.child(root(), paths.validate_name(sandbox_name)),
                          check_mode(mode))


def vagrant_env() -> dict[str, str]:
    return {"VAGRANT_HOME": str(vagrant_home()), "VAGRANT_CHECKPOINT_DISABLE": "1",
            "VAGRANT_NO_COLOR": "1", "VAGRANT_DEFAULT_PROVIDER": "libvirt"}


def list_demos() -> list[dict]:
    """The five demos, with the sandboxes where one is kept up."""
    kept: dict[str, list[str]] = {}
    base = paths.state_root() / "demos"
    for marker in sorted(base.glob(f"*/*/{MARKER}")) if base.is_dir() else []:
        kept.setdefault(marker.parent.name, []).append(marker.parent.parent.name)
    return [{"demo": mode, "directory": f"vagrant/{mode}", "description": description(mode),
             "kept_in": kept.get(mode, [])} for mode in names()]


def _vagrant(sb, argv: list[str], cwd: Path | None, timeout: float) -> runner.Result:
    """A vagrant command on the sandbox host, with vnet's VAGRANT_HOME."""
    return runner.run(sandbox.exec_argv(sb, argv), cwd=str(cwd) if cwd else None,
                      env=vagrant_env(), timeout=timeout)


@contextlib.contextmanager
def _environment(values: dict[str, str]):
    """provisioner/ops/vagrant.py runs `vagrant ssh-config` with this process's environment: the
    box (its key, its Vagrantfile) is found only under vnet's VAGRANT_HOME."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def ensure_sandbox(name: str, progress: Progress) -> tuple[object, bool]:
    """(the sandbox, whether this call made it)."""
    try:
        return sandbox.load(name), False
    except NotFound:
        progress(f"creating sandbox {name}")
        return sandbox.up(name, progress=progress), True


def ensure_box(sb, progress: Progress) -> None:
    """The tiny libvirt box, added as vnet/tiny under vnet's VAGRANT_HOME (once per image)."""
    from ..guest import images, vagrantbox

    record = vagrant_home() / BOX_RECORD
    added = json.loads(record.read_text()) if record.is_file() else {}
    cached = images.find_tiny()          # never builds: is the added box still the image's?
    if cached is not None and added.get("digest") == cached.digest and \
            (vagrant_home() / "boxes" / BOX_NAME.replace("/", "-VAGRANTSLASH-")).is_dir():
        progress(f"box {BOX_NAME} ({cached.digest}) is already added")
        return
    box = vagrantbox.build("libvirt", paths.cache_dir() / "boxes", progress=progress)
    progress(f"adding box {box.name} under {vagrant_home()}")
    _vagrant(sb, box.add_argv, None, 600)
    record.write_text(json.dumps({"digest": box.digest, "path": str(box.path)}) + "\n")
    box_dir = vagrant_home() / "boxes" / BOX_NAME.replace("/", "-VAGRANTSLASH-")
    box_dir.mkdir(parents=True, exist_ok=True)   # Vagrant made it; a stand-in may not have


def copy_demo(mode: str, sandbox_name: str, made_sandbox: bool) -> Path:
    """The demo's files in its work dir (.vagrant/ of an earlier, kept run stays)."""
    work = workdir(sandbox_name, mode)
    lib = safepath.child(work.parent, "lib")
    work.mkdir(parents=True, exist_ok=True)
    marker = work / MARKER         # first: a teardown after any failure below finds it vnet's
    earlier = json.loads(marker.read_text()) if marker.is_file() else {}
    marker.write_text(json.dumps({"demo": mode, "sandbox": sandbox_name,
                                  "made_sandbox": earlier.get("made_sandbox", made_sandbox)}) + "\n")
    lib.mkdir(exist_ok=True)
    (lib / LIB_MARKER).touch()
    shutil.copytree(demos_dir() / "lib", lib, dirs_exist_ok=True)
    for item in (demos_dir() / mode).iterdir():
        if item.is_file():
            shutil.copyfile(item, work / item.name)
    return work


def run(mode: str, sandbox_name: str, keep: bool, progress: Progress) -> dict:
    """Steps 1-6; returns the verification result (the JSON report's shape)."""
    check_mode(mode)
    sb, made = ensure_sandbox(sandbox_name, progress)
    work = None
    try:
        ensure_box(sb, progress)
        work = copy_demo(mode, sandbox_name, made)
        progress(f"vagrant up --provider libvirt in {work} (sandbox {sandbox_name})")
        try:
            _vagrant(sb, ["vagrant", "up", "--provider", "libvirt"], work, UP_TIMEOUT)
        except CommandFailed as exc:
            raise VnetError(f"`vagrant up` of demo {mode} failed: {exc.stderr.strip()[-400:]}",
                            hint=f"consoles: {work}/.vagrant/*.serial.log") from exc
        from . import vagrant

        with _environment(vagrant_env()):
            result = vagrant.verify(work, sandbox_name, progress)
        result["demo"] = mode
    except BaseException:
        if not keep:
            teardown(mode, sandbox_name, progress, made_sandbox=made)
        raise
    if keep:
        progress(f"kept: vnet demo {mode} --destroy --sandbox {sandbox_name} removes it; to "
                 f"verify again: VAGRANT_HOME={vagrant_home()} vnet verify --vagrant {work} "
                 f"--sandbox {sandbox_name}")
    else:
        teardown(mode, sandbox_name, progress, made_sandbox=made)
    return result


def teardown(mode: str, sandbox_name: str, progress: Progress,
             made_sandbox: bool | None = None) -> None:
    """Step 6: the machines, the box's base volume once no demo uses it, the copy, and the
    sandbox if the demo made it (made_sandbox None: as the demo's record says)."""
    check_mode(mode)
    work = workdir(sandbox_name, mode)
    marker = work / MARKER
    if made_sandbox is None:
        if not marker.is_file():
            raise NotFound(f"no demo {mode} is kept in sandbox {sandbox_name}",
                           hint="vnet demo --list shows where demos are kept")
        made_sandbox = json.loads(marker.read_text()).get("made_sandbox", False)
    try:
        sb = sandbox.load(sandbox_name)
    except NotFound:
        sb = None          # the sandbox is gone, and its machines and volumes with it
    if sb is not None and (work / "Vagrantfile").is_file():
        progress(f"vagrant destroy -f in {work}")
        _vagrant(sb, ["vagrant", "destroy", "-f"], work, 600)
    others = [p for p in work.parent.glob(f"*/{MARKER}") if p.parent != work]
    if sb is not None and not others:
        _remove_box_volumes(sb, progress)
    if work.exists():
        safepath.remove_tree(work.parent, work.name, [MARKER])
    if not others:
        try:
            safepath.remove_tree(work.parent, "lib", [LIB_MARKER])
        except VnetError as exc:     # not vnet's copy (or an older vnet's): left alone
            progress(f"warning: {exc.message}")
        with contextlib.suppress(OSError):
            work.parent.rmdir()
    if made_sandbox and sb is not None and not others:
        progress(f"removing sandbox {sandbox_name} (the demo made it)")
        sandbox.down(sandbox_name, progress=progress)


def _remove_box_volumes(sb, progress: Progress) -> None:
    """vagrant-libvirt uploads the box into the sandbox's `default` storage pool and never
    removes it; a later box with another image would otherwise boot the stale volume."""
    listed = runner.run(sandbox.exec_argv(sb, ["virsh", "vol-list", "default", "--name"]),
                        check=False, timeout=60)
    for vol in listed.stdout.split():
        if vol.startswith(BOX_VOLUME_PREFIX):
            progress(f"removing the box's volume {vol}")
            runner.run(sandbox.exec_argv(sb, ["virsh", "vol-delete", vol, "--pool", "default"]),
                       timeout=60)
