"""The tiny guest image, built offline from Debian packages and cached by the digest of its inputs.

An image is three files: an uncompressed PVH `vmlinux` (boots about twice as fast under TCG), a
small gzip initramfs (busybox, the NIC/disk/fs modules and provisioner/guest/files/initramfs-init) and
one read-only ext4 root disk (python3.11, dropbear, busybox, provisioner/guest/files/rootfs) that every
VM of a lab shares. The compressed bzImage `vmlinuz` is kept beside them for boot loaders
(isolinux on VirtualBox's per-VM boot ISO, provisioner/guest/bootiso.py), which cannot load the ELF.
The builder runs as root, so it writes only regular files through one guard (`_Tree`) that
refuses any path resolving outside the tree, and makes every symlink last.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import lzma
import os
import re
import shutil
import struct
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from ..host import locks, runner
from ..host.paths import cache_dir
from ..errors import VnetError
from . import modneeds

KERNEL_META = "linux-image-amd64"   # resolved to the current linux-image-6.1.*-amd64
PACKAGES = ("busybox-static", "dropbear-bin", "python3.11-minimal", "libpython3.11-minimal",
            "libpython3.11-stdlib", "libc6", "zlib1g", "libexpat1", "libffi8", "libssl3",
            "libcrypt1", "libtomcrypt1", "libtommath1", "libgmp10", "libbz2-1.0", "liblzma5")
# insmod'ed by the initramfs with their dependencies (ext4 needs crc32c at mount time)
MODULES = ("virtio_pci", "virtio_blk", "crc32c_generic", "ext4", "virtio_net", "e1000",
           "virtio_console", "virtio_rng",
           "ahci", "sd_mod",   # SATA root (/dev/sdX): VirtualBox has no virtio disk controller
           "bonding")          # lab bonds (issue 17); the init makes them through sysfs
MODULE_ARGS = {"bonding": "max_bonds=0"}   # no bond0 unless the lab asks for one
# Loaded only where needed, with what only they need (guest/modneeds.py: each insmod costs TCG)
MODULE_NEEDS = {"ahci": modneeds.AHCI, "sd_mod": modneeds.AHCI, "bonding": modneeds.BOND}
CMDLINE_BASE = "console=ttyS0 quiet panic=-1"  # extra boot flags measured: no gain under TCG
ROOT_LABEL = "vnetroot"
GUEST = Path(__file__).resolve().with_name("files")   # the init and root files of the image
# Dropped from the root tree (after the usr-merge mapping); the stdlib keeps unittest.
SKIP = re.compile(r"usr/share/(doc|man|info|lintian|locale|bug|binfmts|pixmaps|applications)/"
                  r"|usr/lib/x86_64-linux-gnu/gconv/|etc/python3\.11/|usr/lib/python3\.11/"
                  r"(test|idlelib|tkinter|turtledemo|ensurepip|lib2to3|pydoc_data)/"
                  r"|usr/lib/python3\.11/(sitecustomize|turtle)\.py$")
MERGED = {"bin": "usr/bin", "sbin": "usr/sbin", "lib": "usr/lib", "lib64": "usr/lib64"}


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
        digest = _digest(_resolve(cache_dir() / "debs", update=False))
    except VnetError:  # no apt here: take the newest image built from this code
        hits = [m for m in list_cached() if m["name"] == "tiny" and m["code"] == _code_digest()]
        return _load(Path(max(hits, key=lambda m: m["built_at"])["path"])) if hits else None
    return _load(cache_dir() / "images" / f"tiny-{digest}")


def list_cached() -> list[dict]:
    rows = []
    for manifest in sorted((cache_dir() / "images").glob("*/manifest.json")):
        m = json.loads(manifest.read_text())
        size = sum(p.stat().st_blocks * 512 for p in manifest.parent.iterdir())
        rows.append({"name": m["name"], "digest": m["digest"], "size_mib": round(size / 2**20, 1),
                     "path": str(manifest.parent), "built_at": m["built_at"],
                     "code": m.get("code")})
    return rows


def build_tiny(progress: Callable[[str], None] = print, force: bool = False) -> Image:
    """Build (or reuse) the tiny image; a second call with the same inputs returns at once."""
    debdir = cache_dir() / "debs"
    debs = _resolve(debdir, update=True, progress=progress)
    final = cache_dir() / "images" / f"tiny-{_digest(debs)}"
    if not force and (final / "manifest.json").exists():
        return _load(final)
    started = time.monotonic()
    try:
        _download(debdir, debs, progress)
    except VnetError:  # stale lists: the mirror dropped the versions they name
        progress("a download failed: apt-get update, then resolving the packages again")
        runner.run(["apt-get", "update"], timeout=600)
        debs = _resolve(debdir, update=False)
        _download(debdir, debs, progress)
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
        modules = _kernel(kernel_pkg, out / "vmlinux")
        shutil.copyfile(sorted((kernel_pkg / "boot").glob("vmlinuz-*"))[0], out / "vmlinuz")
        progress("writing the initramfs")
        busybox = (staged["busybox-static"] / "bin" / "busybox").read_bytes()
        _initramfs(out / "initrd.gz", busybox, modules, _module_needs(modules))
        progress("assembling the root tree")
        tree = _Tree(work / "root")
        _root_tree(tree, staged, progress)
        size = _du(tree.root) * 5 // 4 + 16 * 2**20
        progress(f"writing the ext4 root disk ({size // 2**20} MiB)")
        runner.run(["mke2fs", "-q", "-F", "-t", "ext4", "-O", "^has_journal,^metadata_csum",
                    "-b", "4096", "-m", "0", "-L", ROOT_LABEL, "-E", "root_owner=0:0",
                    "-d", str(tree.root), str(out / "root.ext4"), f"{size // 1024}k"])
        manifest = {"name": "tiny", "digest": _digest(debs), "code": _code_digest(),
                    "kernel": "vmlinux", "initrd": "initrd.gz", "rootdisk": "root.ext4",
                    "vmlinuz": "vmlinuz",
                    "cmdline_base": CMDLINE_BASE, "packages": debs,
                    "modules": [m for m, _ in modules],
                    "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "build_seconds": round(time.monotonic() - started, 1)}
        (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        if force and final.exists():
            shutil.rmtree(final)
        publish(out, final, "manifest.json")
    progress(f"tiny image ready in {time.monotonic() - started:.0f}s: {final}")
    return _load(final)


# ---------------------------------------------------------------- inputs and cache

def _load(path: Path) -> Image | None:
    if not (path / "manifest.json").exists():
        return None
    m = json.loads((path / "manifest.json").read_text())
    return Image(m["name"], m["digest"], path / m["kernel"], path / m["initrd"],
                 path / m["rootdisk"], m["cmdline_base"],
                 path / m["vmlinuz"] if m.get("vmlinuz") else None)


def _code_digest() -> str:
    h = hashlib.sha256(Path(__file__).read_bytes())
    h.update(Path(modneeds.__file__).read_bytes())
    for p in sorted(q for q in GUEST.rglob("*") if q.is_file() and "__pycache__" not in q.parts):
        h.update(f"\0{p.relative_to(GUEST)}\0".encode())  # modes are set by the builder
        h.update(p.read_bytes())
    return h.hexdigest()


def _digest(debs: list[dict]) -> str:
    h = hashlib.sha256(_code_digest().encode())
    for d in debs:
        h.update(f"\0{d['file']}\0{d['sha256']}".encode())
    return h.hexdigest()[:16]


def _resolve(debdir: Path, update: bool, progress: Callable[[str], None] = print) -> list[dict]:
    """[{name, file, sha256}] for the kernel (first) and PACKAGES, as apt would fetch them now.
    Read from apt's local lists (no network), remembered until those lists change."""
    lists = sorted(Path("/var/lib/apt/lists").glob("*_Packages*"))
    stamp = hashlib.sha256(repr((PACKAGES, [(str(p), p.stat().st_mtime_ns) for p in lists]))
                           .encode()).hexdigest()
    memo = debdir / "resolved.json"
    remembered = _read_memo(memo, stamp)
    if remembered is not None:
        return remembered
    if not shutil.which("apt-get"):
        raise VnetError("apt-get is missing: the tiny image is built from Debian packages",
                        hint="build it on Debian/Ubuntu, or copy ~/.cache/vnet/images from one")
    try:
        debs = _print_uris()
    except VnetError:
        if not update:
            raise
        progress("apt-get update (package lists lack the guest packages)")
        runner.run(["apt-get", "update"], timeout=600)
        return _resolve(debdir, update=False)
    debdir.mkdir(parents=True, exist_ok=True)
    locks.write_atomic(memo, json.dumps({"stamp": stamp, "debs": debs}, indent=1))
    return debs


