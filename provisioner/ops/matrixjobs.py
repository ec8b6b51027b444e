"""The matrix's labs, up to N at once (vnet matrix --jobs N).

Each lab runs in a worker thread with its own libvirt connection, lock and host ports; the
caller gets the finished labs in matrix order after each one ends (its summary.json stays
ordered). Ctrl-C reaches only the main thread: it stops labs that have not started and tells
the running ones to stop at their next progress line, then waits for them, because each
destroys what it made on the way out (shielded(): a cleanup no second Ctrl-C cuts short;
sigterm_as_interrupt(): a cancelled CI job cleans up like Ctrl-C)."""
from __future__ import annotations

import contextlib
import signal
import threading
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from typing import Callable, TypeVar

from .. import interrupts
from ..progress import Progress

T = TypeVar("T")


def run_concurrently(count: int, jobs: int, one: Callable[[int, Progress], T],
                     done: Callable[[list[T]], None], progress: Progress) -> list[T]:
    """one(i, progress) for i in range(count), `jobs` at a time; done(finished, in order)
    after each; returns every result in order. The first exception (KeyboardInterrupt too)
    is raised once the running labs have cleaned up."""
    cancelled = threading.Event()
    finished: dict[int, T] = {}
    with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="vnet-matrix") as pool:
        pending = {}
        try:                           # a Ctrl-C while submitting cancels the labs already started
            for i in range(count):
                pending[pool.submit(one, i, _stoppable(progress, cancelled))] = i
            while pending:
                ended, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in ended:
                    finished[pending.pop(future)] = future.result()
                done([finished[i] for i in sorted(finished)])
        except BaseException:
            cancelled.set()
            for future in pending:
                future.cancel()
            with shielded():           # a second Ctrl-C must not end the wait: a lab still
                pool.shutdown(wait=True)   # running would outlive the sandbox it needs
            raise
    return [finished[i] for i in sorted(finished)]


def _stoppable(progress: Progress, cancelled: threading.Event) -> Progress:
    """A worker's progress: once the run is cancelled, its next line raises KeyboardInterrupt
    (once, and never inside a cleanup: the lab's destroy reports progress too, and must run to
    the end; shielded() marks it)."""
    raised = threading.Event()

    def say(message):
        if cancelled.is_set() and not raised.is_set() and not interrupts.in_cleanup():
            raised.set()
            raise KeyboardInterrupt
        progress(message)
    return say


@contextlib.contextmanager
def sigterm_as_interrupt():
    """SIGTERM (a CI job cancelled) cleans up like Ctrl-C."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt
    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def shielded():
    """Cleanup that a second Ctrl-C must not cut short: signals ignored (main thread), and no
    progress line raises the interrupt (every thread: a worker of --jobs gets it that way)."""
    with interrupts.cleaning_up():
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
