"""Where a lab's own files live: its resolved lab, SSH key, serial logs and helper PIDs.

Layout: <state_root>/labs/<target>/<lab>/ where target is the sandbox name, or a hash of the
libvirt URI for labs outside a sandbox. `destroy` removes the directory last, so a crash at any
point leaves something `destroy` or `gc` can find again."""
from __future__ import annotations

import hashlib
import json
import shutil
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from . import locks, runner
from .sandbox import state_root


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


def lab_dir(target: Target, lab: str) -> Path:
    return state_root() / "labs" / target.key / lab


def labs_of(target: Target) -> list[str]:
    base = state_root() / "labs" / target.key
    return sorted(p.name for p in base.iterdir() if (p / "lab.json").exists()) if base.is_dir() else []


def save(target: Target, lab: str, record: dict) -> Path:
    path = lab_dir(target, lab)
    path.mkdir(parents=True, exist_ok=True)
    locks.write_atomic(path / "lab.json", json.dumps(record, indent=2, default=str))
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
    return json.loads(path.read_text()) if path.exists() else None


def remove(target: Target, lab: str) -> None:
    shutil.rmtree(lab_dir(target, lab), ignore_errors=True)


def ssh_key(target: Target, lab: str) -> tuple[Path, str]:
    """The lab's own SSH key (never a shared insecure one): (private key path, public key)."""
    path = lab_dir(target, lab)
    path.mkdir(parents=True, exist_ok=True)
    key = path / "id_ed25519"
    if not key.exists():
        runner.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"vnet-{lab}",
                    "-f", str(key)])
    return key, (path / "id_ed25519.pub").read_text().strip()
