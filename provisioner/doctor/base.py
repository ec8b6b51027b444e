"""What a doctor rule is and what it returns. Pure data: no I/O here."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from ..lab.model import Backend

if TYPE_CHECKING:
    from .host import Host

SEVERITIES = ("ok", "warn", "error")


@dataclass(frozen=True)
class Finding:
    """One thing the doctor found. `fix` says what to do; it is empty for ok findings."""
    id: str
    severity: str
    summary: str
    fix: str = ""
    rule: str = field(default="", compare=False)    # the rule that made it (not serialized)

    def __post_init__(self):
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity {self.severity!r} is not one of {SEVERITIES}")

    def as_dict(self) -> dict[str, str]:
        return {"id": self.id, "severity": self.severity, "summary": self.summary, "fix": self.fix}


def ok(id: str, summary: str) -> Finding:
    return Finding(id, "ok", summary)


def warn(id: str, summary: str, fix: str) -> Finding:
    return Finding(id, "warn", summary, fix)


def error(id: str, summary: str, fix: str) -> Finding:
    return Finding(id, "error", summary, fix)


@dataclass(frozen=True)
class Rule:
    """A check of the machine. `check(host)` returns its findings; it runs only when `applies`
    says the rule concerns this target (backend, lab). `preflight` rules also run inside
    `vnet up`, before anything is created; `hardware` rules are about devices a lab needs
    (SR-IOV, vDPA): a lab refused by them is reported as skipped, not as red."""
    id: str
    title: str
    check: Callable[["Host"], list[Finding]]
    order: int = 50
    backends: tuple[Backend, ...] = (Backend.LIBVIRT,)
    applies: Callable[["Host"], bool] = lambda host: True
    scope: str = ""            # when it applies, for people: "labs with sriov NICs"
    preflight: bool = False
    hardware: bool = False

    def applies_to(self, host: "Host") -> bool:
        return host.backend in self.backends and self.applies(host)

    def why_not(self, host: "Host") -> str:
        if host.backend not in self.backends:
            return "--backend " + "/".join(b.value for b in self.backends) + " only"
        return self.scope or "not needed here"
