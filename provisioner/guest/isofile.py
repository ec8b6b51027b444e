"""Write a pycdlib ISO in place atomically: a running VM keeps the ISO it opened, and a
failure leaves no half-written file."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path


def write(iso, path: Path) -> Path:
    """Write `iso` (a pycdlib.PyCdlib) to path through a temporary sibling, then close it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            iso.write_fp(out)
            os.fchmod(out.fileno(), 0o644)    # by the descriptor, never by a name (locks.py)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        iso.close()
    return path
