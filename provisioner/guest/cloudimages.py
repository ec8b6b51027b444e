"""Cloud images (Debian/Ubuntu genericcloud qcow2...) pinned by sha256: fetch once into the cache,
then give each VM its own copy-on-write overlay in the lab's state dir.

Cache layout: <paths.cache_dir()>/cloud/<sha256>.qcow2. A download streams into a temporary
file beside it, hashing as it goes, and is renamed into place only when its sha256 matches the
lab file's and `check_image` accepts it; a mismatch (or an interrupted download) leaves nothing
behind. A download larger than the cap (8 GiB; VNET_CLOUD_IMAGE_MAX_GIB sets another) stops
there. Every later use hashes the cached file again and checks it again (a few seconds for a
Debian image; the cache is only as trusted as its directory): a changed file is removed and
downloaded anew.

What QEMU would follow out of the file is refused before QEMU or `qemu-img create -b` sees it:
a backing file (the guest would read any host file, /etc/shadow or a disk) and an external data
file (writes would land in it). The qcow2 header is read first (see "backing_file_offset" and
incompatible feature bit 2, "External data file", in QEMU's docs/interop/qcow2.txt), then
`qemu-img info -f qcow2 --output json` must agree.

The overlays and seed ISOs live in the lab's state dir (`overlay_path`, `seed_path`: pure, the
renderer computes the same paths), so `vnet destroy` removes them with that directory. The base
images stay in the cache for the next lab.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, TextIO

from ..host import runner
from ..errors import LabFileError, VnetError
from ..host.paths import cache_dir
from ..lab.model import CloudImage

CHUNK = 1 << 20
TIMEOUT = 60.0                      # seconds without data before a download gives up
QCOW2_MAGIC = b"QFI\xfb"
MAX_GIB_ENV = "VNET_CLOUD_IMAGE_MAX_GIB"
DEFAULT_MAX_GIB = 8
EXTERNAL_DATA_FILE_BIT = 1 << 2     # qcow2 v3 incompatible_features, header bytes 72-79


def cloud_dir() -> Path:
    return cache_dir() / "cloud"


def cached_path(image: CloudImage) -> Path:
    return cloud_dir() / f"{image.sha256}.qcow2"


def overlay_path(lab_dir: str | Path, vm: str) -> Path:
    return Path(lab_dir) / f"{vm}.overlay.qcow2"


def seed_path(lab_dir: str | Path, vm: str) -> Path:
    return Path(lab_dir) / f"{vm}.seed.iso"


def fetch(image: CloudImage, progress: Callable[[str], None] = print,
          stream: TextIO | None = None) -> Path:
    """The verified base image in the cache, downloaded first if it is not there yet.
    `progress` gets one line before and after a download; the bar goes to `stream` (stderr)."""
    final = cached_path(image)
    if final.exists():
        if _still_verified(final, image, progress):
            return final
        final.unlink()
    final.parent.mkdir(parents=True, exist_ok=True)
    progress(f"downloading cloud image {image.name} from {image.url}")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{image.sha256[:16]}-", suffix=".part",
                                    dir=final.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            bar = _EventBar(image.name, progress) if hasattr(progress, "event") \
                else _Bar(image.name, stream or sys.stderr)     # a live display draws it
            digest, size = _download(image, out, bar)
        if digest != image.sha256:
            raise VnetError(f"cloud image {image.name}: sha256 mismatch for {image.url}: "
                            f"expected {image.sha256}, got {digest}",
                            hint="the file changed upstream or the lab file pins the wrong "
                                 "digest; check it against the publisher's checksums")
        check_image(tmp, f"cloud image {image.name} ({image.url})")
        os.chmod(tmp, 0o644)
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    progress(f"cloud image {image.name} verified ({size / 2**20:.1f} MiB): {final}")
    return final


def max_bytes() -> int:
    """The download cap: VNET_CLOUD_IMAGE_MAX_GIB (a positive number of GiB), default 8."""
    text = os.environ.get(MAX_GIB_ENV, "").strip() or str(DEFAULT_MAX_GIB)
    try:
        gib = float(text)
    except ValueError:
        gib = 0.0
    if not 0 < gib < 2**20:
        raise LabFileError(MAX_GIB_ENV, f"{text[:40]!r} is not a size: give a positive number "
                           f"of GiB (default {DEFAULT_MAX_GIB})")
    return int(gib * 2**30)


def _too_big(image: CloudImage, size: int, cap: int) -> VnetError:
    return VnetError(f"cloud image {image.name} ({image.url}) is larger than the "
                     f"{cap / 2**30:g} GiB download cap ({size / 2**30:.2f} GiB or more)",
                     hint=f"set {MAX_GIB_ENV} to a larger number of GiB if you trust this image")


def _download(image: CloudImage, out, bar: "_Bar") -> tuple[str, int]:
    h = hashlib.sha256()
    done = 0
    cap = max_bytes()
    try:
        with urllib.request.urlopen(image.url, timeout=TIMEOUT) as response:
            length = response.headers.get("Content-Length")
            bar.total = int(length) if length and length.isdigit() else None
            if bar.total and bar.total > cap:
                raise _too_big(image, bar.total, cap)     # refused before the first byte
            while chunk := response.read(CHUNK):
                done += len(chunk)
                if done > cap:                            # no or a lying Content-Length
                    raise _too_big(image, done, cap)
                out.write(chunk)
                h.update(chunk)
                bar.update(done)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise VnetError(f"cannot download cloud image {image.name} from {image.url}: {reason}",
                        hint="check the URL, or download it yourself and use a file:// URL") \
            from exc
    finally:
        bar.finish(done)
    return h.hexdigest(), done


class _Bar:
    """Percent and MiB on one line redrawn in place on a terminal; on a log (not a TTY), a
    plain line every 10% (every 64 MiB when the size is unknown)."""

    def __init__(self, label: str, stream: TextIO):
        self.label, self.stream = label, stream
        self.tty = bool(getattr(stream, "isatty", lambda: False)())
        self.total: int | None = None
        self.shown = -1

    def _text(self, done: int) -> str:
        mib = done / 2**20
        if self.total:
            return (f"{self.label}: {100 * done // self.total:3d}% "
                    f"{mib:.1f}/{self.total / 2**20:.1f} MiB")
        return f"{self.label}: {mib:.1f} MiB"

    def update(self, done: int) -> None:
        step = (100 * done // self.total // (1 if self.tty else 10)) if self.total \
            else done // (CHUNK * (8 if self.tty else 64))
        if step == self.shown:
            return
        self.shown = step
        if self.tty:
            self.stream.write("\r" + self._text(done))
        else:
            self.stream.write(self._text(done) + "\n")
        self.stream.flush()

    def finish(self, done: int) -> None:
        if self.tty and self.shown >= 0:
            self.stream.write("\r" + self._text(done) + "\n")
            self.stream.flush()


class _EventBar:
    """The download's bytes as Transfer events, for a live display (progress.py)."""

    def __init__(self, label: str, progress: Callable[[str], None]):
        self.label, self.progress = label, progress
        self.total: int | None = None

    def update(self, done: int) -> None:
        from ..progress import Transfer, emit

        emit(self.progress, Transfer(f"downloading {self.label}", done, self.total or 0))

    def finish(self, done: int) -> None:
        self.update(done)


