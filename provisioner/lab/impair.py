"""`impair:` on a NIC (delay, jitter, loss, rate) -> Impairment, with every range checked.

The ranges are what vnet can both apply and measure in a few seconds from inside a guest
(provisioner/verify/impairment.py holds the tolerances): a loss below 1 % needs more than
impairment.MAX_SAMPLES probes to tell from no loss at all, so it is refused rather than left
unverified."""
from __future__ import annotations

from typing import Any

from ..errors import LabFileError, quote
from .fields import _mapping
from .model import Impairment

# field -> (lowest, highest, unit): the one table the loader and `vnet impair` check against
RANGES: dict[str, tuple[float, float, str]] = {
    "delay_ms": (1, 5000, "ms"),
    "jitter_ms": (0, 1000, "ms"),
    "loss_pct": (1, 50, "%"),
    "rate_mbit": (0.5, 1000, "Mbit/s"),
}


def parse(value: Any, where: str) -> Impairment | None:
    """The NIC's `impair:` mapping (any subset of RANGES); None when absent."""
    if value is None:
        return None
    raw = _mapping(value, where, set(RANGES), required=set())
    if not raw:
        raise LabFileError(where, f"is empty; give any of {', '.join(RANGES)}")
    return build({k: v for k, v in raw.items()}, where)


def build(values: dict[str, Any], where: str) -> Impairment:
    """Check each value against RANGES (and jitter against delay) -> Impairment. A null or zero
    value declares nothing and is dropped; when nothing is left the impairment is refused: an
    empty one would give a cell with nothing to judge."""
    checked = {k: number(v, f"{where}.{k}", k) for k, v in values.items()
               if not (v is None or (type(v) in (int, float) and v == 0))}
    if not checked:
        raise LabFileError(where, f"is empty; give at least one of {', '.join(RANGES)} "
                           "(null and 0 declare nothing)")
    jitter, delay = checked.get("jitter_ms"), checked.get("delay_ms")
    if jitter and (delay is None or jitter > delay):
        raise LabFileError(f"{where}.jitter_ms", f"{jitter:g} ms needs a delay_ms of at least "
                           f"{jitter:g} (the delay varies by up to +/- jitter_ms around it)")
    return Impairment(**checked)


def number(value: Any, where: str, field: str) -> float:
    low, high, unit = RANGES[field]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise LabFileError(where, f"{quote(value)} must be a number from {low:g} to {high:g} "
                           f"({unit})")
    return float(value)
