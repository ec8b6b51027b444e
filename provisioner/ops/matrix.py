"""vnet matrix: every mode x NIC model, in a sandbox, and one summary.

For each (mode, model) the default lab (two VMs on one network) is resolved and planned (a
combination the backend cannot realize is "unsupported"), created, verified and destroyed, all
through the backend's Driver (drivers/base.py) and the ops layer (ops/labs.py): libvirt unless
another registered backend is asked for. A lab
whose hardware is missing (SR-IOV, vDPA) is refused by doctor's preflight before anything
exists, and its cells are reported as "skipped", never as passed. Labs run one at a time, or
up to --jobs N at once (default_jobs: from the cores and the free memory); each lab gets its own
host ports, subnets and LAN addresses (ops/matrixlabs.py), and the summary lists the
combinations in mode x model order either way.

shared=True (the CLI's default): one lab per NIC model carries every mode it can realize, one
NIC per mode on the same two VMs, verified once; its cells are split back into one result per
(mode, model), shaped as a lab of its own (run_shared, ops/matrixlabs.split). shared=False:
one lab each.

Files, in the report directory (<lab> is mx-<mode>-<model> either way):
  <lab>.json     the verify result (JSON contract of `vnet verify --report json`) + "matrix"
                 (with "shared_lab" when its cells came from a shared lab)
  <lab>.xml      the same as JUnit
  summary.json   per-lab verdict, cells and seconds, the total wall time, doctor's findings,
                 the strategy and the shared labs; rewritten after every lab, so an
                 interrupted run keeps what it measured

Without --sandbox a temporary sandbox is created and removed at the end, also on Ctrl-C or
SIGTERM."""
from __future__ import annotations

import json
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..verify import checks
from ..lab import loader as labfile, modes, nics
from ..drivers.base import Driver
from ..host import locks, sandbox, state
from ..verify import presentation, run as verifier
from . import labs as ops
from ..errors import LabFileError, NotFound, Unsupported, VnetError
from ..lab.model import Backend
from ..verify.result import build as build_result
from ..progress import Progress
from .matrixjobs import run_concurrently, shielded, sigterm_as_interrupt
from .matrixlabs import PREFIX, combo_lab, lab_name, shared_lab, shared_name, split, units
from .matrixsummary import VERDICTS, exit_status, shared_labs, summary_table  # noqa: F401 (the CLI's)

LAB_MEMORY_MIB = 700   # one default lab: 2 guests (128 MiB + QEMU) and its Ansible controller
DEFAULT_MODELS = ("virtio", "e1000")


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
    shared_lab: str | None = None    # the lab these cells came from, when it carried other modes


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
        jobs: int | None = 1, shared: bool = False) -> dict:
    """Run the matrix on `backend`'s driver, up to `jobs` labs at once (None: default_jobs);
    shared: one lab per NIC model for all its modes. Returns the summary (also written to
    report_dir/summary.json)."""
    check_names(mode_names, model_names)
    if jobs is not None and jobs < 1:
        raise LabFileError("--jobs", f"must be at least 1, got {jobs}")
    sandbox.require_root("vnet matrix")          # before the report dir or a sandbox exists
    report_dir.mkdir(parents=True, exist_ok=True)
    started, wall = time.time(), time.monotonic()
    temporary = sandbox_name is None
    name = sandbox_name or f"{PREFIX}{uuid.uuid4().hex[:6]}"
    summary = {"started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
               "sandbox": name, "temporary_sandbox": temporary, "modes": mode_names,
               "nic_models": model_names, "labs": [], "wall_seconds": 0.0,
               "complete": False, "jobs": jobs,
               "strategy": "shared" if shared else "one lab per mode"}
    with sigterm_as_interrupt():
        try:
            if temporary:
                progress(f"creating temporary sandbox {name}")
                sandbox.up(name, progress=progress)
            chosen = ops.driver(backend, name, None)
            summary["doctor"] = _doctor(chosen.backend, name, progress)
            combos = [(m, n) for m in mode_names for n in model_names]
            groups = units(combos, shared, lambda i: _prepare(
                combos, i, chosen, pf, check_record=False)[0] is not None)
            summary["jobs"] = jobs = jobs or default_jobs(len(groups))

            def one(u: int, say: Progress) -> list[LabRun]:
                group = groups[u]
                mode, model = combos[group[0]]
                if len(group) > 1:
                    return run_shared(group, combos, chosen, report_dir, pf, _prefixed(
                        say, f"[{u + 1}/{len(groups)} {shared_name(model)}]"))
                return [run_one(combos, group[0], chosen, report_dir, pf, _prefixed(
                    say, f"[{u + 1}/{len(groups)} {lab_name(mode, model)}]"))]

            def done(finished: list[list[LabRun]]) -> None:
                order = {lab_name(*c): i for i, c in enumerate(combos)}
                outcomes = sorted((o for runs in finished for o in runs),
                                  key=lambda o: order[o.lab])
                summary["labs"] = rows = [asdict(o) for o in outcomes]
                summary["shared_labs"] = shared_labs(rows)
                summary["wall_seconds"] = round(time.monotonic() - wall, 1)
                _write_summary(report_dir, summary)
            if jobs == 1:
                finished: list[list[LabRun]] = []
                for u in range(len(groups)):
                    finished.append(one(u, progress))
                    done(finished)
            else:
                run_concurrently(len(groups), jobs, one, done, progress)
            summary["complete"] = True
        finally:
            if temporary:
                with shielded():
                    progress(f"removing temporary sandbox {name}")
                    sandbox.down(name, progress=progress)
                    _remove_empty(state.target_dir(state.Target(uri="", sandbox=name)))
            summary["wall_seconds"] = round(time.monotonic() - wall, 1)
            summary["exit_code"] = int(exit_status(summary))
            _write_summary(report_dir, summary)
    return summary


