"""A built image's directory in the cache: <cache>/images/<name>-<digest>/ with a manifest.json
that names it. The pairing of the directory's name with its manifest is vnet's mark (a
manifest.json alone is a common file name), checked before anything removes a build."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

from ..errors import VnetError
from ..host.imageusers import users_of
from ..host.paths import cache_dir
from ..host.safepath import child, remove_tree

MANIFEST = "manifest.json"


def manifest_of(d: Path) -> dict | None:
    """The directory's manifest, only when it names the directory (<name>-<digest>)."""
    try:
        m = json.loads((d / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(m, dict) or d.name != f"{m.get('name')}-{m.get('digest')}":
        return None
    return m


def remove_build(path: Path) -> None:
    """Remove one built image directory (prune, or a forced rebuild): a direct child of the
    cache's images folder, resolved there, whose manifest names it."""
    images = cache_dir() / "images"
    if manifest_of(child(images, path.name)) is None:
        raise VnetError(f"refusing to remove {images / path.name}: its {MANIFEST} does not "
                        "name it, so vnet did not build it", hint="remove it by hand if it is yours")
    remove_tree(images, path.name, (MANIFEST,))


def set_aside_unreadable(final: Path, progress: Callable[[str], None]) -> None:
    """Before a build for `final`: a directory there whose manifest is unreadable or does not
    name it (a disk error, a hand edit) is neither reused nor removed (vnet cannot tell it
    built it) but renamed beside it, so the build goes ahead and nothing is lost."""
    images = cache_dir() / "images"
    path = child(images, final.name)
    if not (path.exists() or path.is_symlink()) or manifest_of(path) is not None:
        return
    users = users_of(path)
    if users:                       # moved, it would leave that lab's disks without a base
        raise VnetError(f"{path} has no {MANIFEST} that names it, and lab {users[0]} uses it: "
                        "vnet neither rebuilds nor moves it",
                        hint="destroy that lab, then build again (the folder is moved aside)")
    aside = child(images, f".unreadable-{final.name}-{time.strftime('%Y%m%dT%H%M%S')}")
    path.rename(aside)
    progress(f"{path} has no {MANIFEST} that names it: moved aside to {aside} and building "
             "again (look at it, then remove it)")
