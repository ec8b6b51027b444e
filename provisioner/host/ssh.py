"""The SSH control masters Ansible keeps per lab: where their sockets live (a short directory
under the state root, since unix socket paths are short) and how they are ended, so no ssh
process outlives a verification or a lab."""
from __future__ import annotations

import hashlib
from pathlib import Path

from . import runner
from .paths import state_root
from .state import Target


def control_dir(target: Target, lab: str) -> Path:
    """A short per-lab directory for SSH control sockets (unix socket paths are short)."""
    key = hashlib.sha256(f"{target.key}/{lab}".encode()).hexdigest()[:12]
    path = state_root() / "cp" / key
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def close_masters(directory: Path) -> None:
    """End the SSH control masters Ansible left, so no process outlives the verification."""
    for sock in directory.glob("*"):
        runner.run(["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "vnet"], check=False,
                   timeout=10)
        sock.unlink(missing_ok=True)


def guest_argv(key: str, address: str, command: str, user: str = "root",
               port: int | None = None) -> list[str]:
    """ssh argv that runs `command` on a guest over its control path with the lab's own key
    (no host key kept: every lab's guests are new)."""
    return ["ssh", "-i", str(key), "-o", "BatchMode=yes", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "StrictHostKeyChecking=no", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=10",
            *(["-p", str(port)] if port else []), f"{user}@{address}", command]
