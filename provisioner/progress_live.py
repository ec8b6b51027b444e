"""The live progress display on a terminal (progress.progress_printer picks it on a TTY):
rich draws the lines as they come, with their timestamps, and under them a panel that is
redrawn in place: each VM's boot state (defined, booting, address, ready), verified cells out
of the total, a download's bytes, and the latest step of whatever is running."""
from __future__ import annotations

import atexit
import sys
import time

from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from . import interrupts
from .progress_events import VM_STATES, Cells, Event, Transfer, VmState

STATE_STYLE = {"defined": "dim", "booting": "yellow", "address": "cyan", "ready": "green"}


class LiveProgress:
    """Callable like any Progress (one line), plus .event(Event) for the panel. The display
    starts with the first line or event and stops at exit (or close())."""

    def __init__(self, console: Console | None = None):
        self.console = console or Console(stderr=True)
        self.start = time.monotonic()
        self.vms: dict[str, str] = {}
        self.cells: Cells | None = None
        self.transfer: Transfer | None = None
        self.step = ""
        self._live: Live | None = None

    def __call__(self, message: str) -> None:
        interrupts.raise_pending()      # a Ctrl-C that landed in a finalizer
        self.step = message
        self._ensure_live().console.print(
            Text(f"[{time.monotonic() - self.start:5.1f}s] ", style="dim") + Text(message))
        self._refresh()

    def event(self, event: Event) -> None:
        if isinstance(event, VmState):
            self.vms[event.vm] = event.state
        elif isinstance(event, Cells):
            self.cells = event
        elif isinstance(event, Transfer):
            self.transfer = event if event.done < event.total or not event.total else None
        self._ensure_live()
        self._refresh()

    def render(self) -> Group:
        """The panel under the lines, as it is now."""
        parts: list = []
        if self.vms:
            table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
            table.add_column("VM")
            table.add_column("state")
            table.add_column("")
            for vm, state in self.vms.items():
                steps = VM_STATES.index(state) + 1 if state in VM_STATES else 0
                table.add_row(vm, Text(state, style=STATE_STYLE.get(state, "")),
                              f"{steps}/{len(VM_STATES)}")
            parts.append(table)
        if self.cells is not None:
            parts.append(_bar_row(f"verification: {self.cells.done} of {self.cells.total} "
                                  f"cells done", max(self.cells.total, 1), self.cells.done))
        if self.transfer is not None:
            t = self.transfer
            size = f"{t.done // 2**20} of {t.total // 2**20} MiB" if t.total \
                else f"{t.done // 2**20} MiB"
            parts.append(_bar_row(f"{t.what}: {size}", t.total or None, t.done))
        if self.step:
            parts.append(Text(f"… {self.step}", style="dim"))
        return Group(*parts)

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None

    def _ensure_live(self) -> Live:
        if self._live is None:
            # Redrawn on each line or event: no refresh thread. Transient: at the end the
            # panel goes and the lines stay, as in a log. A command's output on stdout
            # is printed above the panel when stdout is this terminal too; piped, it is left
            # alone (`vnet verify --format json > file` gets only the JSON).
            self._live = Live(self.render(), console=self.console, auto_refresh=False,
                              transient=True, redirect_stdout=sys.stdout.isatty(),
                              redirect_stderr=False)
            self._live.start()
            atexit.register(self.close)
        return self._live

    def _refresh(self) -> None:
        if self._live is not None:
            self._live.update(self.render(), refresh=True)


def _bar_row(label: str, total: float | None, done: float) -> Table:
    """A label and its bar on one line (a bare ProgressBar ends without a newline)."""
    row = Table.grid(padding=(0, 1))
    row.add_row(Text(label), ProgressBar(total=total, completed=done, width=40))
    return row


_shared: LiveProgress | None = None


def shared_display() -> LiveProgress:
    """One display per process: a terminal has room for one live panel (rich allows one
    active Live), and a command may ask for a printer more than once."""
    global _shared
    if _shared is None:
        _shared = LiveProgress()
    return _shared
