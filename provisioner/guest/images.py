"""The tiny guest image, built offline from Debian packages and cached by the digest of its inputs.

An image is three files: an uncompressed PVH `vmlinux` (boots about twice as fast under TCG), a
small gzip initramfs (busybox, the NIC/disk/fs modules and provisioner/guest/files/initramfs-init)
and one read-only root disk (python3.11, dropbear, busybox, provisioner/guest/files/rootfs) that
every VM of a lab shares: an uncompressed squashfs, whose one small module replaces ext4's five
insmods (0.2 s of each TCG boot), and which no guest can write. The compressed bzImage
`vmlinuz` is kept beside them for boot loaders (isolinux on VirtualBox's per-VM boot ISO,
provisioner/guest/bootiso.py), which cannot load the ELF.
Built by three helpers: debs.py (the packages), kernel.py (vmlinux, modules, initramfs) and
buildtree.py (the root tree, written through a guard that never leaves it). The cache key covers
the package files and the source of every builder module (BUILDERS) and guest file.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from . import bakedprobe, builds, buildtree, debs as guestdebs, kernel, modneeds
from ..host import runner
from ..host.paths import cache_dir
from ..errors import VnetError
# Kept importable from here (`images.MODULES`, `images.cpio_newc`, ...) for their callers.
from .buildtree import GUEST, compile_command  # noqa: F401
from .debs import KERNEL_META, PACKAGES  # noqa: F401
from .kernel import MODULES, cpio_newc, extract_vmlinux, modinfo, module_order  # noqa: F401

CMDLINE_BASE = "console=ttyS0 quiet panic=-1"  # extra boot flags measured: no gain under TCG
ROOT_DISK = "root.squashfs"      # the initramfs finds it by its magic (no label: squashfs has none)
# The modules whose code shapes the image: their source is part of its cache key (_code_digest),
# so a change to any of them builds a new image. So is the probe module the image carries
# precompiled (guest/bakedprobe.py): a new probe gets a new image, not the slow path.
BUILDERS = (Path(__file__).resolve(), Path(buildtree.__file__).resolve(),
            Path(guestdebs.__file__).resolve(), Path(kernel.__file__).resolve(),
            Path(modneeds.__file__).resolve(), Path(bakedprobe.__file__).resolve(),
            Path(builds.__file__).resolve())


@dataclass(frozen=True)
class Image:
    name: str
    digest: str
    kernel: Path
    initrd: Path
    rootdisk: Path
    cmdline_base: str
    vmlinuz: Path | None = None    # the bzImage for boot loaders; None in images built before it


def publish(built: Path, final: Path, marker: str) -> None:
    """Move a finished build into the cache in one rename; when another build with the same
    inputs got there first (its `marker` file exists), keep that one."""
    try:
        built.rename(final)
    except OSError:
        if not (final / marker).exists():
            raise


def find_tiny() -> Image | None:
    """The cached tiny image for the current inputs, or None; never builds or downloads."""
    try:
        digest = _digest(guestdebs.resolve(cache_dir() / "debs", update=False))
    except VnetError:  # no apt here: take the newest image built from this code
        hits = [m for m in list_cached() if m["name"] == "tiny" and m["code"] == _code_digest()]
        return _load(Path(max(hits, key=lambda m: m["built_at"])["path"])) if hits else None
    return _load(cache_dir() / "images" / f"tiny-{digest}")


def list_cached() -> list[dict]:
    rows = []
    for manifest in sorted((cache_dir() / "images").glob("*/manifest.json")):
        m = builds.manifest_of(manifest.parent)
        if m is None:
            continue
        size = sum(p.stat().st_blocks * 512 for p in manifest.parent.iterdir())
        rows.append({"name": m["name"], "digest": m["digest"], "size_mib": round(size / 2**20, 1),
                     "path": str(manifest.parent), "built_at": m["built_at"],
                     "code": m.get("code")})
    return rows


def build_tiny(progress: Callable[[str], None] = print, force: bool = False) -> Image:
    """Build (or reuse) the tiny image; a second call with the same inputs returns at once."""
    debdir = cache_dir() / "debs"
    debs = guestdebs.resolve(debdir, update=True, progress=progress)
    final = cache_dir() / "images" / f"tiny-{_digest(debs)}"
    builds.set_aside_unreadable(final, progress)
    if not force and (final / "manifest.json").exists():
        return _load(final)
    if runner.which("mksquashfs") is None:      # before any download: the last step needs it
        raise VnetError("building the tiny image needs mksquashfs, which is not installed",
                        hint="apt-get install squashfs-tools")
    started = time.monotonic()
    try:
        guestdebs.download(debdir, debs, progress)
    except VnetError:  # stale lists: the mirror dropped the versions they name
        progress("a download failed: apt-get update, then resolving the packages again")
        runner.run(["apt-get", "update"], timeout=600)
        debs = guestdebs.resolve(debdir, update=False)
        guestdebs.download(debdir, debs, progress)
        final = cache_dir() / "images" / f"tiny-{_digest(debs)}"
    final.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".build-", dir=final.parent) as work:
        work = Path(work)
        out = work / "image"
        out.mkdir()
        staged = {}
        for d in debs:
            progress(f"unpacking {d['file']}")
            staged[d["name"]] = work / "staging" / d["name"]
            staged[d["name"]].mkdir(parents=True)
            runner.run(["dpkg-deb", "-x", str(debdir / d["file"]), str(staged[d["name"]])])
        kernel_pkg = staged.pop(debs[0]["name"])
        progress("extracting the PVH vmlinux and kernel modules")
        modules = kernel.kernel_and_modules(kernel_pkg, out / "vmlinux")
        shutil.copyfile(sorted((kernel_pkg / "boot").glob("vmlinuz-*"))[0], out / "vmlinuz")
        progress("writing the initramfs")
        busybox = (staged["busybox-static"] / "bin" / "busybox").read_bytes()
        kernel.initramfs(out / "initrd.gz", (GUEST / "initramfs-init").read_bytes(), busybox,
                         modules, kernel.module_needs(modules))
        progress("assembling the root tree")
        tree = buildtree.Tree(work / "root")
        buildtree.root_tree(tree, staged, progress)
        progress("writing the squashfs root disk")
        # uncompressed (-noI -noId -noD -noF -noX): a TCG guest would pay for every decompression
        runner.run(["mksquashfs", str(tree.root), str(out / ROOT_DISK), "-noappend", "-quiet",
                    "-no-progress", "-all-root", "-no-xattrs", "-noI", "-noId", "-noD", "-noF",
                    "-mkfs-time", "0", "-all-time", "0", "-processors", "1"])
        manifest = {"name": "tiny", "digest": _digest(debs), "code": _code_digest(),
                    "kernel": "vmlinux", "initrd": "initrd.gz", "rootdisk": ROOT_DISK,
                    "vmlinuz": "vmlinuz",
                    "cmdline_base": CMDLINE_BASE, "packages": debs,
                    "modules": [m for m, _ in modules],
                    "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "build_seconds": round(time.monotonic() - started, 1)}
        (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        if force and final.exists():
            builds.remove_build(final)
        publish(out, final, "manifest.json")
    progress(f"tiny image ready in {time.monotonic() - started:.0f}s: {final}")
    return _load(final)


# ---------------------------------------------------------------- inputs and cache

def _load(path: Path) -> Image | None:
    m = builds.manifest_of(path)           # None: not built, or not readable (never a crash)
    if m is None:
        return None
    return Image(m["name"], m["digest"], path / m["kernel"], path / m["initrd"],
                 path / m["rootdisk"], m["cmdline_base"],
                 path / m["vmlinuz"] if m.get("vmlinuz") else None)


def _code_digest() -> str:
    h = hashlib.sha256()
    for source in BUILDERS:
        h.update(f"\0{source.name}\0".encode())
        h.update(source.read_bytes())
    h.update(b"\0vnet_probe.py\0" + bakedprobe.probe_source())
    for p in sorted(q for q in GUEST.rglob("*") if q.is_file() and "__pycache__" not in q.parts):
        h.update(f"\0{p.relative_to(GUEST)}\0".encode())  # modes are set by the builder
        h.update(p.read_bytes())
    return h.hexdigest()


def _digest(debs: list[dict]) -> str:
    h = hashlib.sha256(_code_digest().encode())
    for d in debs:
        h.update(f"\0{d['file']}\0{d['sha256']}".encode())
    return h.hexdigest()[:16]
