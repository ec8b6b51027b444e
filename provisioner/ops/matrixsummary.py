"""vnet matrix's summary: its exit status, its table, and which rows shared a lab."""
from __future__ import annotations

from ..errors import ExitStatus
from ..verify.report import table

VERDICTS = ("green", "red", "skipped", "unsupported", "error")


def shared_labs(outcomes: list[dict]) -> list[dict]:
    """summary.json's shared labs, from its rows (LabRun dicts): which modes each carried,
    its seconds and timings."""
    found: dict[str, dict] = {}
    for row in outcomes:
        if row.get("shared_lab"):
            lab = found.setdefault(row["shared_lab"], {
                "lab": row["shared_lab"], "nic_model": row["nic_model"], "modes": [],
                "seconds": row["seconds"], "timings": row["timings"]})
            lab["modes"].append(row["mode"])
    return list(found.values())


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
    shared = summary.get("shared_labs") or []
    for lab in shared:
        lines.append(f"{lab['lab']}: one lab for {', '.join(lab['modes'])} x {lab['nic_model']}, "
                     f"{lab['seconds']:.1f}s (the seconds of each of its rows)")
    alone = sum(not lab.get("shared_lab") for lab in summary["labs"])
    made = (f"{len(summary['labs'])} lab(s)" if not shared else
            f"{len(summary['labs'])} mode x model result(s) from {len(shared) + alone} lab(s)")
    lines.append(f"{made} in {summary['wall_seconds']:.1f}s wall time: "
                 + ", ".join(f"{n} {v}" for v, n in counts.items() if n)
                 + "; cells: " + ", ".join(f"{n} {k}" for k, n in cells.items())
                 + ("" if summary.get("complete") else " (interrupted)"))
    if not counts["green"] and not counts["red"] and not counts["error"]:
        lines.append("NOTHING VERIFIED: every lab was skipped or unsupported")
    return "\n".join(lines)
