"""Tables and JSON for people and machines."""
from __future__ import annotations

from ..lab import modes
from ..lab.model import Backend

CELL_TITLES = {"vm_to_host": "VM->host", "host_to_vm": "host->VM", "vm_to_vm": "VM<->VM",
               "vm_to_internet": "VM->Internet", "internet_to_vm": "Internet->VM"}


def modes_json(backend: Backend) -> dict:
    return {"backend": backend.value,
            "modes": {name: mode.expected[backend].as_dict() for name, mode in modes.MODES.items()},
            "differences": {name: mode.differences[backend]
                            for name, mode in modes.MODES.items() if backend in mode.differences}}


def table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*map(str, r)) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


def modes_table(backend: Backend) -> str:
    header = ["mode", *CELL_TITLES.values()]
    rows = [[name, *mode.expected[backend].as_dict().values()] for name, mode in modes.MODES.items()]
    notes = [f"* {name}: {mode.differences[backend]}" for name, mode in modes.MODES.items()
             if backend in mode.differences]
    return "\n".join([f"Expected reachability ({backend.value})", table(header, rows), *notes])
