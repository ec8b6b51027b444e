"""Which lab records refer to a path in the image cache: the record's JSON names an image
directory or a cloud image's sha256, or one of the lab's overlays has it as backing file. Used
by `vnet image prune` (guest/imagecache.py) and by an image build that would move an unreadable
folder aside (guest/builds.py); here, outside provisioner/guest/, because it is no part of what
an image is built from (its cache key)."""
from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from .paths import state_root

QCOW2_MAGIC = b"QFI\xfb"


def backing_file(path: Path) -> str | None:
    """The backing file named in a qcow2 header (QEMU's docs/interop/qcow2.txt: offset 8,
    u64 offset of the name; offset 16, u32 its length), or None."""
    try:
        with open(path, "rb") as f:
            head = f.read(20)
            if len(head) < 20 or head[:4] != QCOW2_MAGIC:
                return None
            offset, length = struct.unpack(">QI", head[8:20])
            if not offset or not 0 < length <= 1023:
                return None
            f.seek(offset)
            return f.read(length).decode(errors="replace")
    except OSError:
        return None


@dataclass(frozen=True)
class Use:
    text: str                 # the lab record as JSON: paths and sha256s it names
    backing: tuple[str, ...]  # backing files of the lab's overlays
    where: str                # <target>/<lab>


def uses() -> list[Use]:
    """What each lab record under the state root refers to."""
    labs = state_root() / "labs"
    found = []
    for record in sorted(labs.glob("*/*/lab.json")) if labs.is_dir() else []:
        try:
            text = record.read_text()
        except OSError:
            continue
        backing = tuple(filter(None, (backing_file(p)
                                      for p in sorted(record.parent.glob("*.qcow2")))))
        found.append(Use(text, backing, f"{record.parent.parent.name}/{record.parent.name}"))
    return found


def users_of(path: Path) -> list[str]:
    """The labs (<target>/<lab>) whose record names `path` or whose overlays are backed by a
    file under it."""
    return [u.where for u in uses() if str(path) in u.text
            or any(b == str(path) or b.startswith(f"{path}/") for b in u.backing)]
