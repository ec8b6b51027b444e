"""The image cache as a whole: what it holds, how big it is, and pruning what no lab uses.

Entries (each carries vnet's own marker, or it is not an entry and is never touched):
- `<cache>/images/<name>-<digest>/` with a `manifest.json`: tiny image builds and locally built
  cloud images (provisioner/guest/cloudbuild.py);
- `<cache>/cloud/<sha256>.qcow2`: verified cloud image downloads (provisioner/guest/cloudimages.py),
  a regular file named by its own 64-hex sha256 that starts with the qcow2 magic;
- `<cache>/boxes/vnet-tiny-<digest>-<provider>.box`: Vagrant boxes of a tiny image
  (provisioner/guest/vagrantbox.py), a regular tar file by that exact name. `vagrant box add`
  copies a box into Vagrant's own home, so no lab uses the file; each image build makes new ones;
- `<cache>/debs/<package>_<version>_<arch>.deb`: the Debian packages images and the boot ISO's
  loader are built from (provisioner/guest/debs.py), a regular file in ar format by apt's name;
- `<cache>/isolinux/<16 hex>/`: the boot ISO's loader files (provisioner/guest/bootiso.py), a
  folder holding exactly isolinux.bin and ldlinux.c32.

The build for the current inputs (what the next `vnet up` would take) is kept too, and so are
its boxes; of the packages and loaders, the packages the last resolution named (debs.MEMO: what
the next tiny build takes), and the newest of each name (the newest loader is what a boot ISO
built without apt takes; the newest package is likely the next resolution's).
An image is in use when a lab record under the state root names it: the record's JSON holds the
image directory's path or the cloud image's sha256 (the lab file pins it), or one of the lab's
overlays has it as backing file. A lab record that names no tiny image (written before records
said which one) keeps every tiny image. Removal goes through safepath: the path is resolved and
must be a direct child of its cache folder; a directory is removed only with its manifest in it.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import Unsupported, VnetError
from ..host.imageusers import QCOW2_MAGIC, Use, uses
from ..host.paths import cache_dir
from ..host.safepath import child, remove_tree
from .builds import MANIFEST, manifest_of, remove_build
from .debs import DEB_FILE, last_resolution

CLOUD_FILE = re.compile(r"[0-9a-f]{64}\.qcow2")     # always fullmatch
BOX_FILE = re.compile(r"vnet-tiny-([0-9a-f]{16})-(libvirt|virtualbox)\.box")
LOADER_DIR = re.compile(r"[0-9a-f]{16}")
LOADER_FILES = {"isolinux.bin", "ldlinux.c32"}       # bootiso.LOADER_FILES' names
AR_MAGIC = b"!<arch>\n"


@dataclass(frozen=True)
class Entry:
    kind: str            # "image" (a built directory), "download" (cloud/<sha256>.qcow2)
    #                      or "box" (boxes/vnet-tiny-<digest>-<provider>.box)
    name: str            # tiny, debian12, ... ; "cloud" for downloads; box-<provider> for boxes
    digest: str
    path: Path
    size: int            # bytes on disk
    built_at: str        # ISO time (downloads: the file's mtime)
    sha256: str | None   # a cloud image's sha256 (what lab files pin)


def _disk_usage(path: Path) -> int:
    if path.is_file():
        return path.stat().st_blocks * 512
    return sum(os.lstat(os.path.join(d, f)).st_blocks * 512
               for d, _, files in os.walk(path) for f in files)


def _iso(mtime: float) -> str:
    import time

    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(mtime))


def entries() -> list[Entry]:
    """Every cache entry that carries vnet's marker, newest first within each name."""
    found: list[Entry] = []
    images = cache_dir() / "images"
    if images.is_dir():
        for d in sorted(images.iterdir()):
            manifest = d / MANIFEST
            if d.is_symlink() or not d.is_dir() or not manifest.is_file():
                continue
            m = manifest_of(d)
            if m is None:
                continue
            found.append(Entry("image", str(m.get("name", "?")), str(m.get("digest", "")), d,
                               _disk_usage(d), str(m.get("built_at", "")), m.get("sha256")))
    cloud = cache_dir() / "cloud"
    if cloud.is_dir():
        for f in sorted(cloud.iterdir()):
            if CLOUD_FILE.fullmatch(f.name) and _is_qcow2_file(f):
                found.append(Entry("download", "cloud", f.name[:16], f, _disk_usage(f),
                                   _iso(f.stat().st_mtime), f.name[:64]))
    boxes = cache_dir() / "boxes"
    if boxes.is_dir():
        for f in sorted(boxes.iterdir()):
            if (m := BOX_FILE.fullmatch(f.name)) and _is_tar_file(f):
                found.append(Entry("box", f"box-{m.group(2)}", m.group(1), f, _disk_usage(f),
                                   _iso(f.stat().st_mtime), None))
    return sorted(found + _package_entries(), key=lambda e: (e.name, e.built_at), reverse=True)


def _package_entries() -> list[Entry]:
    found = []
    debs = cache_dir() / "debs"
    for f in sorted(debs.iterdir()) if debs.is_dir() else []:
        if (m := DEB_FILE.fullmatch(f.name)) and _has_bytes(f, AR_MAGIC):
            found.append(Entry("package", f"deb-{m.group(1)}", f.name, f, _disk_usage(f),
                               _iso(f.stat().st_mtime), None))
    loaders = cache_dir() / "isolinux"
    for d in sorted(loaders.iterdir()) if loaders.is_dir() else []:
        if _is_loader_dir(d):
            found.append(Entry("loader", "isolinux", d.name, d, _disk_usage(d),
                               _iso(d.stat().st_mtime), None))
    return found


