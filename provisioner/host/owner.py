"""Whose lab is it: the state root's identity, written into every libvirt object's <metadata> tag
and every VirtualBox VM's extradata beside the lab name.

Two users, or two state roots, may share one hypervisor (`qemu:///system`, one VirtualBox).
Each only knows its own labs' records, so `gc` would take the other's labs for orphans. With
the owner id in the tag, `gc`, `list` and `destroy` touch only objects of this state root;
objects tagged by an older vnet (no owner) are reported and left alone.

The id is random, created once in <state_root>/owner-id (linked into place whole: two first runs
at once agree on one id), and lives as long as the state root.
"""
from __future__ import annotations

import os
import re
import secrets
import tempfile
from pathlib import Path

from ..errors import VnetError

OWNER_FILE = "owner-id"
OWNER_RE = re.compile(r"[0-9a-f]{16}")
# Rendered plans that are only printed (`vnet render`, --dry-run, goldens) carry this instead
# of the real id, so they need no state root; `vnet up` renders with owner_id().
PLACEHOLDER = "OWNER-ID-AT-UP"


def owner_file() -> Path:
    from .paths import state_root

    return state_root() / OWNER_FILE


def owner_id() -> str:
    """This state root's owner id, created on first use."""
    path = owner_file()
    if path.exists():
        return read_owner_id(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{OWNER_FILE}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(8) + "\n")
            os.fchmod(f.fileno(), 0o644)      # by the descriptor, never by a name (locks.py)
        try:
            os.link(tmp, path)      # appears whole, and only once: two first runs agree
        except FileExistsError:
            pass
    finally:
        os.unlink(tmp)
    return read_owner_id(path)


def read_owner_id(path: Path) -> str:
    text = path.read_text(errors="replace").strip()
    if not OWNER_RE.fullmatch(text):
        raise VnetError(f"{path} does not hold an owner id (16 hex digits): {text[:40]!r}",
                        hint="it names this state root's labs on the hypervisor; restore it, "
                             "or remove it only if no lab of this state root exists")
    return text
