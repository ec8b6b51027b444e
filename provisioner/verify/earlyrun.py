"""Ansible's start overlapped with the boot (issue 15).

`vnet create` and `vnet up` verify right after the guests are ready. Starting ansible-playbook
costs the controller a second or more under load (Python, Ansible's imports, the inventory and
the playbook), so the run starts while the guests boot: its first task (playbooks/
action_plugins/vnet_gate.py, on the controller) waits there until verify hands it each guest's
cells, at the moment a run would otherwise have started. Nothing reaches a guest earlier, so
what a cell proves does not change; only the controller's start-up is hidden.

    progress = StartOnBoot(progress, lambda: ansible.start_early(lab, target, inventory))
    ... driver.up(lab, progress) ...        # the first VM state event starts it (ops/labs.py)
    run_guests() -> take(key) -> EarlyRun.hand_over(cells)                  # verify/ansible.py
    ansible.cancel_early(target, lab)       # whatever happened, no run is left waiting
"""
from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any, Callable

from ..host import procs
from ..host.labhelpers import EARLY_RUN_RECORD
from ..progress import Progress, emit
from ..progress_events import VmState

OWNER, RECORD = "vnet.pid", EARLY_RUN_RECORD.name   # in the gate: who started it, and the run
GATE_TIMEOUT = 900.0     # the longest boot (a cloud image under TCG, 600 s) and some margin
_RUNS: dict[str, "EarlyRun"] = {}
_LOCK = threading.Lock()


class EarlyRun:
    """One run (`run`: verify/ansible.py's ansible-playbook over the lab's guests), started now
    in a thread, its first task waiting for the files that hand_over writes into `gate`."""

    def __init__(self, gate: Path, run: Callable[[], dict]):
        self.gate = gate
        gate.mkdir(parents=True, exist_ok=True)
        for old in gate.iterdir():        # a file of an earlier run would open the gate
            old.unlink()
        # the gate gives up once this process is gone (a vnet killed while its guests boot)
        me = os.getpid()
        procs.write(gate / OWNER, procs.Record(me, procs.start_time(me),
                                               (procs.proc_argv(me) or ["python3"])[0]))
        self.run = run
        self.result: dict[str, dict] | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.result = self.run()
        except BaseException as exc:  # noqa: BLE001 - re-raised by hand_over, in verify
            self.error = exc

    def hand_over(self, cells: dict[str, dict[str, Any]]) -> dict[str, dict]:
        """Open the gate with each guest's cells; wait for the run's results ({vm: ...})."""
        for vm, data in cells.items():
            path = self.gate / f"{vm}.json"
            part = path.with_suffix(".part")
            part.write_text(json.dumps(data))
            os.replace(part, path)         # the gate sees a whole file or none
        self.thread.join()
        if self.error is not None:
            raise self.error
        return self.result or {}

    def call_off(self) -> None:
        (self.gate / "abort").touch()
        self.thread.join(timeout=60)


def pays(guest_cpus: int, host_cpus: int | None = None) -> bool:
    """Whether starting Ansible during the boot can hide anything: its start-up is CPU work,
    and a booting TCG guest keeps a host core busy per vCPU, so on a host with no core to spare
    the early start only moves that work into the boot (measured on 2 cores with 2 guests: the
    verify phase 0.45 s shorter, the address phase as much longer; benchmarks/README.md)."""
    return (host_cpus or os.cpu_count() or 1) > guest_cpus


def start(key: str, gate: Path, run: Callable[[], dict]) -> None:
    """Start the early run of `key` (one lab on one target), unless one is waiting already."""
    with _LOCK:
        if key not in _RUNS:
            _RUNS[key] = EarlyRun(gate, run)


def take(key: str) -> EarlyRun | None:
    """The early run of `key`, for verify to hand its cells to (None: start a run as before)."""
    with _LOCK:
        return _RUNS.pop(key, None)


def cancel(key: str) -> None:
    """Call off the early run of `key` if nobody took it (up failed, or verify never came)."""
    run = take(key)
    if run is not None:
        run.call_off()


class StartOnBoot:
    """A progress that passes every line and event on, and calls `start` at the first VM state
    event (the guests are defined and booting: the lab's record and SSH key exist). A failing
    start only means the run starts after the boot, as before; it is said, never raised."""

    def __init__(self, progress: Progress, start: Callable[[], None]):
        self.progress, self.start, self.started = progress, start, False

    def __call__(self, message: str) -> None:
        self.progress(message)

    def event(self, event) -> None:
        emit(self.progress, event)
        if isinstance(event, VmState) and not self.started:
            self.started = True
            try:
                self.start()
            except Exception as exc:  # noqa: BLE001 - the run then starts after the boot
                self.progress(f"Ansible starts after the boot ({exc})")
                return
            self.progress("Ansible starts while the guests boot")
