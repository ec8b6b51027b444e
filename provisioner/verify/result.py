"""The verify result: what `vnet verify`, `vnet matrix` and the reports read, built in one place
(its keys and their order are the JSON report's, unchanged)."""
from __future__ import annotations

from typing import Any, TypedDict

from ..lab.model import Backend


class VerifyResult(TypedDict, total=False):
    lab: str
    backend: str                  # "libvirt" | "virtualbox"
    inventory: str | None         # where the guests' addresses came from (verify only)
    ok: bool                      # every cell as expected, and at least one verified
    booted: bool                  # False: the lab never booted (missing hardware, an error)
    checks: list[dict]            # one per cell (verify.checks.Check.as_dict)
    timings: dict[str, float]
    notes: list[str]
    topology: dict                # the lab drawn for the HTML report


_UNSET: Any = object()


def build(lab: str, backend: Backend | str, ok: bool, checks: list[dict], timings: dict,
          notes: list[str], *, inventory: Any = _UNSET, booted: Any = _UNSET,
          topology: Any = _UNSET, **extra: Any) -> VerifyResult:
    """Keys in the report's order: lab, backend, [inventory], ok, [booted], checks, timings,
    notes, [topology], then the extra ones (a matrix's error or unsupported reason)."""
    result: dict[str, Any] = {"lab": lab, "backend": Backend(backend).value}
    if inventory is not _UNSET:
        result["inventory"] = inventory
    result["ok"] = ok
    if booted is not _UNSET:
        result["booted"] = booted
    result.update(checks=checks, timings=timings, notes=notes)
    if topology is not _UNSET:
        result["topology"] = topology
    result.update(extra)
    return result          # type: ignore[return-value]  # extra keys go beyond VerifyResult