def _read_memo(memo: Path, stamp: str) -> list[dict] | None:
    """The remembered resolution if it is for these package lists; a torn or foreign file is
    a miss (it is rewritten), never a crash."""
    try:
        data = json.loads(memo.read_text())
    except (OSError, ValueError):       # missing, unreadable, not UTF-8, not JSON
        return None
    if not isinstance(data, dict) or data.get("stamp") != stamp \
            or not isinstance(data.get("debs"), list):
        return None
    return data["debs"]


def _print_uris() -> list[dict]:
    deps = runner.run(["apt-cache", "depends", KERNEL_META]).stdout
    kernel = re.search(r"Depends: (linux-image-[0-9][^\s]*)", deps)
    if not kernel:
        raise VnetError(f"apt-cache knows no kernel for {KERNEL_META}")
    out = runner.run(["apt-get", "download", "--print-uris", kernel.group(1), *PACKAGES]).stdout
    found = {}
    for m in re.finditer(r"^'[^']+' (\S+) \d+ SHA256:([0-9a-f]{64})$", out, re.M):
        found[m.group(1).split("_")[0]] = {"name": m.group(1).split("_")[0],
                                           "file": m.group(1), "sha256": m.group(2)}
    names = [kernel.group(1), *PACKAGES]
    if set(names) - set(found):
        raise VnetError(f"apt cannot find {sorted(set(names) - set(found))}")
    return [found[n] for n in names]


