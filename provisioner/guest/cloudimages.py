"""Cloud images (Debian/Ubuntu genericcloud qcow2...) pinned by sha256: fetch once into the cache,
then give each VM its own copy-on-write overlay in the lab's state dir.

Cache layout: <images.cache_dir()>/cloud/<sha256>.qcow2. A download streams into a temporary
file beside it, hashing as it goes, and is renamed into place only when its sha256 matches the
lab file's; a mismatch (or an interrupted download) leaves nothing behind. Present means
verified, so a second fetch does not download or hash again.

The overlays and seed ISOs live in the lab's state dir (`overlay_path`, `seed_path`: pure, the
renderer computes the same paths), so `vnet destroy` removes them with that directory. The base
images stay in the cache for the next lab.
"""
from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, TextIO

from ..host import runner
from ..errors import VnetError
from .images import cache_dir
from ..lab.model import CloudImage

CHUNK = 1 << 20
TIMEOUT = 60.0                      # seconds without data before a download gives up
QCOW2_MAGIC = b"QFI\xfb"


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
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    progress(f"downloading cloud image {image.name} from {image.url}")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{image.sha256[:16]}-", suffix=".part",
                                    dir=final.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            digest, size = _download(image, out, _Bar(image.name, stream or sys.stderr))
        if digest != image.sha256:
            raise VnetError(f"cloud image {image.name}: sha256 mismatch for {image.url}: "
                            f"expected {image.sha256}, got {digest}",
                            hint="the file changed upstream or the lab file pins the wrong "
                                 "digest; check it against the publisher's checksums")
        with open(tmp, "rb") as f:
            if f.read(4) != QCOW2_MAGIC:
                raise VnetError(f"cloud image {image.name} ({image.url}) is not a qcow2 image",
                                hint="use a qcow2 cloud image such as "
                                     "debian-12-genericcloud-amd64.qcow2")
        os.chmod(tmp, 0o644)
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    progress(f"cloud image {image.name} verified ({size / 2**20:.1f} MiB): {final}")
    return final


def _download(image: CloudImage, out, bar: "_Bar") -> tuple[str, int]:
    h = hashlib.sha256()
    done = 0
    try:
        with urllib.request.urlopen(image.url, timeout=TIMEOUT) as response:
            length = response.headers.get("Content-Length")
            bar.total = int(length) if length and length.isdigit() else None
            while chunk := response.read(CHUNK):
                out.write(chunk)
                h.update(chunk)
                done += len(chunk)
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


def overlay(base: Path, path: Path) -> Path:
    """A qcow2 overlay on `base` for one VM; an existing one is kept (it is that VM's disk)."""
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    runner.run(["qemu-img", "create", "-f", "qcow2", "-F", "qcow2", "-b", str(base),
                str(path)], timeout=120)
    return path
