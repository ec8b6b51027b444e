"""The Debian packages the tiny image is built from: which files apt would fetch now
(resolved from apt's local lists, remembered until they change) and their download into the
cache, checked against apt's sha256."""
from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path
from typing import Callable

from ..errors import VnetError
from ..host import locks, runner
from ..host.paths import cache_dir

KERNEL_META = "linux-image-amd64"   # resolved to the current linux-image-6.1.*-amd64
PACKAGES = ("busybox-static", "dropbear-bin", "python3.11-minimal", "libpython3.11-minimal",
            "libpython3.11-stdlib", "libc6", "zlib1g", "libexpat1", "libffi8", "libssl3",
            "libcrypt1", "libtomcrypt1", "libtommath1", "libgmp10", "libbz2-1.0", "liblzma5",
            # tunnels (issue 17): iproute2's full `ip` (busybox's lacks xfrm, vxlan, gre and
            # wireguard links) with the libraries it links, and wireguard-tools' `wg`
            "iproute2", "libbpf1", "libelf1", "libmnl0", "libbsd0", "libmd0", "libcap2",
            "wireguard-tools")
MEMO = "resolved.json"              # in the debs dir: the last resolution and its lists_stamp


def lists_stamp() -> str:
    """What a remembered resolution (MEMO) is valid for: PACKAGES and apt's local lists."""
    lists = sorted(Path("/var/lib/apt/lists").glob("*_Packages*"))
    return hashlib.sha256(repr((PACKAGES, [(str(p), p.stat().st_mtime_ns) for p in lists]))
                          .encode()).hexdigest()


def resolve(debdir: Path, update: bool, progress: Callable[[str], None] = print) -> list[dict]:
    """[{name, file, sha256}] for the kernel (first) and PACKAGES, as apt would fetch them now.
    Read from apt's local lists (no network), remembered until those lists change."""
    stamp = lists_stamp()
    memo = debdir / MEMO
    remembered = _read_memo(memo, stamp)
    if remembered is not None:
        return remembered
    if not shutil.which("apt-get"):
        raise VnetError("apt-get is missing: the tiny image is built from Debian packages",
                        hint=f"build it on Debian/Ubuntu, or copy {cache_dir() / 'images'} from one")
    try:
        debs = _print_uris()
    except VnetError:
        if not update:
            raise
        progress("apt-get update (package lists lack the guest packages)")
        runner.run(["apt-get", "update"], timeout=600)
        return resolve(debdir, update=False)
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
            or not isinstance(data.get("debs"), list) or not well_formed(data["debs"]):
        return None
    return data["debs"]


DEB_NAME = r"[a-z0-9][a-z0-9+.-]*"                      # Debian policy 5.6.1, package names
# apt's file name of a package: NAME_VERSION_ARCH.deb (an epoch's ':' written as %3a)
DEB_FILE = re.compile(rf"({DEB_NAME})_([A-Za-z0-9.+~:%-]+)_([a-z0-9]+)\.deb")
SHA256 = re.compile(r"[0-9a-f]{64}")


def well_formed(debs) -> bool:
    """The kernel, then PACKAGES, each {name, file, sha256} as _print_uris makes them: names
    and files become paths root unpacks into and reads (images.build_tiny), so a memo that
    anything else wrote (a file name with a '/', a name with '..') is no resolution."""
    names = [d.get("name") if isinstance(d, dict) else None for d in debs]
    if len(debs) != len(PACKAGES) + 1 or names[1:] != list(PACKAGES) \
            or not isinstance(names[0], str) or not names[0].startswith("linux-image-"):
        return False
    return all(safe_entry(d) for d in debs)


def safe_entry(d: dict) -> bool:
    """{name, file, sha256}: a package name, apt's file name of that package, a sha256."""
    if not all(isinstance(d.get(k), str) for k in ("name", "file", "sha256")):
        return False
    m = DEB_FILE.fullmatch(d["file"])
    return bool(m) and m.group(1) == d["name"] and bool(SHA256.fullmatch(d["sha256"]))


def last_resolution(debdir: Path) -> list[dict]:
    """The packages the last resolution named (MEMO), whatever apt's lists say now; [] when
    there is none or it is not well formed (vnet image prune keeps these)."""
    try:
        debs = json.loads((debdir / MEMO).read_text()).get("debs")
    except (OSError, ValueError, AttributeError):
        return []
    return debs if isinstance(debs, list) and well_formed(debs) else []


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
    debs = [found[n] for n in names]
    if not well_formed(debs):
        raise VnetError(f"apt named a package file vnet will not use as a path: {debs}")
    return debs


def download(debdir: Path, debs: list[dict], progress: Callable[[str], None]) -> None:
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

