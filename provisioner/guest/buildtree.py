"""The tiny image's root tree: the staged packages merged into one usr-merged tree, vnet's own
root files (provisioner/guest/files/rootfs), busybox's applet links and the precompiled stdlib.
The builder runs as root, so it writes only regular files through one guard (`Tree`) that
refuses any path resolving outside the tree, and makes every symlink last."""
from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Callable

from ..errors import VnetError
from ..host import runner
from . import bakedprobe

GUEST = Path(__file__).resolve().with_name("files")   # the init and root files of the image
# Dropped from the root tree (after the usr-merge mapping); the stdlib keeps unittest.
SKIP = re.compile(r"usr/share/(doc|man|info|lintian|locale|bug|binfmts|pixmaps|applications)/"
                  r"|usr/lib/x86_64-linux-gnu/gconv/|etc/python3\.11/|usr/lib/python3\.11/"
                  r"(test|idlelib|tkinter|turtledemo|ensurepip|lib2to3|pydoc_data)/"
                  r"|usr/lib/python3\.11/(sitecustomize|turtle)\.py$")
MERGED = {"bin": "usr/bin", "sbin": "usr/sbin", "lib": "usr/lib", "lib64": "usr/lib64"}


class Tree:
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
            target = os.path.relpath(merged(target.lstrip("/")), os.path.dirname(rel) or ".")
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


def merged(rel: str) -> str:
    head, _, rest = rel.partition("/")
    return f"{MERGED[head]}/{rest}".rstrip("/") if head in MERGED else rel


def root_tree(tree: Tree, staged: dict[str, Path], progress: Callable[[str], None]) -> None:
    skipped: set[str] = set()
    for pkg in staged.values():
        for dirpath, dirnames, files in os.walk(pkg):
            for name in dirnames + files:
                src = os.path.join(dirpath, name)
                rel = merged(os.path.relpath(src, pkg))
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
    probe = bakedprobe.probe_source()
    tree.write(bakedprobe.source_rel(probe), probe)
    progress("precompiling the python stdlib and vnet's probe module")
    _compile(tree.root)
    if not (tree.root / bakedprobe.baked_path(probe).lstrip("/")).is_file():
        raise VnetError(f"compileall made no {bakedprobe.baked_path(probe)}",
                        hint="the guest's Python must be 3.11 (guest/debs.py)")
    for line in (GUEST / "links.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            tree.link(*line.split())
    applets = runner.run([str(staged["busybox-static"] / "bin" / "busybox"), "--list-full"])
    for applet in applets.stdout.split():
        rel = merged(applet)
        if "/" not in rel:  # /linuxrc: only for old-style initrds
            continue
        tree.link(rel, os.path.relpath("usr/bin/busybox", os.path.dirname(rel)))
    for head, target in MERGED.items():
        tree.link(head, target)
    tree.seal()


def _compile(root: Path) -> None:
    """Precompile the guest stdlib and vnet's own Python (the baked probe) (unchecked-hash: the
    root is immutable, Python never re-stats). With another host Python, the guest's own
    python3.11 runs through the guest's loader."""
    stdlib = root / "usr" / "lib" / "python3.11"
    own = root / "usr" / "lib" / "vnet"
    for top in (stdlib, own):
        for dirpath, dirnames, files in os.walk(top):  # compileall must meet no symlink
            for name in dirnames + files:
                if os.path.islink(os.path.join(dirpath, name)):
                    raise VnetError(f"symlink in the tree before compileall: {dirpath}/{name}")
    argv, env = compile_command(root, stdlib, own)
    runner.run(argv, env=env, timeout=900, cwd="/")


def compile_command(root: Path, *dirs: Path) -> tuple[list[str], dict[str, str] | None]:
    """compileall's argv and environment. Never imports from the caller's directory: -I for
    this interpreter; -P -s for the guest's (-I would also drop the PYTHONHOME it needs)."""
    python, env = [sys.executable, "-I"], None
    if sys.version_info[:2] != (3, 11):
        lib = root / "usr" / "lib" / "x86_64-linux-gnu"
        python = [str(lib / "ld-linux-x86-64.so.2"), "--library-path", str(lib),
                  str(root / "usr" / "bin" / "python3.11"), "-P", "-s"]
        env = {"PYTHONHOME": str(root / "usr"), "PYTHONNOUSERSITE": "1"}
    return [*python, "-m", "compileall", "-q", "-j", "1" if env else "0",
            "--invalidation-mode", "unchecked-hash", *map(str, dirs)], env
