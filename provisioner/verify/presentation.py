"""How a verify result is shown and kept: the matrix as text (`matrix_text`, with its summary
and verdict lines), the exit code it stands for, and the report files (JSON, JUnit XML, HTML)."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from xml.sax.saxutils import quoteattr

from . import checks as checklib
from . import flowstats
from ..host.locks import write_out
from .report import CELL_TITLES, table

KIND_TITLES = dict(CELL_TITLES, port_forward="port fwd", nic_model="NIC model", route="route",
                   bond_failover="bond failover", impairment="impairment", tunnel="tunnel",
                   encapsulation="encapsulation")


def matrix_text(result: dict) -> str:
    color = sys.stdout.isatty()

    def paint(text, code):
        return f"\033[{code}m{text}\033[0m" if color else text

    def mark(c):
        if c["observed"] == checklib.SKIPPED:
            return paint(c["observed"], 33), "skipped"
        return paint(c["observed"], 32 if c["ok"] else 31), "ok" if c["ok"] else "MISMATCH"
    hosts = any("hosts" in c for c in result["checks"])    # several hosts: one more column
    rows = [[c["network"], KIND_TITLES[c["kind"]] + (" (declared)" if c.get("declared") else ""),
             c["source"], c["target"], *([c.get("hosts", "-")] if hosts else []), c["expected"],
             *mark(c)] for c in result["checks"]]
    skipped = [c for c in result["checks"] if c["observed"] == checklib.SKIPPED]
    lines = [f"lab {result['lab']} ({result['backend']}): {summary_line(result)}",
             table(["network", "cell", "from", "to", *(["hosts"] if hosts else []), "expected",
                    "observed", ""], rows)]
    red = [c for c in result["checks"] if not c["ok"] and c["observed"] != checklib.SKIPPED]
    if red:
        lines.append("diagnosis:")
        lines += [f"  {c['kind']} {c['source']} -> {c['target']}: expected {c['expected']}, "
                  f"observed {c['observed']}: {c['detail']}" for c in red]
    measured = [c for c in result["checks"] if c["kind"] == "impairment" and c["ok"]]
    if measured:       # declared against measured, green ones too (red ones are above)
        lines.append("impairment:")
        lines += [f"  {c['source']} -> {c['target']}: {c['detail']}" for c in measured]
    lines += flowstats.text(result)
    if skipped:
        lines.append(f"skipped: {skipped[0]['detail']}")
    lines += [f"note: {n}" for n in result.get("notes", [])]
    lines.append("timings: " + ", ".join(f"{k} {v}s" for k, v in result["timings"].items()))
    if result.get("booted", True) is False:
        lines.append("SKIPPED (not booted: no hardware)" if result["ok"] else "NOT VERIFIED")
    else:
        lines.append(verdict_line(result))
    return "\n".join(lines)


def summary_line(result: dict) -> str:
    """"12 ok, 1 red, 2 skipped (of 15 cells)": what the exit code is made of."""
    counts = checklib.tally(result["checks"])
    return ", ".join(f"{n} {k}" for k, n in counts.items()) + f" (of {len(result['checks'])} cells)"


def verdict_line(result: dict) -> str:
    verdict = checklib.verdict(result["checks"])
    if verdict == checklib.NOTHING_VERIFIED:
        return "NOTHING VERIFIED (every cell skipped or unsupported)"
    if verdict == checklib.GREEN and result["ok"]:
        return "VERIFIED"
    skipped = checklib.tally(result["checks"])["skipped"]
    if verdict == checklib.GREEN and skipped and result.get("booted", True):
        return f"NOT VERIFIED ({skipped} skipped cell(s): a check vnet could not make proves nothing)"
    return "NOT VERIFIED"


def exit_code(result: dict) -> int:
    """0 only when the lab is green: 1 on any red cell, and 1 when nothing was verified."""
    green = result["ok"] and checklib.verdict(result["checks"]) == checklib.GREEN
    return 0 if green else 1


def write_report(result: dict, kind: str, out: Path, write=write_out) -> None:
    """write: how the file is written (write_out: a user's --out, which may be a stream;
    vnet matrix passes write_atomic for the names it chooses in a report directory)."""
    if kind == "html":       # the topology drawn and the matrix as a coloured grid
        from .htmlreport import write_html

        write_html(result, out, write=write)
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    if kind == "json":
        write(out, json.dumps(result, indent=2) + "\n")
        return
    cases = []
    # a booted lab's skipped cell is a check it asked for and vnet could not make: a failure
    # (checks.booted_ok), as the exit code says; only a lab never booted skips its cells
    booted = result.get("booted", True)
    for c in result["checks"]:
        name = quoteattr(f"{c['kind']} {c['source']} -> {c['target']}")
        if c["observed"] == checklib.SKIPPED and not booted:
            body = f"<skipped message={quoteattr(c['detail'])}/>"
        elif c["ok"]:
            body = ""
        else:
            body = (f"<failure message={quoteattr(c['detail'])}>expected {c['expected']}, "
                    f"observed {c['observed']}</failure>")
        cases.append(f'  <testcase classname={quoteattr(result["lab"] + "." + c["network"])} '
                     f'name={name}>{body}</testcase>')
    errors = 0
    if result.get("error"):      # the lab could not be created or booted: no cell ran
        errors = 1
        cases.append(f'  <testcase classname={quoteattr(result["lab"])} name="create lab">'
                     f'<error message={quoteattr(result["error"])}/></testcase>')
    skipped = 0 if booted else sum(c["observed"] == checklib.SKIPPED for c in result["checks"])
    failures = sum(not c["ok"] for c in result["checks"]) - skipped
    write(out, f'<?xml version="1.0" encoding="UTF-8"?>\n<testsuite name={quoteattr("vnet " + result["lab"])} '
                   f'tests="{len(cases)}" failures="{failures}" errors="{errors}" '
                   f'skipped="{skipped}" time="{result["timings"].get("verify", 0)}">\n'
                   + "\n".join(cases) + "\n</testsuite>\n")
