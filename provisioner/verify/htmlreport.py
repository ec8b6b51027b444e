"""The HTML report: one self-contained file (inline CSS and SVG, nothing fetched when it is
opened) made from the JSON report vnet already writes (`--report json`, a matrix's
summary.json), so a CI artifact can be turned into one later (`vnet report JSON --html FILE`).

Per lab: the topology drawn by graphviz (provisioner/verify/topograph.py; only when the JSON carries a
`topology` section) and, per network, the matrix as a grid of sources x targets in which every
check is one coloured cell: green when observed as expected, red when not (with its diagnosis,
the check's detail), grey when skipped. A matrix summary adds one row per mode x NIC model.

The page is rendered by Jinja2 with autoescape on (templates/report/report.html.j2): every
string from the report is escaped; the only markup let through unescaped is the SVG, which
topograph.sanitize() has parsed and rebuilt.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import jinja2

from ..errors import CommandFailed, LabFileError
from ..host.locks import write_out
from ..resources import data_dir

KIND_TITLES = {"vm_to_host": "VM->host", "host_to_vm": "host->VM", "vm_to_vm": "VM<->VM",
               "vm_to_internet": "VM->Internet", "internet_to_vm": "Internet->VM",
               "port_forward": "port fwd", "nic_model": "NIC model", "route": "route",
               "bond_failover": "bond failover", "tunnel": "tunnel",
               "encapsulation": "encapsulation"}
HOST, INTERNET = "host", "internet"


@dataclass
class Grid:
    """One network's checks as rows (sources) x columns (targets); a cell lists its checks."""
    network: str
    mode: str
    rows: list[str] = field(default_factory=list)
    cols: list[str] = field(default_factory=list)
    cells: dict[tuple[str, str], list[dict]] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)     # endpoint -> "vm1 (192.168.1.10)"


def outcome(check: dict) -> str:
    """green | red | skipped: how a check is coloured."""
    if check.get("observed") == "skipped":
        return "skipped"
    return "green" if check.get("ok") else "red"


def _first(text: str) -> str:
    return str(text).split(" ", 1)[0]


def endpoints(check: dict) -> tuple[str, str]:
    """(row, column) of a check: who probes, and whom. A NIC model check sits on its VM's
    diagonal; a port forward in its VM's column; an unknown kind by its target's first word."""
    kind, source, target = check.get("kind"), str(check.get("source")), str(check.get("target"))
    if kind == "vm_to_host":
        return source, HOST
    if kind == "vm_to_internet":
        return source, INTERNET
    if kind == "nic_model":
        return source, source
    if kind == "port_forward":
        return source, target.split(":", 1)[0]
    return source, _first(target)


def grids(checks: list[dict]) -> list[Grid]:
    by_net: dict[str, Grid] = {}
    for check in checks:
        grid = by_net.setdefault(str(check.get("network")),
                                 Grid(str(check.get("network")), str(check.get("mode", ""))))
        row, col = endpoints(check)
        for name in (row, col):
            for axis in (grid.rows, grid.cols):
                if name not in axis:
                    axis.append(name)
        if "(" in str(check.get("target", "")) and col != HOST:
            grid.labels.setdefault(col, str(check["target"]))
        grid.cells.setdefault((row, col), []).append(check)
    for grid in by_net.values():        # the host first, the Internet last, VMs as they came
        order = {HOST: -1, INTERNET: 1}
        grid.rows.sort(key=lambda n: order.get(n, 0))
        grid.cols.sort(key=lambda n: order.get(n, 0))
        grid.rows = [r for r in grid.rows if any((r, c) in grid.cells for c in grid.cols)]
        grid.cols = [c for c in grid.cols if any((r, c) in grid.cells for r in grid.rows)]
    return list(by_net.values())


def lab_view(result: dict) -> dict:
    """What the template needs for one lab's result."""
    from . import topograph

    checks = [_check(c) for c in result.get("checks", []) if isinstance(c, dict)]
    topology = result.get("topology")
    internet = any(c.get("kind") in ("vm_to_internet", "internet_to_vm") for c in checks)
    red = [c for c in checks if outcome(c) == "red"]
    facts = {key: result.get(key) for key in ("lab", "backend", "inventory", "error")}
    facts["timings"] = result.get("timings") if isinstance(result.get("timings"), dict) else {}
    facts["notes"] = [str(n) for n in result.get("notes") or [] if n]
    return {"result": facts, "checks": checks, "grids": grids(checks),
            "svg": topograph.svg(topology, internet) if isinstance(topology, dict) else None,
            "red": red, "ok_count": sum(1 for c in checks if c.get("ok")),
            "skipped": sum(1 for c in checks if outcome(c) == "skipped"),
            "verdict": _verdict(result)}


