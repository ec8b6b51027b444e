"""Points where a test may freeze `vnet up` to kill it there (tests/integration/test_crash.py).

With VNET_TEST_PAUSE_AT=<point> in the environment, the run prints one line naming the point and
its pid to stderr and then sleeps until it is killed; without it, `pause_at` does nothing. The
points: define (networks defined, domains not yet), address (VMs started, waiting for their
addresses), verify (listeners up, probes about to run)."""
from __future__ import annotations

import os
import sys
import time

ENV = "VNET_TEST_PAUSE_AT"
POINTS = ("define", "address", "verify")


def pause_at(point: str) -> None:
    if os.environ.get(ENV) != point:
        return
    print(f"vnet: paused at {point} ({ENV}), pid {os.getpid()}", file=sys.stderr, flush=True)
    while True:
        time.sleep(3600)


SKIP_IMPAIR_ENV = "VNET_TEST_SKIP_IMPAIR"


def skip_impairment() -> bool:
    """With VNET_TEST_SKIP_IMPAIR=1 the driver records a NIC's declared impairment but applies
    none: the impairment cell's negative control (tests/integration/test_impair.py)."""
    return os.environ.get(SKIP_IMPAIR_ENV) == "1"
