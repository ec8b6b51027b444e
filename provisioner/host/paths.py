"""Where vnet keeps things on this machine, in one place: the state root (lab records, sandboxes,
locks, owner id, accelerator verdict) and the cache (images, packages, boxes), each overridable
from the environment and, for root, never under $HOME; and the sandbox name rule that names
directories under the state root."""
from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from ..errors import LabFileError, quote

NAME_RE = re.compile(r"[a-z][a-z0-9-]{0,11}")     # a sandbox name


def state_root() -> Path:
    """VNET_STATE_DIR, else /var/lib/vnet for root, else $XDG_STATE_HOME/vnet."""
    return _folder("VNET_STATE_DIR", "/var/lib/vnet", "XDG_STATE_HOME", ".local/state")


def cache_dir() -> Path:
    """VNET_CACHE_DIR, else /var/cache/vnet for root, else $XDG_CACHE_HOME/vnet (~/.cache/vnet):
    images, downloaded packages and cloud images, boxes. Root never caches under $HOME: under
    `sudo -E` that is the invoking user's home, which would fill with files owned by root."""
    return _folder("VNET_CACHE_DIR", "/var/cache/vnet", "XDG_CACHE_HOME", ".cache")


def _folder(variable: str, for_root: str, xdg: str, in_home: str) -> Path:
    if os.environ.get(variable):
        return trusted(os.environ[variable], variable)
    if os.geteuid() == 0:
        return Path(for_root)
    return Path(os.environ.get(xdg) or os.path.join(os.path.expanduser("~"), in_home)) / "vnet"


def trusted(given: str, variable: str) -> Path:
    """The folder an environment variable names, resolved. For root, it and every folder above
    it must be root's and writable by no one else (or sticky, as /tmp): `sudo -E` keeps the
    variable, and in a folder another user can change, a symlink planted there would turn
    root's next write or removal onto any file (exit 2 otherwise)."""
    path = Path(given).resolve()
    if os.geteuid() != 0:
        return path
    for folder in (path, *path.parents):
        try:
            st = os.stat(folder)
        except FileNotFoundError:
            continue                      # made later, by root, under a checked parent
        # sticky (as /tmp) only above: in the folder itself others could make vnet's names first
        sticky = bool(st.st_mode & stat.S_ISVTX) and folder != path
        if st.st_uid != 0 or (st.st_mode & 0o022 and not sticky):
            who = f"owned by uid {st.st_uid}" if st.st_uid != 0 else "writable by others"
            raise LabFileError(variable, f"{given}: {folder} is {who}; as root vnet keeps its "
                               "files only in folders no other user can change")
    return path


def former_caches() -> list[Path]:
    """Root's caches of an older vnet (under $HOME, which it used before /var/cache/vnet) that
    still exist: nothing reads them now, so `vnet image list` and `prune` point them out."""
    if os.environ.get("VNET_CACHE_DIR") or os.geteuid() != 0:
        return []
    homes = {Path(os.path.expanduser("~root")), Path.home()}
    return sorted(p for p in (h / ".cache" / "vnet" for h in homes)
                  if p.is_dir() and not p.is_symlink() and p != cache_dir())


def validate_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise LabFileError("sandbox name", f"{quote(name)} is not valid: use 1-12 characters from "
                           "a-z, 0-9 and '-', starting with a letter")
    return name

