"""Guarded state paths. vnet runs as root and builds paths from names (argv, lab files, tags
read back from libvirt), so a path is resolved and checked to sit directly under its parent
before anything is written there, and a directory is removed only when it holds its owner's
own marker file: a wrong name can never reach `rmtree` of something vnet did not create."""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Iterable

from .errors import VnetError


def child(parent: Path, name: str) -> Path:
    """parent/name resolved (symlinks followed); VnetError unless it is a direct child of the
    resolved parent with exactly that name ("", ".", "..", "a/b" and symlinks out all fail)."""
    base = Path(parent).resolve()
    path = (base / name).resolve()
    if not name or path.parent != base or path.name != name:
        raise VnetError(f"refusing state path {str(base / name)!r}: it is not a directory "
                        f"directly under {base}")
    return path


def remove_tree(parent: Path, name: str, markers: Iterable[str]) -> bool:
    """Remove parent/name and everything in it, only if it is a real directory directly under
    parent that holds one of `markers` (its owner's record). False when there is nothing to
    remove; VnetError, and nothing removed, when the directory is not one of ours."""
    path = child(parent, name)
    if not path.exists():
        return False
    markers = tuple(markers)
    if not path.is_dir() or not any((path / m).is_file() for m in markers):
        raise VnetError(f"refusing to remove {path}: it holds none of {', '.join(markers)}, "
                        "so vnet did not create it", hint="remove it by hand if it is yours")
    shutil.rmtree(path)
    return True
