"""Where a lab's own files live: its resolved lab, SSH key, serial logs and helper PIDs.

Layout: <state_root>/labs/<target>/<lab>/ where target is the sandbox name, or a hash of the
libvirt URI for labs outside a sandbox. `destroy` removes the directory last, so a crash at any
point leaves something `destroy` or `gc` can find again."""
from __future__ import annotations

import hashlib
import json
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypedDict

from . import locks, runner
from ..errors import NotFound, VnetError
from ..lab.model import check_name, is_name
from .safepath import child, remove_tree
from .paths import state_root, validate_name

RECORD = "lab.json"
REMOTE_HOSTS = "remote-hosts"
VAGRANT_RUNS = "vagrant"      # `vnet verify --vagrant`'s files, per target (vagrant_run_dir)
VAGRANT_MARKER = ".vnet-vagrant-run"
MARKER = ".vnet-lab"          # written when the directory is made, before lab.json exists
MARKERS = (RECORD, MARKER)    # a lab directory holds one of these, or it is not removed
KEY_FILE = "id_ed25519"       # the lab's own SSH key, beside its .pub
SCHEMA = 1                    # the lab record's layout; a record without "schema" is version 1


class LabRecord(TypedDict, total=False):
    """What every backend's record holds (each driver adds its own keys beside these); the file
    also carries "schema" (SCHEMA), which save writes and read checks."""
    lab: str
    backend: str              # "libvirt" | "virtualbox": which driver `status`/`destroy` ask
    source: str | None        # the lab file, or "vnet create --mode ..."
    sandbox: str | None       # libvirt: the sandbox the lab is in (its lab defaults differ)
    lab_data: Any             # the lab file's data, resolved again by drivers.base.lab_from_record
    mgmt: dict[str, str]      # VM -> management address


class CorruptState(VnetError):
    """lab.json cannot be read: commands that need it stop; `destroy` goes on without it."""


@dataclass(frozen=True)
class Target:
    """Where a lab runs: a vnet sandbox, or any libvirt URI."""
    uri: str
    sandbox: str | None = None
    netns: str | None = None           # network namespace the host-side tools run in

    @property
    def key(self) -> str:
        return f"sandbox-{self.sandbox}" if self.sandbox else \
            "uri-" + hashlib.sha256(self.uri.encode()).hexdigest()[:12]


def target_dir(target: Target) -> Path:
    """<state_root>/labs/<target key>, checked to sit under <state_root>/labs."""
    if target.sandbox is not None:
        validate_name(target.sandbox)
    return child(state_root() / "labs", target.key)


def lab_dir(target: Target, lab: str) -> Path:
    """The lab's own directory; the name is checked (exit 2) and the path resolved under its
    target's directory before anyone writes or removes there."""
    return child(target_dir(target), check_name(lab, "lab name"))


def _made_lab_dir(target: Target, lab: str) -> Path:
    path = lab_dir(target, lab)
    path.mkdir(parents=True, exist_ok=True)
    (path / MARKER).touch()
    return path


def labs_of(target: Target) -> list[str]:
    base = target_dir(target)
    return sorted(p.name for p in base.iterdir()
                  if is_name(p.name) and (p / RECORD).exists()) if base.is_dir() else []


def targets_recording(lab: str) -> list[str]:
    """The target keys under which `lab` has a record. Tags carry only lab name and owner, and
    one libvirt URI has many spellings (each its own key), so `gc` asks every key."""
    check_name(lab, "lab name")
    base = state_root() / "labs"
    if not base.is_dir():
        return []
    return sorted(entry.name for entry in base.iterdir()
                  if entry.is_dir() and (entry / lab / RECORD).is_file())


def save(target: Target, lab: str, record: dict) -> Path:
    path = _made_lab_dir(target, lab)
    stored = {"schema": SCHEMA, **{k: v for k, v in record.items() if k != "schema"}}
    locks.write_atomic(path / "lab.json", json.dumps(stored, indent=2, default=str))
    return path


@contextmanager
def lab_lock(target: Target, lab: str, progress=None):
    """The lock that keeps `up`, `destroy` and `gc` of one lab from interleaving; in a sandbox
    also its sandbox's lock, shared, so `sandbox up/down` waits for them (always in this order:
    sandbox, then lab)."""
    with ExitStack() as stack:
        if target.sandbox:
            stack.enter_context(locks.held("sandbox", target.sandbox, progress, shared=True))
        stack.enter_context(locks.held("lab", f"{target.key}-{lab}", progress))
        yield


