"""vnet matrix: every mode x NIC model lab, one after another, in a sandbox, and one summary.

For each (mode, model) the default lab (two VMs on one network) is resolved and planned (a
combination the backend cannot realize is "unsupported"), created, verified and destroyed, all
through the backend's Driver (drivers/base.py) and the ops layer (ops/labs.py): libvirt unless
another registered backend is asked for. A lab
whose hardware is missing (SR-IOV, vDPA) is refused by doctor's preflight before anything
exists, and its cells are reported as "skipped", never as passed. Labs run one at a time, or
up to --jobs N at once (default_jobs: from the cores and the free memory); each lab gets its own
host ports, and the summary lists the labs in mode x model order either way.

Files, in the report directory:
  <lab>.json     the verify result (JSON contract of `vnet verify --report json`) + "matrix"
  <lab>.xml      the same as JUnit
  summary.json   per-lab verdict, cells and seconds, the total wall time, doctor's findings;
                 rewritten after every lab, so an interrupted run keeps what it measured

Without --sandbox a temporary sandbox is created and removed at the end, also on Ctrl-C or
SIGTERM."""
from __future__ import annotations

import contextlib
import json
import signal
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .. import interrupts
from ..verify import checks
from ..lab import lanshare, loader as labfile, modes, nics
from ..drivers.base import Driver
from ..host import locks, sandbox, state
from ..verify import presentation, run as verifier
from . import labs as ops
from ..lab.defaults import default_lab
from ..errors import ExitStatus, LabFileError, NotFound, Unsupported, VnetError
from ..lab.model import Backend
from ..verify.result import build as build_result
from ..verify.report import table
from ..progress import Progress

PREFIX = "mx"
PORT_BASE = 300        # host ports 2521.., 7301..: clear of a `vnet create` lab in the same sandbox
PORT_STRIDE = 10       # lab i of the matrix forwards from PORT_BASE + i * PORT_STRIDE: labs run at once
# Lab i's network (modes that pick a subnet) is 192.168.(SUBNET_BASE + i).0/24: labs at once
# in one sandbox must not share a subnet (the host would reach the other lab's vm1 there).
SUBNET_BASE = 160
LAB_MEMORY_MIB = 700   # one default lab: 2 guests (128 MiB + QEMU) and its Ansible controller
DEFAULT_MODELS = ("virtio", "e1000")
VERDICTS = ("green", "red", "skipped", "unsupported", "error")


@dataclass
class LabRun:
    lab: str
    mode: str
    nic_model: str
    verdict: str                     # one of VERDICTS
    seconds: float
    cells_ok: int = 0
    cells_total: int = 0
    cells_skipped: int = 0
    cells_red: int = 0
    detail: str = ""
    timings: dict = field(default_factory=dict)
    json: str | None = None
    junit: str | None = None


def lab_name(mode: str, model: str) -> str:
    return f"{PREFIX}-{mode}-{model}"


def check_names(mode_names: list[str], model_names: list[str]) -> None:
    for kind, given, valid in (("mode", mode_names, modes.names()),
                               ("NIC model", model_names, nics.names())):
        for name in given:
            if name not in valid:
                raise LabFileError(f"--{kind.replace(' ', '-').lower()}s",
                                   f"unknown {kind} {name!r}; valid: {', '.join(valid)}")
        if not given:
            raise LabFileError(f"--{kind.replace(' ', '-').lower()}s", "must not be empty")