def run_one(combos: list[tuple[str, str]], i: int, chosen: Driver, report_dir: Path,
            pf: str | None, say: Progress) -> LabRun:
    """Create, verify and destroy the lab of combination i (with its own ports, subnet and LAN
    addresses) with the driver `chosen`; never raises VnetError (it becomes the verdict). Its
    seconds run from resolving the lab to having destroyed it."""
    mode, model = combos[i]
    name = lab_name(mode, model)
    started = time.monotonic()
    lab, refusal = _prepare(combos, i, chosen, pf)
    if refusal is not None:
        verdict, result, detail = refusal
    else:
        try:
            verdict, result, detail = _create_and_verify(lab, chosen, say)
        finally:
            with shielded():
                _destroy(name, chosen, say)
    return record_row(mode, model, verdict, result, detail, time.monotonic() - started,
                      report_dir, say)


def record_row(mode: str, model: str, verdict: str, result: dict, detail: str, seconds: float,
           report_dir: Path, say: Progress, shared_lab: str | None = None) -> LabRun:
    """One combination's row, its JSON and JUnit reports, and its progress line."""
    name = lab_name(mode, model)
    cells = result["checks"]
    counts = checks.tally(cells)
    outcome = LabRun(lab=name, mode=mode, nic_model=model, verdict=verdict,
                     seconds=round(seconds, 1),
                     cells_ok=counts["ok"], cells_total=len(cells),
                     cells_skipped=counts["skipped"], cells_red=counts["red"],
                     detail=detail, timings=result.get("timings", {}),
                     json=str(report_dir / f"{name}.json"), junit=str(report_dir / f"{name}.xml"),
                     shared_lab=shared_lab)
    result = dict(result, matrix={"mode": mode, "nic_model": model, "verdict": verdict,
                                  "seconds": outcome.seconds,
                                  **({"shared_lab": shared_lab} if shared_lab else {})})
    # names vnet chose in a report directory that may be shared: always replaced whole
    presentation.write_report(result, "json", Path(outcome.json), write=locks.write_atomic)
    presentation.write_report(result, "junit", Path(outcome.junit), write=locks.write_atomic)
    say((f"{mode}: " if shared_lab else "")
        + f"{verdict}: {outcome.cells_ok}/{outcome.cells_total} cells as expected"
        + (f" ({detail})" if detail else "") + f", {outcome.seconds:.1f}s")
    return outcome


