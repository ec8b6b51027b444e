"""Ctrl-C that cannot be lost.

Python prints and drops an exception raised inside a finalizer (`__del__`), and libvirt-python
frees its objects there: a KeyboardInterrupt that lands in one is "ignored" and the run simply
goes on (seen: a `vnet create` finished and left its lab up after Ctrl-C). The handler below
raises at once as usual, except inside a finalizer, where it only notes the interrupt; the next
progress line raises it (library code reports progress often, at least every few seconds while
it waits)."""
from __future__ import annotations

import contextlib
import signal
import threading

# A signal is delivered to the process, so its latch is process-wide too.
_PENDING = threading.Event()
# Per thread: a cleanup under way (a lab being destroyed) that no progress line may cut short.
_CLEANUP = threading.local()


def install() -> None:
    """Route SIGINT through the handler (main thread only: Python's rule for signal handlers)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _on_sigint)


def _on_sigint(signum, frame) -> None:
    if _in_finalizer(frame):
        _PENDING.set()
        return
    raise KeyboardInterrupt


def _in_finalizer(frame) -> bool:
    while frame is not None:
        if frame.f_code.co_name == "__del__":
            return True
        frame = frame.f_back
    return False


@contextlib.contextmanager
def cleaning_up():
    """Cleanup in this thread: progress lines inside it raise no interrupt (the one noted waits
    for the first line after it), so what was half made is not left half destroyed."""
    depth = getattr(_CLEANUP, "depth", 0)
    _CLEANUP.depth = depth + 1
    try:
        yield
    finally:
        _CLEANUP.depth = depth


def in_cleanup() -> bool:
    return getattr(_CLEANUP, "depth", 0) > 0


def raise_pending() -> None:
    """Raise the interrupt a finalizer swallowed, once (not during a cleanup)."""
    if _PENDING.is_set() and not in_cleanup():
        _PENDING.clear()
        raise KeyboardInterrupt