CHECK_KEYS = ("kind", "network", "mode", "source", "target", "expected", "observed", "detail")
SUMMARY_KEYS = ("lab", "mode", "nic_model", "verdict", "seconds", "cells_ok", "cells_total",
                "cells_skipped", "detail")


def _check(check: dict) -> dict:
    """A check from a saved report with every field the page shows (a missing one is empty):
    a declared cell (the lab file's `checks:`) keeps its mark and the OpenFlow rules its
    packets hit, each as "rule (N packets)"."""
    raw = check.get("flows")
    flows: list = raw if isinstance(raw, list) else []
    return {**{key: check.get(key, "") for key in CHECK_KEYS}, "ok": check.get("ok") is True,
            "declared": check.get("declared") is True,
            "flows": [f"{f.get('flow')} ({f.get('moved')} packets)"
                      if f.get("moved") is not None else str(f.get("flow"))
                      for f in flows if isinstance(f, dict)]}


def _verdict(result: dict) -> str:
    if result.get("matrix", {}).get("verdict"):
        return str(result["matrix"]["verdict"])
    if result.get("error"):
        return "error"
    if result.get("booted") is False:
        return "skipped" if result.get("ok") else "red"
    return "green" if result.get("ok") else "red"


def _env() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(data_dir("templates") / "report")),
                             autoescape=True, undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True)
    env.globals.update(outcome=outcome, kind_title=lambda k: KIND_TITLES.get(k, str(k)))
    return env


def render(result: dict, labs: list[dict] | None = None) -> str:
    """The page for one verification result, or for a matrix summary (`labs` then holds the
    per-lab results that could be read; a lab without one shows only its summary row)."""
    from .. import __version__

    if "labs" in result and "checks" not in result:
        views = [lab_view(r) for r in (labs or [])]
        result = dict(result, labs=[{key: lab.get(key, "") for key in SUMMARY_KEYS}
                                    for lab in result["labs"] if isinstance(lab, dict)])
        title = f"vnet matrix ({result.get('sandbox', '')})"
        return _env().get_template("report.html.j2").render(
            title=title, summary=result, labs=views, version=__version__)
    view = lab_view(result)
    return _env().get_template("report.html.j2").render(
        title=f"vnet lab {result.get('lab', '')}", summary=None, labs=[view], version=__version__)


def write_html(result: dict, out: Path, labs: list[dict] | None = None,
               write=write_out, source: Path | None = None) -> Path:
    """source: the JSON file `result` came from (vnet report), named when its shape is wrong."""
    # before touching `out`: a failure leaves nothing behind
    page = render(result, labs) if source is None else render_file(source, result, labs or [])
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write(out, page)
    return out


def load(path: Path) -> tuple[dict, list[dict]]:
    """A saved JSON report: a lab's result, or a matrix's summary.json with the lab results
    found beside it (<lab>.json). Bad input raises LabFileError naming the file."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LabFileError(str(path), "no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise LabFileError(str(path), f"not a JSON report: {exc}") from None
    if not isinstance(data, dict) or not (isinstance(data.get("checks"), list)
                                          or isinstance(data.get("labs"), list)):
        raise LabFileError(str(path), "not a vnet JSON report: expected an object with "
                           "\"checks\" (vnet verify --report json) or \"labs\" (a matrix's "
                           "summary.json)")
    labs = []
    if "checks" not in data:
        for lab in data["labs"]:
            name = lab.get("lab") if isinstance(lab, dict) else None
            beside = Path(path).parent / f"{name}.json"
            if isinstance(name, str) and "/" not in name and beside.is_file():
                try:
                    found = json.loads(beside.read_text(encoding="utf-8"))
                except (OSError, ValueError) as exc:
                    raise LabFileError(str(beside), f"not a JSON report: {exc}") from None
                if not isinstance(found, dict) or not isinstance(found.get("checks"), list):
                    raise LabFileError(str(beside), "not a vnet JSON report: expected an "
                                       "object with \"checks\"")
                labs.append(found)
    return data, labs


def render_file(path: Path, data: dict, labs: list[dict]) -> str:
    """render(), with a report whose parts have the wrong shape (a hand-edited or truncated
    file: "matrix": null, a topology entry that is a number) said as bad input naming the
    file, not as an internal error. A report vnet wrote always has the right shape."""
    try:
        return render(data, labs)
    except (AttributeError, TypeError, KeyError, jinja2.UndefinedError) as exc:
        raise LabFileError(str(path), f"not a vnet JSON report: a part has the wrong shape "
                           f"({type(exc).__name__}: {exc})") from None
    except CommandFailed as exc:      # dot refused the topology this file describes
        raise LabFileError(str(path), f"its topology cannot be drawn: {exc.message}") from None