def read(target: Target, lab: str) -> dict | None:
    path = lab_dir(target, lab) / "lab.json"
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text())
        if not isinstance(record, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as exc:    # UnicodeDecodeError and JSONDecodeError included
        raise CorruptState(f"the state file {path} is corrupt ({exc})",
                           hint=f"`vnet destroy {lab}` removes what it can find of the lab") \
            from None
    return _migrate(record, path, lab)


def _migrate(record: dict, path: Path, lab: str) -> dict:
    """A record as this vnet reads it (the schema is the file's, not the record's: save adds it,
    read checks and drops it): older layouts brought up to SCHEMA, newer ones refused (a newer
    vnet may have put things there this one would not know to remove)."""
    schema = record.pop("schema", 1)              # records from before the schema field
    if not isinstance(schema, int) or schema > SCHEMA:
        raise CorruptState(f"the state file {path} has record schema {schema!r}; this vnet "
                           f"reads schema {SCHEMA} (it was written by a newer vnet)",
                           hint=f"use the vnet that created lab {lab}; `vnet destroy {lab}` "
                                "here removes only what carries the lab's tag")
    return record


def remove(target: Target, lab: str) -> None:
    """Remove the lab's directory, only if it holds the lab's own record (safepath); a URI's
    target directory too once it holds no lab, so a destroy leaves no trace (a sandbox's goes
    with the sandbox, remove_all; an `up` racing this recreates it: Path.mkdir(parents=True)
    retries a vanished parent)."""
    remove_tree(target_dir(target), check_name(lab, "lab name"), MARKERS)
    if target.sandbox is None:
        try:
            target_dir(target).rmdir()
        except OSError:          # another lab is there (ENOTEMPTY), or it is gone already
            pass


def remove_all(target: Target, progress: Callable[[str], None]) -> None:
    """Remove every lab directory of the target (its sandbox went), then the target's directory
    if that left it empty, and the remote hosts it remembers for `gc`. What is not a lab's is
    left alone with a warning."""
    base = target_dir(target)
    forget_remote_hosts(target)
    forget_vagrant_runs(target, progress)
    if not base.is_dir():
        return
    for entry in sorted(base.iterdir()):
        if not is_name(entry.name):
            progress(f"warning: {entry} is not a lab directory; left alone")
            continue
        try:
            remove(target, entry.name)
        except VnetError as exc:
            progress(f"warning: {exc.message}")
    if not any(base.iterdir()):
        base.rmdir()


def remote_hosts_dir(target: Target) -> Path:
    """<state root>/remote-hosts/<target key>: the remote hosts the target's labs used, one file
    per URI (drivers/libvirt/remotehosts.py), beside the labs and never taken for one."""
    return child(state_root() / REMOTE_HOSTS, target.key)


def forget_remote_hosts(target: Target) -> None:
    """The target went (its sandbox is down): nothing is left to `gc` through it."""
    d = remote_hosts_dir(target)
    if d.is_dir():
        for entry in d.iterdir():
            if entry.is_file() and not entry.is_symlink():
                entry.unlink()
        if not any(d.iterdir()):
            d.rmdir()


def vagrant_runs_dir(target: Target) -> Path:
    """<state root>/vagrant/<target key>: one directory per Vagrant project verified through the
    target (vagrant_run_dir), kept for its logs until the target goes."""
    return child(state_root() / VAGRANT_RUNS, target.key)


def vagrant_run_dir(target: Target, lab: str, project: Path) -> Path:
    """Where `vnet verify --vagrant PROJECT` keeps its listener logs and Ansible's files:
    <lab>-<hash of the project's path>, under vagrant_runs_dir. The verify writes
    VAGRANT_MARKER into it, so forget_vagrant_runs removes it and nothing else."""
    where = hashlib.sha256(str(project.resolve()).encode()).hexdigest()[:12]
    return child(vagrant_runs_dir(target), f"{check_name(lab, 'lab name')}-{where}")


def forget_vagrant_runs(target: Target, progress: Callable[[str], None],
                        locked: bool = False) -> None:
    """The Vagrant runs' directories of the target go (only those that carry VAGRANT_MARKER;
    anything else is named and left alone): when the target went (sandbox down), or for `vnet
    gc` (`locked`: each under its lab's lock, so a running `verify --vagrant` keeps its own)."""
    base = vagrant_runs_dir(target)
    if not base.is_dir():           # (child resolved it: a symlink out was refused)
        return
    for entry in sorted(base.iterdir()):
        lab = entry.name.rpartition("-")[0]
        try:
            with lab_lock(target, lab, progress) if locked and is_name(lab) else nullcontext():
                remove_tree(base, entry.name, (VAGRANT_MARKER,))
        except VnetError as exc:
            progress(f"warning: {exc.message}")
    if not any(base.iterdir()):
        base.rmdir()


def left_state(target: Target) -> list[Path]:
    """The directories a target keeps beside its sandbox (labs, Vagrant runs, remote hosts):
    what `down` removes, and what a sandbox that went without `down` can leave behind."""
    return [d for d in (target_dir(target), vagrant_runs_dir(target), remote_hosts_dir(target))
            if d.is_dir()]


def existing_key(target: Target, lab: str) -> Path:
    """The key of a lab that exists: what acts on a running lab never makes a new one (its
    directory would outlive a sandbox that went down meanwhile)."""
    key = lab_dir(target, lab) / KEY_FILE
    if not key.is_file():
        raise NotFound(f"lab {lab} has no SSH key in {key.parent}",
                       hint="vnet list shows the labs; `vnet up` recreates a lab's key")
    return key


def ssh_key(target: Target, lab: str) -> tuple[Path, str]:
    """The lab's own SSH key (never a shared insecure one): (private key path, public key)."""
    path = _made_lab_dir(target, lab)
    key = path / KEY_FILE
    if not key.exists():
        runner.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"vnet-{lab}",
                    "-f", str(key)])
    return key, key.with_name(KEY_FILE + ".pub").read_text().strip()