def _has_bytes(path: Path, magic: bytes, at: int = 0) -> bool:
    """A regular file (no symlink) with `magic` at offset `at`: an entry's mark."""
    if path.is_symlink() or not path.is_file():
        return False
    with open(path, "rb") as f:
        return f.read(at + len(magic))[at:] == magic


def _is_loader_dir(path: Path) -> bool:
    return bool(LOADER_DIR.fullmatch(path.name)) and not path.is_symlink() and path.is_dir() \
        and {p.name for p in path.iterdir()} == LOADER_FILES \
        and all(not p.is_symlink() and p.is_file() for p in path.iterdir())


def current_packages(found: list[Entry]) -> set[Path]:
    """The packages the last resolution named (debs.MEMO) and the newest package of each name
    and loader (the module docstring says why): never pruned."""
    newest: dict[str, Entry] = {}
    for entry in found:
        if entry.kind in ("package", "loader") and (
                entry.name not in newest or entry.built_at > newest[entry.name].built_at):
            newest[entry.name] = entry
    debdir = cache_dir() / "debs"
    return {e.path for e in newest.values()} | {debdir / d["file"]
                                                for d in last_resolution(debdir)}


def _is_qcow2_file(path: Path) -> bool:
    return _has_bytes(path, QCOW2_MAGIC)


def _is_tar_file(path: Path) -> bool:
    """A POSIX tar file ("ustar" at offset 257), as vagrantbox writes."""
    return _has_bytes(path, b"ustar", 257)


def used_by(entry: Entry, all_uses: list[Use]) -> str | None:
    """The first lab that uses the entry, or None."""
    for use in all_uses:
        if str(entry.path) in use.text or (entry.sha256 and entry.sha256 in use.text):
            return use.where
        if any(Path(b).name == entry.path.name or b.startswith(f"{entry.path}/")
               for b in use.backing):
            return use.where
        if entry.name == "tiny" and "/images/tiny-" not in use.text:
            return f"{use.where} (its record names no tiny image)"
    return None


def current_builds() -> set[Path]:
    """The images the next `vnet up` / `vnet image build` would use (never rebuilt needlessly)."""
    from . import cloudbuild, images, vagrantbox

    found = set()
    try:
        tiny = images.find_tiny()
        if tiny:
            found.add(tiny.kernel.parent)
            found.update(cache_dir() / "boxes" / vagrantbox.box_file_name(tiny.digest, provider)
                         for provider in vagrantbox.PROVIDERS)
        for name in cloudbuild.RECIPES:
            built = cloudbuild.find(name)
            if built:
                found.add(built.disk.parent)
    except VnetError:            # no apt here: the --keep newest stand for the current ones
        pass
    return found


def prune(keep: int, dry_run: bool = False,
          progress: Callable[[str], None] = print) -> list[Entry]:
    """Remove the entries beyond the `keep` newest of each name that no lab uses; returns them."""
    if keep < 0:
        raise Unsupported(f"--keep: {keep} is negative; give 0 or more")
    all_uses = uses()
    found = entries()
    current = current_builds() | current_packages(found)
    removed, seen = [], {}
    for entry in found:                           # newest first within each name
        seen[entry.name] = seen.get(entry.name, 0) + 1
        lab = used_by(entry, all_uses)
        if lab:
            progress(f"kept {entry.path}: used by lab {lab}")
            continue
        if entry.path in current:
            progress(f"kept {entry.path}: " + ("the newest of its name, or one the last "
                                                 "package resolution named"
                                                 if entry.kind in ("package", "loader")
                                                 else "the build for this vnet's current inputs"))
            continue
        if seen[entry.name] <= keep:
            progress(f"kept {entry.path}: one of the {keep} newest {entry.name} images")
            continue
        if not dry_run:
            _remove(entry)
        progress(f"{'would remove' if dry_run else 'removed'} {entry.path} "
                 f"({entry.size / 2**20:.1f} MiB)")
        removed.append(entry)
    return removed


def _remove(entry: Entry) -> None:
    if entry.kind == "image":
        remove_build(entry.path)
        return
    if entry.kind == "package":
        path = child(cache_dir() / "debs", entry.path.name)
        if not DEB_FILE.fullmatch(path.name) or not _has_bytes(path, AR_MAGIC):
            raise VnetError(f"refusing to remove {path}: not a package vnet downloaded")
        path.unlink()
        return
    if entry.kind == "loader":
        path = child(cache_dir() / "isolinux", entry.path.name)
        if not _is_loader_dir(path):
            raise VnetError(f"refusing to remove {path}: not a loader folder vnet made")
        remove_tree(cache_dir() / "isolinux", path.name, sorted(LOADER_FILES))
        return
    if entry.kind == "box":
        path = child(cache_dir() / "boxes", entry.path.name)
        if not BOX_FILE.fullmatch(path.name) or not _is_tar_file(path):
            raise VnetError(f"refusing to remove {path}: not a box vnet built")
        path.unlink()
        return
    path = child(cache_dir() / "cloud", entry.path.name)
    if not CLOUD_FILE.fullmatch(path.name) or not _is_qcow2_file(path):
        raise VnetError(f"refusing to remove {path}: not a cloud image vnet downloaded")
    path.unlink()
