"""Run Python code or commands inside a named network namespace (/run/netns/NAME).

`run_in_netns` forks: the child enters the namespace with setns(2) (Python 3.11 has no
os.setns, so libc is called through ctypes), runs the function, and pickles the result or the
exception back through a pipe. The parent never changes namespace. Sockets opened by the
function live in the namespace; the file system, /etc/resolv.conf and /sys stay the caller's.
"""
from __future__ import annotations

import ctypes
import os
import pickle
import signal
import sys
import traceback
from typing import Any, Callable

from ..errors import NotFound, VnetError
from .procs import pid_alive, proc_argv, terminate  # noqa: F401 - one home: procs.py

CLONE_NEWNET = 0x40000000
NETNS_DIR = "/run/netns"


def netns_argv(netns: str, argv: list[str]) -> list[str]:
    """The argv that runs `argv` inside the named network namespace."""
    return ["ip", "netns", "exec", netns, *argv]


def netns_path(netns: str) -> str:
    if not netns or "/" in netns or netns in (".", ".."):
        raise ValueError(f"not a network namespace name: {netns!r}")
    return os.path.join(NETNS_DIR, netns)


def netns_inode(netns: str) -> int | None:
    """The inode that identifies the namespace (as in /proc/PID/ns/net), or None if absent."""
    try:
        return os.stat(netns_path(netns)).st_ino
    except FileNotFoundError:
        return None


def run_in_netns(netns: str, fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
    """Call fn(*args, **kw) in a forked child that first enters network namespace `netns`.

    Returns fn's (picklable) result, or re-raises its exception in the caller, with the
    child's traceback attached as a note. fn runs in a copy of this process: changes it makes
    to Python state are lost, and it must not rely on threads of the parent (fork keeps only
    the calling thread).
    """
    path = netns_path(netns)
    if not os.path.exists(path):
        raise NotFound(f"network namespace {netns} does not exist",
                       hint="is the sandbox up? see `vnet sandbox status`")
    return _call_in_child(path, fn, args, kw)


def _setns(path: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


def _call_in_child(path: str | None, fn: Callable[..., Any], args: tuple, kw: dict) -> Any:
    """Fork; in the child enter `path` (None: stay) and run fn; transport the outcome back."""
    rfd, wfd = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # child: never returns
        status = 0
        try:
            os.close(rfd)
            try:
                if path is not None:
                    _setns(path)
                payload = _encode_ok(fn(*args, **kw))
            except BaseException as exc:  # noqa: BLE001 - everything goes back to the parent
                payload = _encode_exc(exc)
            with os.fdopen(wfd, "wb") as pipe:
                pipe.write(payload)
        except BaseException:  # noqa: BLE001
            status = 1
        finally:
            try:
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(status)
    os.close(wfd)
    try:
        with os.fdopen(rfd, "rb") as pipe:
            data = pipe.read()
        _, wait_status = os.waitpid(pid, 0)
    except BaseException:  # interrupted: do not leave the child behind
        _kill_and_reap(pid)
        raise
    if not data:
        raise VnetError(f"the helper process in {path or 'this namespace'} died without an answer "
                        f"(wait status {wait_status})")
    kind, value = pickle.loads(data)
    if kind == "ok":
        return value
    raise _decode_exc(value)


def _kill_and_reap(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


def _encode_ok(value: Any) -> bytes:
    try:
        return pickle.dumps(("ok", value))
    except Exception as exc:  # noqa: BLE001
        return _encode_exc(TypeError(f"result of type {type(value).__name__} cannot be "
                                     f"returned from the namespace: {exc}"))


def _encode_exc(exc: BaseException) -> bytes:
    """Exceptions travel as (class, args, __dict__, traceback): this survives classes whose
    __init__ signature differs from their args (LabFileError, CommandFailed)."""
    tb = "".join(traceback.format_exception(exc))
    state = {k: v for k, v in vars(exc).items() if not k.startswith("__")}
    try:
        payload = ("exc", (type(exc), exc.args, state, tb))
        data = pickle.dumps(payload)
        pickle.loads(data)  # the class must be importable by the parent too
        return data
    except Exception:  # noqa: BLE001
        return pickle.dumps(("exc", (VnetError, (f"{type(exc).__name__}: {exc}",),
                                     {"message": f"{type(exc).__name__}: {exc}", "hint": None},
                                     tb)))


def _decode_exc(value: tuple) -> BaseException:
    cls, args, state, tb = value
    exc = cls.__new__(cls, *args)
    exc.args = args
    exc.__dict__.update(state)
    exc.add_note("raised in a child process (run_in_netns):\n" + tb.rstrip())
    return exc


# ---------------------------------------------------------------- processes in namespaces

def pids_in_netns(names: list[str]) -> dict[int, list[str]]:
    """pid -> argv of the live processes whose network namespace is one of `names`
    (compares /proc/PID/ns/net with /run/netns/NAME, like `ip netns pids`)."""
    wanted = {netns_inode(n) for n in names} - {None}
    found: dict[int, list[str]] = {}
    for entry in os.listdir("/proc") if wanted else ():
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            if os.stat(f"/proc/{entry}/ns/net").st_ino not in wanted:
                continue
        except OSError:
            continue
        if argv := proc_argv(int(entry)):
            found[int(entry)] = argv
    return found


# A namespace's name is machine-wide, but a sandbox belongs to one state root (VNET_STATE_DIR):
# each namespace vnet makes carries its state root's owner id as the alias of its loopback,
# so another state root never takes it for a half-up sandbox of its own and tears it down.
OWNER_ALIAS = "vnet-owner:"


def add_owned_netns(netns: str) -> None:
    """`ip netns add`, then the owner tag (owner.owner_id) on its loopback. An untagged
    namespace is one no vnet ever removes, so none is left: the owner id is read before the
    add, and a tag that fails (or a Ctrl-C) removes the namespace the add just made (the add
    fails on a name that exists, so it is this run's own)."""
    from . import runner
    from .owner import owner_id

    tag = OWNER_ALIAS + owner_id()
    runner.run(["ip", "netns", "add", netns])
    try:
        runner.run(["ip", "-n", netns, "link", "set", "lo", "alias", tag])
    except BaseException:
        runner.run(["ip", "netns", "del", netns], check=False)
        raise


def netns_owner(netns: str) -> str | None:
    """The owner id a namespace carries (None: no tag, e.g. made by an older vnet, or gone)."""
    from . import runner

    shown = runner.run(["ip", "-n", netns, "-o", "link", "show", "lo"], check=False).stdout
    words = shown.replace("\\", " ").split()
    for word, after in zip(words, words[1:]):
        if word == "alias" and after.startswith(OWNER_ALIAS):
            return after[len(OWNER_ALIAS):]
    return None


def untagged_namespaces(names: list[str]) -> list[str]:
    """Those that exist and carry no owner tag: an older vnet's, or made by hand under a name
    vnet uses; nothing proves them vnet's, so nothing of vnet deletes them or ends what runs
    in them."""
    return [ns for ns in names if netns_inode(ns) is not None and netns_owner(ns) is None]


def foreign_namespaces(names: list[str]) -> dict[str, str]:
    """{namespace: owner id} of those that exist and that another state root made (read
    only: a state root without an owner id yet made none of them)."""
    from .owner import owner_file, read_owner_id

    tagged = {ns: who for ns in names
              if netns_inode(ns) is not None and (who := netns_owner(ns)) is not None}
    mine = read_owner_id(owner_file()) if tagged and owner_file().is_file() else None
    return {ns: who for ns, who in tagged.items() if who != mine}