def _download(debdir: Path, debs: list[dict], progress: Callable[[str], None]) -> None:
    def ok(d: dict) -> bool:
        if not (debdir / d["file"]).exists():
            return False
        with open(debdir / d["file"], "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest() == d["sha256"]
    missing = [d for d in debs if not ok(d)]
    if missing:
        progress(f"apt-get download {len(missing)} packages into {debdir}")
        runner.run(["apt-get", "download", *[d["name"] for d in missing]], cwd=str(debdir),
                   timeout=900)
    bad = [d["file"] for d in missing if not ok(d)]
    if bad:
        raise VnetError(f"downloaded packages do not match apt's sha256: {bad}",
                        hint="run `apt-get update` and build again")


# ---------------------------------------------------------------- the tree guard

class _Tree:
    """A build tree that is only written through `write`/`mkdir` (regular files, inside the
    tree, never through a link) and gets its symlinks last, all relative, from `seal`."""

    def __init__(self, root: Path):
        root.mkdir(parents=True)
        self.root = Path(os.path.realpath(root))
        self.links: dict[str, str] = {}
        self.sealed = False

    def path(self, rel: str) -> Path:
        if self.sealed:
            raise VnetError(f"build tree is sealed (links made); refusing to write {rel}")
        p = self.root / rel.strip("/")
        parent = os.path.realpath(p.parent)  # equal to the lexical parent: no link on the way
        inside = parent == str(self.root) or parent.startswith(f"{self.root}{os.sep}")
        if ".." in p.parts or parent != str(p.parent) or os.path.islink(p) or not inside:
            raise VnetError(f"refusing to write {p}: the path goes through a link or leaves "
                            f"the build tree {self.root}")
        return p

    def mkdir(self, rel: str, mode: int = 0o755) -> None:
        p = self.path(rel)
        p.mkdir(mode=mode, parents=True, exist_ok=True)

    def write(self, rel: str, data: bytes, mode: int = 0o644) -> None:
        p = self.path(rel)
        p.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode & 0o7777)
            f.write(data)

    def link(self, rel: str, target: str) -> None:
        rel = rel.strip("/")
        if target.startswith("/"):  # absolute (guest) target: make it relative to the link
            target = os.path.relpath(_merged(target.lstrip("/")), os.path.dirname(rel) or ".")
        if os.path.normpath(os.path.join(os.path.dirname(rel), target)).startswith(".."):
            raise VnetError(f"refusing link {rel} -> {target}: it leaves the build tree")
        self.links.setdefault(rel, target)

    def seal(self) -> None:
        for rel, target in sorted(self.links.items()):
            p = self.path(rel)
            if not os.path.lexists(p):
                p.parent.mkdir(parents=True, exist_ok=True)
                os.symlink(target, p)
        self.sealed = True


def _merged(rel: str) -> str:
    head, _, rest = rel.partition("/")
    return f"{MERGED[head]}/{rest}".rstrip("/") if head in MERGED else rel


