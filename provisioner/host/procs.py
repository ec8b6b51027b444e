"""A process vnet started: spawned, recorded, recognised and stopped in one place.

The record (a small JSON file: pid, start time, marker) is written the moment the process is
spawned, before vnet waits for anything, so every later failure path can find it. Before any
signal the process is recognised again by its start time (field 22 of /proc/PID/stat: clock
ticks after boot, fixed for the life of a PID, see proc(5)) and by a marker that must appear in
its command line. A PID the kernel has since given to another program fails both checks and is
never signalled. Used by the port proxy, the verifier's listeners and the sandbox's daemons.
"""
from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from . import runner
from ..errors import VnetError


class CorruptRecord(VnetError):
    """A pid file vnet cannot read: nothing is signalled, and the caller goes on cleaning."""


@dataclass(frozen=True)
class Record:
    pid: int
    start_time: int | None    # None only for a bare pid file written by the program itself
    marker: str               # must appear in (one element of) the process's argv


# ---------------------------------------------------------------- what /proc says

def proc_argv(pid: int) -> list[str] | None:
    """argv of a live process (None if it is gone, a zombie or a kernel thread)."""
    try:
        raw = open(f"/proc/{pid}/cmdline", "rb").read()
    except OSError:
        return None
    return [a.decode(errors="replace") for a in raw.split(b"\0")[:-1]] or None


def start_time(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat; the command name (field 2) may hold spaces and ')'."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[19])        # fields[0] is field 3 (state)
    except (OSError, IndexError, ValueError):
        return None


def pid_alive(pid: int) -> bool:
    try:  # reap it when it is our own child (a test, or a setup cleaning up after itself)
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def terminate(pids: list[int], timeout: float = 5.0,
              still: Callable[[int], bool] | None = None) -> None:
    """SIGTERM the given processes, SIGKILL those still alive after `timeout` seconds.
    Callers pass only PIDs they have just recognised (see `ours`), and `still`, which asks that
    again: each process is held by a pidfd first and recognised once more after, so the pidfd
    is the recognised process's, not one that took its PID meanwhile; from then on it is
    signalled through that pidfd, so a PID reused before the SIGKILL is never the one hit
    (pidfd_open(2), pidfd_send_signal(2))."""
    held: dict[int, int] = {}
    try:
        for pid in pids:
            try:
                held[pid] = os.pidfd_open(pid)
            except ProcessLookupError:
                continue                 # gone already
        for pid in list(held):           # every pidfd is open: recognised after it
            if still is not None and not still(pid):
                os.close(held.pop(pid))  # another process has the PID now: not ours to end
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for fd in held.values():
                try:
                    signal.pidfd_send_signal(fd, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + timeout
            while (alive := [p for p, fd in held.items() if not _ended(p, fd)]) and \
                    time.monotonic() < deadline:
                time.sleep(0.02)
            if not alive:
                return
            for pid in set(held) - set(alive):     # ended: never reaped or signalled again
                os.close(held.pop(pid))
        raise VnetError(f"processes {alive} did not stop after SIGKILL")
    finally:
        for fd in held.values():
            os.close(fd)


def _ended(pid: int, pidfd: int) -> bool:
    """The process behind the pidfd has ended (a pidfd polls readable then); our own child
    is reaped here too."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(0))


# ---------------------------------------------------------------- records

def spawn(argv: list[str], record: Path, marker: str, *, log_path: str,
          env: dict[str, str] | None = None, cwd: str = "/",
          stdout: int | None = None) -> subprocess.Popen:
    """Start a long-lived process (runner.spawn) and record it at once; if the record cannot
    be written, the process is killed rather than left unknown. A Ctrl-C meanwhile waits until
    the record is written (the process runs in its own session, so the Ctrl-C does not reach
    it: unrecorded, nothing could find it again)."""
    if not mentions(argv, marker):
        raise ValueError(f"marker {marker!r} is not in the argv it must identify")
    with interrupts_deferred():
        proc = runner.spawn(argv, log_path=log_path, env=env, cwd=cwd, stdout=stdout)
        try:
            write(record, Record(proc.pid, start_time(proc.pid), marker))
        except BaseException:
            proc.kill()
            proc.wait()
            raise
    return proc


@contextmanager
def interrupts_deferred() -> Iterator[None]:
    """SIGINT and SIGTERM that arrive inside wait until its end, then take their course (the
    handler that was there runs). Python runs signal handlers in the main thread only, so
    elsewhere there is nothing to defer."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[tuple[int, object]] = []
    before = {sig: signal.signal(sig, lambda s, frame: caught.append((s, frame)))
              for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
        for sig, frame in caught[:1]:
            handler = before[sig]
            if callable(handler):
                handler(sig, frame)
            elif handler == signal.SIG_DFL:
                signal.raise_signal(sig)


def write(path: Path, rec: Record) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"pid": rec.pid, "start_time": rec.start_time,
                               "marker": rec.marker}) + "\n")
    tmp.replace(path)


def read(path: Path, marker: str | None = None) -> Record | None:
    """The record in path (None if there is none). A bare PID (a program's own pid file) is
    accepted with the given marker and no start time. Anything else raises CorruptRecord."""
    try:
        text = path.read_text(errors="replace").strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CorruptRecord(f"cannot read pid file {path}: {exc.strerror}") from exc
    if text.isdigit() and marker is not None:
        return Record(int(text), None, marker)
    try:
        data = json.loads(text)
        rec = Record(int(data["pid"]), data["start_time"], str(data["marker"]))
        # vnet writes every JSON record with the start time it read (spawn): without it, a
        # record would vouch for any process of that PID whose command line has the marker
        if rec.pid <= 1 or not isinstance(rec.start_time, int) or not rec.marker:
            raise ValueError("out of range")
    except (ValueError, KeyError, TypeError, AttributeError):
        raise CorruptRecord(f"pid file {path} is corrupt ({text[:40]!r}): no process was "
                            "signalled", hint="check for a leftover process with `ps`, then "
                            "remove the file") from None
    return rec


def mentions(argv: list[str], marker: str) -> bool:
    """Whether argv names marker or a file below it (sandbox "a" must not match "ab")."""
    return any(a == marker or marker + "/" in a for a in argv)


def ours(rec: Record | None, program: str = "") -> int | None:
    """rec's PID if that process still is the one recorded (start time and marker, and
    `program` in the name of its executable), else None."""
    if rec is None:
        return None
    argv = proc_argv(rec.pid)
    if not argv or program not in os.path.basename(argv[0]) or not mentions(argv, rec.marker):
        return None
    if rec.start_time is not None and start_time(rec.pid) != rec.start_time:
        return None
    return rec.pid


def running(path: Path, marker: str | None = None, program: str = "") -> int | None:
    """The PID recorded in path if it still runs as recorded; None also for a corrupt file."""
    try:
        return ours(read(path, marker), program)
    except CorruptRecord:
        return None


def stop(path: Path, warn: Callable[[str], None] | None = None, timeout: float = 5.0,
         marker: str | None = None) -> int | None:
    """Stop the process recorded in path (if it is still ours) and remove the record; a corrupt
    record is reported through `warn` and removed, so cleaning up goes on. `marker`: as for
    read(), for a bare PID. Returns the PID."""
    try:
        rec = read(path, marker)
        pid = ours(rec)
    except CorruptRecord as exc:
        if warn:
            warn(f"warning: {exc.message}")
        pid = None
    if pid:
        terminate([pid], timeout, still=lambda p: ours(rec) == p)
    path.unlink(missing_ok=True)
    return pid
