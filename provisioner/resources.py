"""Where templates/ and playbooks/ live: inside the installed wheel (provisioner/_data/), or at
the top of a source checkout."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


@lru_cache(maxsize=None)
def data_dir(kind: str) -> Path:
    """kind is "templates", "playbooks" or "vagrant" (the demos)."""
    for candidate in (_PACKAGE / "_data" / kind, _PACKAGE.parent / kind):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"vnet's {kind}/ directory is missing from this installation "
                            f"(looked in {_PACKAGE / '_data'} and {_PACKAGE.parent})")