def default_jobs(labs: int) -> int:
    """How many labs run at once: TCG guests idle once booted and much of a lab's time is
    waiting (boot, SSH, Ansible), so two per core; never more than the free memory holds."""
    import os

    available = LAB_MEMORY_MIB
    try:
        with open("/proc/meminfo") as f:
            available = next(int(line.split()[1]) // 1024 for line in f
                             if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):
        pass
    return max(1, min(labs, 2 * (os.cpu_count() or 1), available // LAB_MEMORY_MIB))


def run(mode_names: list[str], model_names: list[str], report_dir: Path,
        sandbox_name: str | None = None, pf: str | None = None,
        progress: Progress = print, backend: Backend | str = Backend.LIBVIRT,
        jobs: int = 1) -> dict:
    """Run the matrix on `backend`'s driver, up to `jobs` labs at once; returns the summary
    (also written to report_dir/summary.json)."""
    check_names(mode_names, model_names)
    if jobs < 1:
        raise LabFileError("--jobs", f"must be at least 1, got {jobs}")
    sandbox.require_root("vnet matrix")          # before the report dir or a sandbox exists
    report_dir.mkdir(parents=True, exist_ok=True)
    started, wall = time.time(), time.monotonic()
    temporary = sandbox_name is None
    name = sandbox_name or f"{PREFIX}{uuid.uuid4().hex[:6]}"
    summary = {"started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
               "sandbox": name, "temporary_sandbox": temporary, "modes": mode_names,
               "nic_models": model_names, "labs": [], "wall_seconds": 0.0,
               "complete": False, "jobs": jobs}
    with _sigterm_as_interrupt():
        try:
            if temporary:
                progress(f"creating temporary sandbox {name}")
                sandbox.up(name, progress=progress)
            chosen = ops.driver(backend, name, None)
            summary["doctor"] = _doctor(chosen.backend, name, progress)
            combos = [(m, n) for m in mode_names for n in model_names]

            def one(i: int, say: Progress) -> LabRun:
                mode, model = combos[i]
                return run_one(mode, model, chosen, report_dir, pf,
                               _prefixed(say, f"[{i + 1}/{len(combos)} {lab_name(mode, model)}]"),
                               port_base=PORT_BASE + i * PORT_STRIDE,
                               subnet=_lab_subnet(mode, i), index=i)

            def done(outcomes: list[LabRun]) -> None:
                summary["labs"] = [asdict(o) for o in outcomes]
                summary["wall_seconds"] = round(time.monotonic() - wall, 1)
                _write_summary(report_dir, summary)
            if jobs == 1:
                outcomes: list[LabRun] = []
                for i in range(len(combos)):
                    outcomes.append(one(i, progress))
                    done(outcomes)
            else:
                from .matrixjobs import run_concurrently

                run_concurrently(len(combos), jobs, one, done, progress)
            summary["complete"] = True
        finally:
            if temporary:
                with _shielded():
                    progress(f"removing temporary sandbox {name}")
                    sandbox.down(name, progress=progress)
                    _remove_empty(state.target_dir(state.Target(uri="", sandbox=name)))
            summary["wall_seconds"] = round(time.monotonic() - wall, 1)
            summary["exit_code"] = int(exit_status(summary))
            _write_summary(report_dir, summary)
    return summary


def run_one(mode: str, model: str, chosen: Driver, report_dir: Path, pf: str | None,
            say: Progress, port_base: int = PORT_BASE, subnet: str | None = None,
            index: int = 0) -> LabRun:
    """Create, verify and destroy one lab with the driver `chosen`; never raises VnetError (it
    becomes the verdict). Its seconds run from resolving the lab to having destroyed it."""
    name = lab_name(mode, model)
    started = time.monotonic()
    lab, refusal = _prepare(mode, model, name, chosen, pf, port_base, subnet, index)
    if refusal is not None:
        verdict, result, detail = refusal
    else:
        try:
            verdict, result, detail = _create_and_verify(lab, chosen, say)
        finally:
            with _shielded():
                _destroy(name, chosen, say)
    cells = result["checks"]
    counts = checks.tally(cells)
    outcome = LabRun(lab=name, mode=mode, nic_model=model, verdict=verdict,
                     seconds=round(time.monotonic() - started, 1),
                     cells_ok=counts["ok"], cells_total=len(cells),
                     cells_skipped=counts["skipped"], cells_red=counts["red"],
                     detail=detail, timings=result.get("timings", {}),
                     json=str(report_dir / f"{name}.json"), junit=str(report_dir / f"{name}.xml"))
    result = dict(result, matrix={"mode": mode, "nic_model": model, "verdict": verdict,
                                  "seconds": outcome.seconds})
    presentation.write_report(result, "json", Path(outcome.json))
    presentation.write_report(result, "junit", Path(outcome.junit))
    say(f"{verdict}: {outcome.cells_ok}/{outcome.cells_total} cells as expected"
        + (f" ({detail})" if detail else "") + f", {outcome.seconds:.1f}s")
    return outcome


def _empty(name: str, backend: Backend, **extra) -> dict:
    """A result for a lab that never ran (shaped like verify()'s)."""
    fields = {"ok": False, "checks": [], "timings": {}, "notes": [], "booted": False}
    fields.update((k, extra.pop(k)) for k in list(extra) if k in fields)
    return dict(build_result(name, backend, fields["ok"], fields["checks"],
                             fields["timings"], fields["notes"], booted=fields["booted"], **extra))


def _lab_subnet(mode: str, i: int) -> str | None:
    """Lab i's own subnet, for modes that pick one: labs at once never share a subnet. A mode
    with preferred subnets (VirtualBox takes host-only networks only in 192.168.56.0/21) gets
    the i-th of those, the others 192.168.(SUBNET_BASE + i).0/24."""
    found = modes.MODES.get(mode)
    if found is None or found.subnet != "auto":
        return None
    preferred = found.preferred_subnets
    return preferred[i % len(preferred)] if preferred else f"192.168.{SUBNET_BASE + i}.0/24"


def _prepare(mode: str, model: str, name: str, chosen: Driver, pf: str | None,
             port_base: int = PORT_BASE, subnet: str | None = None, index: int = 0):
    """(lab, None), or (None, (verdict, result, detail)) when the lab must not be created:
    a combination the backend cannot realize, or a lab of that name that is not ours to touch."""
    target = chosen.target
    try:
        data = default_lab(mode, model, 2, name, port_base=port_base, pf=pf or _some_pf(model))
        if subnet:
            data["networks"][0]["subnet"] = subnet
        defaults = sandbox.lab_defaults(target.sandbox)
        if modes.MODES[mode].subnet == "lan" and defaults.bridged_subnet is not None:
            # labs at once share the sandbox's LAN: lab i takes block i + 1 (block 0 is
            # where a `vnet create` lab in the same sandbox puts its guests)
            for vm, ip in zip(data["vms"], lanshare.block_ips(
                    defaults.bridged_subnet, labfile.FIRST_HOST, index + 1, len(data["vms"]))):
                vm["nics"][0]["ip"] = ip
        lab = labfile.resolve(data, defaults, source=f"vnet matrix ({mode} x {model})")
        chosen.plan(lab)
    except (LabFileError, Unsupported) as exc:
        return None, ("unsupported", _empty(name, chosen.backend, ok=True,
                                            unsupported=exc.message, notes=[exc.message]),
                      exc.message)
    if chosen.record(name) is not None:
        message = (f"a lab named {name} already exists on this target; vnet matrix leaves it "
                   f"alone (vnet destroy {name} --sandbox {target.sandbox} removes it)")
        return None, ("error", _empty(name, chosen.backend, error=message), message)
    return lab, None


def _create_and_verify(lab, chosen: Driver, say: Progress) -> tuple[str, dict, str]:
    """(verdict, result, detail); the caller destroys whatever was created."""
    try:
        say("creating")
        try:
            record = ops.up_on(chosen, lab, say)
        except Unsupported as exc:
            if not getattr(exc, "hardware", False):
                raise
            from ..doctor import hardware_reasons

            reason = "; ".join(f.summary.removeprefix("no hardware: ") for f in exc.findings)
            cells = checks.hardware_cells(lab, verifier.endpoints(lab, chosen.target),
                                          hardware_reasons(lab, exc.findings) or reason)
            note = f"not booted: {exc.message}" + (f"; fix: {exc.hint}" if exc.hint else "")
            return "skipped", verifier.unbooted_result(lab, cells, note, backend=chosen.backend), \
                "no hardware: " + reason
        result = ops.verify(chosen, lab, say, timings=record.get("timings", {}))
        if not presentation.exit_code(result):
            return "green", result, ""
        red = checks.tally(result["checks"])["red"]
        return "red", result, f"{red} red cell(s)" if red else "nothing verified"
    except VnetError as exc:
        message = exc.message + (f" (hint: {exc.hint})" if exc.hint else "")
        return "error", _empty(lab.name, chosen.backend, error=message), message
    except Exception as exc:  # noqa: BLE001 - one broken lab must not end the whole matrix
        import traceback

        say("unexpected failure:\n" + "".join(traceback.format_exception(exc)).rstrip())
        message = f"unexpected {type(exc).__name__}: {exc}"
        return "error", _empty(lab.name, chosen.backend, error=message), message


def exit_status(summary: dict) -> ExitStatus:
    """1 when any cell is red; else 3 when a lab could not be created or booted; else 1 when
    nothing was verified (every lab skipped or unsupported: a green exit must prove something);
    else 0."""
    verdicts = {lab["verdict"] for lab in summary["labs"]}
    if "red" in verdicts:
        return ExitStatus.CHECKS_FAILED
    if "error" in verdicts:
        return ExitStatus.ENVIRONMENT
    if "green" not in verdicts:
        return ExitStatus.CHECKS_FAILED
    return ExitStatus.OK


def summary_table(summary: dict) -> str:
    rows = []
    for lab in summary["labs"]:
        cells = f"{lab['cells_ok']}/{lab['cells_total']}"
        if lab["cells_skipped"]:
            cells += f" ({lab['cells_skipped']} skipped)"
        verdict = lab["verdict"].upper() if lab["verdict"] in ("red", "error") else lab["verdict"]
        rows.append([lab["mode"], lab["nic_model"], cells, f"{lab['seconds']:.1f}", verdict])
    lines = [table(["mode", "model", "cells ok/total", "seconds", "verdict"], rows)]
    for lab in summary["labs"]:
        if lab["verdict"] != "green" and lab["detail"]:
            lines.append(f"{lab['lab']}: {lab['verdict']}: {lab['detail']}")
    counts = {v: sum(lab["verdict"] == v for lab in summary["labs"]) for v in VERDICTS}
    cells = {k: sum(lab.get(f"cells_{k}", 0) for lab in summary["labs"])
             for k in ("ok", "red", "skipped")}
    lines.append(f"{len(summary['labs'])} lab(s) in {summary['wall_seconds']:.1f}s wall time: "
                 + ", ".join(f"{n} {v}" for v, n in counts.items() if n)
                 + "; cells: " + ", ".join(f"{n} {k}" for k, n in cells.items())
                 + ("" if summary.get("complete") else " (interrupted)"))
    if not counts["green"] and not counts["red"] and not counts["error"]:
        lines.append("NOTHING VERIFIED: every lab was skipped or unsupported")
    return "\n".join(lines)


# --- helpers ----------------------------------------------------------------------------------


def _some_pf(model: str) -> str | None:
    """sriov labs need a PF: the first SR-IOV capable NIC here, or a name that doctor will
    report as missing hardware."""
    if model != "sriov":
        return None
    from ..doctor.host import SystemHost
    from ..doctor.rules.sriov import capable_pfs

    return next(iter(capable_pfs(SystemHost())), "nopf0")


def _doctor(backend: Backend, sandbox_name: str, progress: Progress) -> dict:
    from .. import doctor

    report = doctor.diagnose(backend, sandbox=sandbox_name, progress=progress)
    progress(f"doctor: {len(report.errors)} error(s), {len(report.of('warn'))} warning(s)"
             + "".join(f"; {f.id}: {f.summary}" for f in report.errors))
    return report.as_json()


def _destroy(name: str, chosen: Driver, say: Progress) -> None:
    try:
        chosen.destroy(name, say)
    except NotFound:
        pass
    except VnetError as exc:
        say(f"warning: destroying {name} failed: {exc.message}")


def _remove_empty(directory: Path) -> None:
    """The per-sandbox lab state directory of a temporary sandbox, once its labs are gone."""
    try:
        directory.rmdir()
    except OSError:
        pass


def _write_summary(report_dir: Path, summary: dict) -> None:
    locks.write_atomic(report_dir / "summary.json", json.dumps(summary, indent=2) + "\n")


def _prefixed(progress: Progress, prefix: str) -> Progress:
    return lambda message: progress(f"{prefix} {message}")


@contextlib.contextmanager
def _sigterm_as_interrupt():
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
def _shielded():
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
