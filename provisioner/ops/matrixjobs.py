"""The matrix's labs, up to N at once (vnet matrix --jobs N).

Each lab runs in a worker thread with its own libvirt connection, lock and host ports; the
caller gets the finished labs in matrix order after each one ends (its summary.json stays
ordered). Ctrl-C reaches only the main thread: it stops labs that have not started and tells
the running ones to stop at their next progress line, then waits for them (await_cleanup),
because each destroys what it made on the way out (shielded(): a cleanup no second Ctrl-C
cuts short; sigterm_as_interrupt(): a cancelled CI job cleans up like Ctrl-C)."""
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
    pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="vnet-matrix")
    pending = {}
    try:
        try:                           # a Ctrl-C while submitting cancels the labs already started
            with _raised_after():
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
            await_cleanup(list(pending), progress)
            raise
    finally:       # after a wait given up on, no endless join here
        pool.shutdown(wait=not cancelled.is_set())
    return [finished[i] for i in sorted(finished)]


GIVE_UP_AFTER = 2     # further Ctrl-Cs (or SIGTERMs) during the wait


def await_cleanup(futures: list, progress: Progress) -> None:
    """After a Ctrl-C: wait until the labs still running have destroyed what they made, so the
    sandbox they need goes down after them. A signal here never raises: one raised inside
    concurrent.futures' lock handling would leave a lab's future locked, and the wait endless.
    A second Ctrl-C says what is awaited; a third stops waiting (what a lab then leaves,
    `vnet sandbox down` or `vnet gc --sandbox` removes)."""
    with _noted() as noted, interrupts.cleaning_up():
        said = 0
        while (running := [f for f in futures if not f.done()]):
            wait(running, timeout=0.5)
            if len(noted) > said:
                said = len(noted)
                if said >= GIVE_UP_AFTER:
                    progress(f"stopped waiting for {len(running)} lab(s); what they leave, "
                             "`vnet sandbox down` or `vnet gc --sandbox` removes")
                    return
                progress(f"waiting for {len(running)} lab(s) to destroy what they made "
                         "(Ctrl-C again to stop waiting)")


@contextlib.contextmanager
def _noted():
    """Ctrl-C and SIGTERM only noted (in the list yielded) while inside; main thread only."""
    noted: list[int] = []
    handlers = {}
    if threading.current_thread() is threading.main_thread():
        handlers = {s: signal.signal(s, lambda signum, frame: noted.append(signum))
                    for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield noted
    finally:
        for s, handler in handlers.items():
            signal.signal(s, handler)


@contextlib.contextmanager
def _raised_after():
    """A Ctrl-C (or SIGTERM) inside is delivered again at the end, to the handler in place
    then. Submitting a lab starts a worker thread and waits for it; a KeyboardInterrupt raised
    in that wait lost the future of a lab already running, and the sandbox went down under
    it (seen under load)."""
    with _noted() as noted:
        yield
    if noted:
        signal.raise_signal(noted[0])


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
