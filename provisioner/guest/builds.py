"""A built image's directory in the cache: <cache>/images/<name>-<digest>/ with a manifest.json
that names it. The pairing of the directory's name with its manifest is vnet's mark (a
manifest.json alone is a common file name), checked before anything removes a build."""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import VnetError
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