def _du(root: Path) -> int:
    return sum(-(-os.lstat(os.path.join(d, f)).st_size // 4096) * 4096 + 4096
               for d, _, files in os.walk(root) for f in files)


# ---------------------------------------------------------------- kernel and initramfs

def extract_vmlinux(vmlinuz: bytes) -> bytes:
    """The ELF vmlinux inside an XZ-compressed bzImage (bootable by QEMU through PVH)."""
    pos = vmlinuz.find(b"\xfd7zXZ\x00")
    while pos >= 0:
        try:
            elf = lzma.LZMADecompressor(lzma.FORMAT_XZ).decompress(vmlinuz[pos:])
        except lzma.LZMAError:
            elf = b""
        if elf.startswith(b"\x7fELF"):
            return elf
        pos = vmlinuz.find(b"\xfd7zXZ\x00", pos + 1)
    raise VnetError("no XZ-compressed ELF kernel found in vmlinuz",
                    hint="the tiny image needs a Debian kernel built with CONFIG_KERNEL_XZ")


def modinfo(ko: bytes) -> dict[str, str]:
    """The .modinfo section of an ELF64 little-endian kernel module."""
    if ko[:5] != b"\x7fELF\x02":
        raise VnetError("not an ELF64 kernel module")
    shoff, = struct.unpack_from("<Q", ko, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", ko, 0x3A)
    sections = [struct.unpack_from("<I20xQQ", ko, shoff + i * shentsize) for i in range(shnum)]
    names = sections[shstrndx][1]
    for name, off, size in sections:
        if ko[names + name:ko.index(b"\0", names + name)] == b".modinfo":
            fields = ko[off:off + size].decode(errors="replace").split("\0")
            return dict(f.split("=", 1) for f in fields if "=" in f)
    return {}


def module_order(wanted: Iterable[str], load: Callable[[str], bytes | None],
                 builtin: set[str]) -> list[str]:
    """Modules to insmod, dependencies first; load(name) gives a module's bytes or None."""
    order: list[str] = []

    def visit(name: str, seen: tuple[str, ...]) -> None:
        if name in order or name in builtin:
            return
        if name in seen:
            raise VnetError(f"kernel module dependency cycle: {' -> '.join(seen + (name,))}")
        data = load(name)
        if data is None:
            raise VnetError(f"kernel module {name} is neither built in nor in the kernel package")
        for dep in filter(None, modinfo(data).get("depends", "").split(",")):
            visit(dep.replace("-", "_"), seen + (name,))
        order.append(name)

    for name in wanted:
        visit(name, ())
    return order


def _kernel(pkg: Path, vmlinux: Path) -> list[tuple[str, bytes]]:
    vmlinuz = sorted((pkg / "boot").glob("vmlinuz-*"))
    if not vmlinuz:
        raise VnetError(f"no /boot/vmlinuz-* in the kernel package ({pkg.name})")
    vmlinux.write_bytes(extract_vmlinux(vmlinuz[0].read_bytes()))
    moddir = next((pkg / "lib" / "modules").iterdir())
    index = {re.sub(r"\.ko(\.xz)?$", "", p.name).replace("-", "_"): p
             for p in moddir.rglob("*.ko*") if re.search(r"\.ko(\.xz)?$", p.name)}
    builtin = {Path(line).name.removesuffix(".ko").replace("-", "_")
               for line in (moddir / "modules.builtin").read_text().split()}

    def load(name: str) -> bytes | None:
        p = index.get(name)
        return None if p is None else (lzma.decompress(p.read_bytes()) if p.suffix == ".xz"
                                       else p.read_bytes())
    return [(m, load(m)) for m in module_order(MODULES, load, builtin)]


def cpio_newc(entries: Iterable[tuple[str, int, bytes, int]]) -> bytes:
    """An initramfs cpio archive from (path, mode, data, rdev) in memory: no files on the host.
    A symlink's data is its target; rdev is (major << 8 | minor) for device nodes."""
    out = bytearray()
    for ino, (name, mode, data, rdev) in enumerate([*entries, ("TRAILER!!!", 0, b"", 0)], 1):
        fields = (ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev >> 8, rdev & 0xFF, len(name) + 1, 0)
        out += b"070701" + b"".join(b"%08X" % f for f in fields) + name.encode() + b"\0"
        out += b"\0" * (-len(out) % 4) + data
        out += b"\0" * (-len(out) % 4)
    return bytes(out)


def _initramfs(path: Path, busybox: bytes, modules: list[tuple[str, bytes]],
               needs: bytes = b"") -> None:
    d, f, lnk, chr_ = 0o40755, 0o100644, 0o120777, 0o20600
    entries = [(n, d, b"", 0) for n in ("bin", "dev", "proc", "sys", "newroot", "lib",
                                        "lib/modules")]
    entries += [("dev/console", chr_, b"", 5 << 8 | 1), ("bin/busybox", 0o100755, busybox, 0),
                ("bin/sh", lnk, b"busybox", 0),
                ("init", 0o100755, (GUEST / "initramfs-init").read_bytes(), 0),
                ("lib/modules/order", f, "".join(f"{m} {MODULE_ARGS.get(m, '')}".rstrip() + "\n"
                                                 for m, _ in modules).encode(), 0)]
    entries += [(f"lib/modules/{m}.ko", f, data, 0) for m, data in modules]
    entries += [("lib/modules/needs", f, needs, 0)]
    path.write_bytes(gzip.compress(cpio_newc(entries), compresslevel=6, mtime=0))


def _module_needs(modules: list[tuple[str, bytes]]) -> bytes:
    """lib/modules/needs: which modules the init skips where their condition fails."""
    data = dict(modules)
    depends = {m: [d.replace("-", "_") for d in modinfo(ko).get("depends", "").split(",") if d]
               for m, ko in data.items()}
    return modneeds.needs_file(modneeds.conditional(
        MODULES, list(data), lambda m: depends.get(m, []), MODULE_NEEDS))


# ---------------------------------------------------------------- the root tree

def _root_tree(tree: _Tree, staged: dict[str, Path], progress: Callable[[str], None]) -> None:
    skipped: set[str] = set()
    for pkg in staged.values():
        for dirpath, dirnames, files in os.walk(pkg):
            for name in dirnames + files:
                src = os.path.join(dirpath, name)
                rel = _merged(os.path.relpath(src, pkg))
                if SKIP.search(rel + ("/" if name in dirnames else "")):
                    skipped.add(src)
                    continue
                st = os.lstat(src)
                if os.path.islink(src):
                    tree.link(rel, os.readlink(src))
                elif name in dirnames:
                    tree.mkdir(rel)
                elif os.path.isfile(src):
                    tree.write(rel, Path(src).read_bytes(), st.st_mode)
            dirnames[:] = [n for n in dirnames if os.path.join(dirpath, n) not in skipped
                           and not os.path.islink(os.path.join(dirpath, n))]
    for src in sorted((GUEST / "rootfs").rglob("*")):
        if src.is_file():
            rel = str(src.relative_to(GUEST / "rootfs"))
            tree.write(rel, src.read_bytes(), 0o755 if rel.startswith("usr/lib/vnet/") else
                       0o600 if rel == "etc/shadow" else 0o644)
    for rel in ("dev", "proc", "sys", "run", "tmp", "var", "root", "mnt"):
        tree.mkdir(rel)
    progress("precompiling the python stdlib")
    _compile(tree.root)
    for line in (GUEST / "links.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            tree.link(*line.split())
    applets = runner.run([str(staged["busybox-static"] / "bin" / "busybox"), "--list-full"])
    for applet in applets.stdout.split():
        rel = _merged(applet)
        if "/" not in rel:  # /linuxrc: only for old-style initrds
            continue
        tree.link(rel, os.path.relpath("usr/bin/busybox", os.path.dirname(rel)))
    for head, target in MERGED.items():
        tree.link(head, target)
    tree.seal()


def _compile(root: Path) -> None:
    """Precompile the guest stdlib (unchecked-hash: the root is immutable, Python never re-stats).
    With another host Python, the guest's own python3.11 runs through the guest's loader."""
    stdlib = root / "usr" / "lib" / "python3.11"
    for dirpath, dirnames, files in os.walk(stdlib):  # compileall must meet no symlink
        for name in dirnames + files:
            if os.path.islink(os.path.join(dirpath, name)):
                raise VnetError(f"symlink in the tree before compileall: {dirpath}/{name}")
    argv, env = compile_command(root, stdlib)
    runner.run(argv, env=env, timeout=900, cwd="/")


def compile_command(root: Path, stdlib: Path) -> tuple[list[str], dict[str, str] | None]:
    """compileall's argv and environment. Never imports from the caller's directory: -I for
    this interpreter; -P -s for the guest's (-I would also drop the PYTHONHOME it needs)."""
    python, env = [sys.executable, "-I"], None
    if sys.version_info[:2] != (3, 11):
        lib = root / "usr" / "lib" / "x86_64-linux-gnu"
        python = [str(lib / "ld-linux-x86-64.so.2"), "--library-path", str(lib),
                  str(root / "usr" / "bin" / "python3.11"), "-P", "-s"]
        env = {"PYTHONHOME": str(root / "usr"), "PYTHONNOUSERSITE": "1"}
    return [*python, "-m", "compileall", "-q", "-j", "1" if env else "0",
            "--invalidation-mode", "unchecked-hash", str(stdlib)], env