def run_shared(group: list[int], combos: list[tuple[str, str]], chosen: Driver,
               report_dir: Path, pf: str | None, say: Progress) -> list[LabRun]:
    """The combinations `group` (indices into combos, one NIC model) in one lab; one LabRun
    each, every one with that lab's seconds. Never raises VnetError (it becomes the verdicts).
    A lab the backend cannot make with every mode at once falls back to one lab per mode.

    Each mode's cells stay the truth about that mode: every in-guest probe is bound to the
    device and address of its own NIC (playbooks/library/vnet_probe.py, bind_to_nic) and the
    guest routes each NIC's address by that NIC's table (guest/files/rootfs/usr/lib/vnet/
    nicroute), so another mode's NIC cannot carry it; the host and the Internet reach a VM's
    address on a network only through that network. tests/integration/test_matrix_shared.py:
    with one mode's NICs cut, its positive cells, and only they, turn red."""
    model = combos[group[0]][1]
    mode_names = [combos[i][0] for i in group]
    name = shared_name(model)
    started = time.monotonic()
    lab, refusal = _prepare(combos, group[0], chosen, pf, group=group)
    if refusal is not None and refusal[0] == "unsupported":
        say(f"one lab for {', '.join(mode_names)} cannot be made ({refusal[2]}); "
            "one lab per mode instead")
        return [run_one(combos, i, chosen, report_dir, pf, say) for i in group]
    if refusal is not None:
        verdict, result, detail = refusal
    else:
        say(f"one lab for {', '.join(mode_names)}: {len(lab.vms)} VMs, one NIC per mode")
        try:
            verdict, result, detail = _create_and_verify(lab, chosen, say)
        finally:
            with shielded():
                _destroy(name, chosen, say)
    seconds = time.monotonic() - started
    outcomes = []
    for mode in mode_names:
        part = split(result, mode, lab_name(mode, model), name, mode_names)
        mode_verdict, mode_detail = (verdict, detail) if verdict in ("error", "skipped") \
            else judged(part)
        outcomes.append(record_row(mode, model, mode_verdict, part, mode_detail, seconds,
                                   report_dir, say, shared_lab=name))
    return outcomes


def _empty(name: str, backend: Backend, **extra) -> dict:
    """A result for a lab that never ran (shaped like verify()'s)."""
    fields = {"ok": False, "checks": [], "timings": {}, "notes": [], "booted": False}
    fields.update((k, extra.pop(k)) for k in list(extra) if k in fields)
    return dict(build_result(name, backend, fields["ok"], fields["checks"],
                             fields["timings"], fields["notes"], booted=fields["booted"], **extra))


def _prepare(combos: list[tuple[str, str]], i: int, chosen: Driver, pf: str | None,
             check_record: bool = True, group: list[int] | None = None):
    """(lab, None), or (None, (verdict, result, detail)) when the lab must not be created:
    a combination the backend cannot realize, or a lab of that name that is not ours to touch.
    The lab is combination i's (ops/matrixlabs.py), or with `group`, the shared lab of those
    combinations (one NIC model)."""
    target = chosen.target
    mode, model = combos[i]
    name = lab_name(mode, model) if group is None else shared_name(model)
    try:
        defaults = sandbox.lab_defaults(target.sandbox)
        pf = pf or _some_pf(model)
        if group is None:
            data = combo_lab(combos, i, name, pf, defaults.bridged_subnet)
        else:
            data = shared_lab([(combos[k][0], combo_lab(combos, k, name, pf,
                                                        defaults.bridged_subnet)) for k in group],
                              name)
            mode = ", ".join(combos[k][0] for k in group)
        lab = labfile.resolve(data, defaults, source=f"vnet matrix ({mode} x {model})")
        chosen.plan(lab)
    except (LabFileError, Unsupported) as exc:
        return None, ("unsupported", _empty(name, chosen.backend, ok=True,
                                            unsupported=exc.message, notes=[exc.message]),
                      exc.message)
    if check_record and chosen.record(name) is not None:
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
        verdict, detail = judged(result)
        return verdict, result, detail
    except VnetError as exc:
        message = exc.message + (f" (hint: {exc.hint})" if exc.hint else "")
        return "error", _empty(lab.name, chosen.backend, error=message), message
    except Exception as exc:  # noqa: BLE001 - one broken lab must not end the whole matrix
        import traceback

        say("unexpected failure:\n" + "".join(traceback.format_exception(exc)).rstrip())
        message = f"unexpected {type(exc).__name__}: {exc}"
        return "error", _empty(lab.name, chosen.backend, error=message), message


def judged(result: dict) -> tuple[str, str]:
    """(verdict, detail) of a verified lab's result: green, or red with why."""
    if not presentation.exit_code(result):
        return "green", ""
    counts = checks.tally(result["checks"])
    if counts["red"]:
        return "red", f"{counts['red']} red cell(s)"
    if counts["ok"] and counts["skipped"]:      # a booted lab: a skipped cell proves nothing
        return "red", f"{counts['skipped']} skipped cell(s)"
    return "red", "nothing verified"


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
