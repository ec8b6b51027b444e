"""Progress: how long-running library code tells a person what it is doing, one line at a time.
Library code takes a Progress and never prints; the CLI passes progress_printer()."""
from __future__ import annotations

import sys
import time
from typing import Callable

Progress = Callable[[str], None]


def progress_printer(quiet: bool = False) -> Progress:
    """Lines on stderr, each with the seconds since this printer was made."""
    start = time.monotonic()

    def say(message: str) -> None:
        if not quiet:
            print(f"[{time.monotonic() - start:5.1f}s] {message}", file=sys.stderr, flush=True)
    return say
