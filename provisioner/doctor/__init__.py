"""vnet doctor: find what makes labs fail on this machine, before anything is created.

Each rule is one small module in provisioner/doctor/rules/ that defines RULE (see base.Rule);
adding a rule is adding a file. A rule reads the machine only through a `Host` (host.py), so
the tests feed it fake sysfs, proc and command outputs. `diagnose` runs every rule that
concerns the target; `preflight` runs the cheap lab rules inside `vnet up` and refuses the lab
(Unsupported: nothing created) when one of them finds an error."""
from __future__ import annotations

import importlib
import pkgutil
import textwrap
from dataclasses import dataclass, field, replace
from typing import Callable

from ..errors import Unsupported
from ..lab.model import Backend, Lab
from .base import SEVERITIES, Finding, Rule, error, ok, warn
from .host import Host, Output, SystemHost

__all__ = ["Finding", "Rule", "Host", "SystemHost", "Output", "Report", "all_rules", "run",
           "diagnose", "preflight", "ok", "warn", "error"]


def all_rules() -> list[Rule]:
    """Every rule in provisioner/doctor/rules/, in order."""
    package = importlib.import_module(f"{__name__}.rules")
    found = [importlib.import_module(f"{package.__name__}.{info.name}").RULE
             for info in pkgutil.iter_modules(package.__path__)]
    return sorted(found, key=lambda r: (r.order, r.id))


@dataclass
class Report:
    backend: str
    uri: str | None
    sandbox: str | None
    lab: str | None
    findings: list[Finding] = field(default_factory=list)
    not_applicable: dict[str, str] = field(default_factory=dict)

    def of(self, severity: str) -> list[Finding]:
        return [f for f in self.findings if f.severity == severity]

    @property
    def errors(self) -> list[Finding]:
        return self.of("error")

    @property
    def status(self) -> str:
        return next((s for s in reversed(SEVERITIES) if self.of(s)), "ok")

    def as_json(self) -> dict:
        return {"backend": self.backend, "uri": self.uri, "sandbox": self.sandbox,
                "lab": self.lab, "status": self.status,
                "findings": [f.as_dict() for f in self.findings],
                "not_applicable": self.not_applicable}

    def text(self, width: int = 100) -> str:
        where = f"sandbox {self.sandbox}" if self.sandbox else "this host"
        target = f"{self.uri}, " if self.backend == Backend.LIBVIRT.value and self.uri else ""
        lines = [f"vnet doctor: backend {self.backend}, {target}{where}"
                 + (f", lab {self.lab}" if self.lab else "")]
        idw = max([len(f.id) for f in self.findings] + [4])
        rank = {s: i for i, s in enumerate(reversed(SEVERITIES))}
        for f in sorted(self.findings, key=lambda f: rank[f.severity]):
            label = f.severity.upper() if f.severity != "ok" else "ok"
            head = f"  {label:<5}  {f.id:<{idw}}  "
            pad = " " * len(head)
            lines += textwrap.wrap(f.summary, width, initial_indent=head, subsequent_indent=pad)
            if f.fix:
                lines += textwrap.wrap("fix: " + f.fix, width, initial_indent=pad,
                                       subsequent_indent=pad + "     ")
        if self.not_applicable:
            lines += textwrap.wrap("not applicable: " + ", ".join(
                f"{rule} ({why})" for rule, why in self.not_applicable.items()), width,
                subsequent_indent="  ")
        errors, warnings = len(self.errors), len(self.of("warn"))
        verdict = ("labs will fail here until the errors are fixed" if errors else
                   "labs can run here" + (" (see the warnings)" if warnings else ""))
        lines.append(f"{errors} error(s), {warnings} warning(s): {verdict}")
        return "\n".join(lines)


def run(host: Host, select: Callable[[Rule], bool] | None = None) -> Report:
    report = Report(backend=host.backend.value, uri=host.uri, sandbox=host.sandbox,
                    lab=host.lab.name if host.lab else None)
    for rule in all_rules():
        if select is not None and not select(rule):
            continue
        if not rule.applies_to(host):
            report.not_applicable[rule.id] = rule.why_not(host)
            continue
        try:
            found = list(rule.check(host))
        except Exception as exc:  # noqa: BLE001 - one broken rule must not hide the others
            found = [warn(rule.id, f"this check could not run: {type(exc).__name__}: {exc}",
                          "report it as a vnet bug; the other checks are unaffected")]
        report.findings += [replace(f, rule=rule.id) for f in found]
    return report


def host_for(backend: Backend | str = Backend.LIBVIRT, uri: str | None = None,
             sandbox: str | None = None, lab: Lab | None = None,
             progress: Callable[[str], None] = lambda message: None) -> SystemHost:
    """The real machine as a target: a sandbox (its namespace and private libvirtd, whether it
    is up or not: the rules say so), or a libvirt URI (default qemu:///system)."""
    netns = None
    if sandbox:
        from ..host import sandbox as sandboxes

        sb = sandboxes.describe(sandbox)
        uri, netns = uri or sb.uri, sb.host_netns
    return SystemHost(Backend(backend), uri or "qemu:///system", lab, sandbox, netns,
                      progress=progress)


def diagnose(backend: Backend | str = Backend.LIBVIRT, uri: str | None = None,
             sandbox: str | None = None, lab: Lab | None = None,
             progress: Callable[[str], None] = lambda message: None) -> Report:
    return run(host_for(backend, uri, sandbox, lab, progress))


def preflight(lab: Lab, target, only: set[str] | None = None) -> Report:
    """Run the preflight rules for `lab` on `target` (a state.Target), or only those whose ids
    are in `only`. Raises Unsupported with the findings' summaries and fixes, before anything
    is created, when one is an error."""
    host = SystemHost(Backend.LIBVIRT, target.uri, lab, target.sandbox, target.netns)
    report = run(host, select=lambda rule: rule.preflight and (only is None or rule.id in only))
    if report.errors:
        exc = Unsupported(f"lab {lab.name!r} cannot be created here: "
                          + "; ".join(f.summary for f in report.errors),
                          hint=" ".join(dict.fromkeys(f.fix.rstrip(".") + "."
                                                      for f in report.errors)))
        exc.findings = report.errors
        exc.hardware = all(_rule(f.rule).hardware for f in report.errors)
        raise exc
    return report


def hardware_reasons(lab: Lab, findings: list[Finding]) -> dict[str, str]:
    """{vm: what its hardware NICs lack}, from the hardware findings preflight raised, for
    the skipped cells of each VM (checks.hardware_cells)."""
    reasons = {}
    for vm in lab.vms:
        keys = {"sriov:iommu"}
        for nic in vm.nics:
            keys |= {f"vdpa:{vm.name}", f"sriov:{nic.pf}", f"sriov:{nic.vf_address}"}
        mine = [f.summary.removeprefix("no hardware: ") for f in findings if f.id in keys]
        if mine:
            reasons[vm.name] = "; ".join(mine)
    return reasons


def _rule(rule_id: str) -> Rule:
    return next(r for r in all_rules() if r.id == rule_id)
