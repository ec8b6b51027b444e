"""Two vnet runs at once must not interleave: one file lock per sandbox and per lab, and state
files that are replaced whole, never written in place.

Locks are `flock(2)` locks on files in <state_root>/locks/. The kernel drops a lock when its
holder exits, SIGKILL included, so a crash never leaves a stale lock behind. The holder writes
its pid into the file, so a waiting run can say whom it waits for.

A lock file outlives its lab or sandbox; `sweep` (`vnet gc`, `sandbox down`) removes the ones
nobody holds. Removing a lock file is safe only because a run that got a lock checks that its
path still names the file it locked (a run that opened the file before the sweep unlinked it
would otherwise hold a lock on a nameless file while the next run locks a new one), and the
sweep unlinks only a file it holds exclusively and that its path still names.

Who takes what: `sandbox up/down` the sandbox's lock, exclusive; `up`, `verify`, `destroy` and
`gc` of a lab the lab's lock, exclusive, and, in a sandbox, first its sandbox's lock, shared
(state.lab_lock). One order everywhere (sandbox, then lab), so no two runs wait on each other.

flock locks belong to an open file, not to a process: a second `held()` of the same lock in one
process waits for the first, so public functions take the lock and call unlocked helpers.
A forked child (run_in_netns) would share the open file and keep the lock after its parent
released it; the child closes its copies at once (_HELD, os.register_at_fork), so a lab that
ends while another thread's child still runs (vnet matrix --jobs) leaves its lock free.
"""
from __future__ import annotations

import fcntl
import os
import re
import shutil
import stat
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from ..errors import VnetError

POLL_SECONDS = 0.1
FIRST_NOTE_SECONDS = 1.0        # a short wait says nothing; a longer one says who holds the lock
NOTE_EVERY_SECONDS = 15.0
LOCK_NAME_RE = re.compile(r"[a-z][a-z0-9-]{0,63}")
# Descriptors of the locks this process holds (process-wide, like the locks themselves).
_HELD: set[int] = set()


def _close_held_in_child() -> None:
    for fd in list(_HELD):
        try:
            os.close(fd)        # the child's copy only: the parent's lock stays until it closes
        except OSError:
            pass
    _HELD.clear()


os.register_at_fork(after_in_child=_close_held_in_child)


def lock_dir() -> Path:
    from .paths import state_root

    return state_root() / "locks"


def lock_path(kind: str, name: str) -> Path:
    """<state_root>/locks/<kind>-<name>.lock, for names of vnet's own alphabet only."""
    for part in (kind, name):
        if not isinstance(part, str) or not LOCK_NAME_RE.fullmatch(part):
            raise VnetError(f"{part!r} cannot name a lock: use a-z, 0-9 and '-'")
    base = lock_dir()
    path = base / f"{kind}-{name}.lock"
    if path.resolve().parent != base.resolve():
        raise VnetError(f"lock file {path} resolves outside {base}")
    return path


@contextmanager
def held(kind: str, name: str, progress: Callable[[str], None] | None = None,
         shared: bool = False) -> Iterator[None]:
    """Hold the lock of sandbox/lab NAME; wait for it (saying so) while another run holds it.
    Shared holders (the labs of a sandbox) exclude only an exclusive one (its up/down)."""
    path = lock_path(kind, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
        except OSError as exc:       # ELOOP: a symlink there is not a lock vnet made
            raise VnetError(f"cannot open the lock file {path}: {exc.strerror}",
                            hint="remove it by hand if it is not vnet's") from None
        _HELD.add(fd)
        try:
            _acquire(fd, f"{kind} {name}", progress, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
            if _still_named(path, fd):
                break
        except BaseException:
            _HELD.discard(fd)
            os.close(fd)
            raise
        _HELD.discard(fd)      # swept while this waited: lock the file the path names now
        os.close(fd)
    try:
        os.ftruncate(fd, 0)               # shared holders: the last one to come is named
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        _HELD.discard(fd)
        os.close(fd)           # closing the last descriptor of the open file releases the lock


def _acquire(fd: int, what: str, progress: Callable[[str], None] | None, mode: int) -> None:
    start = time.monotonic()
    next_note = FIRST_NOTE_SECONDS
    while True:
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            pass
        waited = time.monotonic() - start
        if progress and waited >= next_note:
            progress(f"waiting for {what}'s lock held by pid {holder(fd)} ({waited:.0f}s)")
            next_note = waited + NOTE_EVERY_SECONDS
        time.sleep(POLL_SECONDS)


def _still_named(path: Path, fd: int) -> bool:
    try:
        named = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    locked = os.fstat(fd)
    return (named.st_dev, named.st_ino) == (locked.st_dev, locked.st_ino)


def sweep() -> int:
    """Remove the lock files nobody holds (each is left by a lab or sandbox that is gone, or
    idle); a held one is skipped. Returns how many were removed."""
    base = lock_dir()
    removed = 0
    for path in sorted(base.glob("*.lock")) if base.is_dir() else ():
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError:            # gone meanwhile, or a symlink: not one of vnet's files
            continue
        _HELD.add(fd)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if _still_named(path, fd):
                path.unlink()
                removed += 1
        except BlockingIOError:    # someone holds it
            pass
        finally:
            _HELD.discard(fd)
            os.close(fd)
    return removed


def holder(fd: int) -> str:
    """The pid the holder wrote into the lock file ('?' before it has written it)."""
    text = os.pread(fd, 32, 0).decode(errors="replace").strip()
    return text if text.isdigit() else "?"


def write_out(path: Path, text: str) -> None:
    """A file the user names (a report's --out): replaced whole through write_atomic, which
    never writes through a symlink planted under its name; a pipe or a terminal the user names
    (/dev/stdout, /dev/null, a FIFO) is written as a stream instead of being replaced by a
    file. No other device is ever written to (a link planted to /dev/sda is replaced)."""
    try:
        mode = os.stat(path).st_mode          # where a symlink leads (/dev/stdout)
    except OSError:
        mode = 0
    real = os.path.realpath(path)
    terminal = stat.S_ISCHR(mode) and (real == os.devnull or real.startswith(("/dev/pts/",
                                                                                "/dev/tty")))
    if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or terminal:
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return
    write_atomic(path, text)


def copy_atomic(source: Path, target: Path, mode: int = 0o644) -> None:
    """write_atomic for a large file: `source` copied to a fresh temporary beside `target`
    (mkstemp: O_EXCL, never a name someone prepared), through its descriptor, then renamed."""
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out, open(source, "rb") as src:
            shutil.copyfileobj(src, out, 1 << 20)
            os.fchmod(out.fileno(), mode)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_atomic(path: Path, text: str, mode: int = 0o644) -> None:
    """Write through a temporary file with a unique name in the same directory, then rename:
    a reader sees the old file or the new one, and two writers never share a temporary."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
            # by the descriptor: in a directory someone else can write to (a report's --out),
            # the name may be a symlink by now, and a chmod by name would follow it
            os.fchmod(f.fileno(), mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