def _still_verified(path: Path, image: CloudImage, progress: Callable[[str], None]) -> bool:
    """The cached file still hashes to the pinned digest (and is still a safe image)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    if h.hexdigest() != image.sha256:
        progress(f"cached cloud image {path} no longer matches its sha256 {image.sha256}: "
                 f"removing it and downloading again")
        return False
    check_image(path, f"cached cloud image {image.name} ({path})")
    return True


def check_image(path: Path, what: str) -> None:
    """Refuse anything but a self-contained qcow2: no backing file, no external data file."""
    backing, external = _header_references(path, what)
    info: dict = {}
    if backing is None and not external:          # qemu-img opens only a clean-looking file
        if not runner.which("qemu-img"):
            raise VnetError("qemu-img is missing: it checks cloud images before QEMU opens them",
                            hint="apt-get install qemu-utils")
        info = json.loads(runner.run(["qemu-img", "info", "-f", "qcow2", "--output", "json",
                                      str(path)], timeout=60).stdout)
        backing = info.get("backing-filename") or info.get("full-backing-filename")
        external = info.get("format-specific", {}).get("data", {}).get("data-file")
    hint = "use the publisher's self-contained image"
    if backing is not None:
        raise VnetError(f"{what} names a backing file ({str(backing)[:200]!r}): refused, QEMU "
                        "would read that host file into the guest", hint=hint)
    if external:
        where = repr(str(external)[:200]) if isinstance(external, str) else "named in its header"
        raise VnetError(f"{what} keeps its data in an external file ({where}): refused, QEMU "
                        "would read and write that host file", hint=hint)
    if info.get("format") != "qcow2":
        raise VnetError(f"{what} is not a qcow2 image (qemu-img says {info.get('format')!r})")


def _header_references(path: Path, what: str) -> tuple[str | None, bool]:
    """(backing file name or None, has an external data file) from the qcow2 header itself."""
    with open(path, "rb") as f:
        header = f.read(80)
        if header[:4] != QCOW2_MAGIC or len(header) < 72:
            raise VnetError(f"{what} is not a qcow2 image",
                            hint="use a qcow2 cloud image such as "
                                 "debian-12-genericcloud-amd64.qcow2")
        offset = int.from_bytes(header[8:16], "big")
        backing = None
        if offset:
            f.seek(offset)
            backing = f.read(min(int.from_bytes(header[16:20], "big"), 1023)).decode(
                errors="replace")
    version = int.from_bytes(header[4:8], "big")
    incompatible = int.from_bytes(header[72:80], "big") if version >= 3 else 0
    return backing, bool(incompatible & EXTERNAL_DATA_FILE_BIT)


def overlay(base: Path, path: Path) -> Path:
    """A qcow2 overlay on `base` for one VM; an existing one is kept (it is that VM's disk)."""
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    runner.run(["qemu-img", "create", "-f", "qcow2", "-F", "qcow2", "-b", str(base),
                str(path)], timeout=120)
    return path
