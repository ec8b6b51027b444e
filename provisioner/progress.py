"""Progress: how long-running library code tells a person what it is doing.
Library code takes a Progress and never prints; the CLI passes progress_printer().

A Progress is called with one line of text. Where a live display can show more, library code
also passes a structured event with `emit(progress, event)`: a VM's boot state, verified
cells out of the total, bytes of a download. On a terminal (a TTY, and not CI=true)
progress_printer() returns a live display (rich) that draws the lines and the events; piped or
in CI it returns the plain timestamped lines, and events are dropped, so that output is
exactly what it was."""
from __future__ import annotations

import os
import sys
import time
from typing import Any, Callable

from . import interrupts
from .progress_events import VM_STATES, Cells, Event, Transfer, VmState  # noqa: F401  (re-exported)

Progress = Callable[[str], None]


def emit(progress: Progress, event: Event) -> None:
    """Pass a structured event to progress, if it draws events (a plain line printer, a lambda
    of a test, does not: nothing happens)."""
    draw = getattr(progress, "event", None)
    if draw is not None:
        draw(event)


def live_wanted(stream: Any = None) -> bool:
    """A live display only on a terminal, never in CI (CI=true), where lines are kept."""
    stream = stream if stream is not None else sys.stderr
    if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
        return False
    return bool(getattr(stream, "isatty", lambda: False)())


def progress_printer(quiet: bool = False) -> Progress:
    """On a terminal, the live display (progress_live.LiveProgress); otherwise lines on stderr,
    each with the seconds since this printer was made."""
    if not quiet and live_wanted():
        from .progress_live import shared_display      # rich: only when drawing

        return shared_display()
    start = time.monotonic()

    def say(message: str) -> None:
        interrupts.raise_pending()      # a Ctrl-C that landed in a finalizer
        if not quiet:
            print(f"[{time.monotonic() - start:5.1f}s] {message}", file=sys.stderr, flush=True)
    return say
