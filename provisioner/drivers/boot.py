"""One boot-and-wait loop for every backend. The guest says on its serial console when it is up
(VNET-READY) and which address each NIC got (VNET-ADDR <mac> <ip/prefix> <dev>, printed by
guest/files/rootfs/usr/lib/vnet/init); each backend adds what its hypervisor knows (leases,
guest properties) in a Boot subclass, and explains a VM that does not come up in its triage."""
from __future__ import annotations

import re
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from ..errors import HypervisorError
from ..progress import Progress, VmState, emit

ADDR_RE = re.compile(r"VNET-ADDR (\S+) (\S+)")
READY_RE = re.compile(r"^VNET-READY\b", re.M)
CONSOLE_LINES = 12           # console lines a triage shows


def serial_log(directory: Path | str, vm: str) -> Path:
    """Where a VM's serial console is written: the lab's state dir, on both backends."""
    return Path(directory) / f"{vm}.serial.log"


def read_console(path: Path) -> str:
    """The console so far; "" while the hypervisor has not created the file yet."""
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def console_addresses(text: str) -> dict[str, str]:
    """{mac (lower case): ip/prefix} as the guest printed them."""
    return {mac.lower(): ip for mac, ip in ADDR_RE.findall(text)}


def console_tail(path: Path, empty: str) -> list[str]:
    """The last console lines, quoted for a triage; `empty` when there are none."""
    return text_tail(read_console(path), empty)


def text_tail(text: str, empty: str) -> list[str]:
    """console_tail of console text already read (a remote host's, read over SSH)."""
    lines = text.splitlines()
    return [f"  | {line}" for line in lines[-CONSOLE_LINES:]] or [f"  {empty}"]


class Boot(ABC):
    """What one backend knows about its booting VMs (see wait)."""
    poll = 0.1                   # seconds between rounds
    note_every = 5.0             # seconds between "waiting for ..." lines
    alive_first = False          # ask `alive` before `check` (when `check` is costly)

    def next_round(self) -> None:
        """Called before each round over the pending VMs (to ask the hypervisor once)."""

    @abstractmethod
    def check(self, vm: str) -> tuple[bool, Any]:
        """(ready, what was found) right now."""

    @abstractmethod
    def alive(self, vm: str) -> bool:
        """Whether the VM still runs (a stopped VM will never come up)."""

    @abstractmethod
    def triage(self, vm: str) -> str:
        """What a person needs when the VM does not come up."""

    @abstractmethod
    def ready_line(self, vm: str, found: Any) -> str:
        """The progress line for a VM that came up."""

    def state_of(self, vm: str, found: Any) -> str:
        """A pending VM's state for the live display: "address" once check found some
        address, else "booting"."""
        return "address" if isinstance(found, (list, dict)) and any(found) else "booting"

    def pending_names(self, pending: list[str]) -> str:
        return ", ".join(sorted(pending))

    def stopped(self, vm: str) -> HypervisorError:
        return HypervisorError(f"VM {vm} stopped while booting\n" + self.triage(vm))

    @abstractmethod
    def timed_out(self, pending: list[str], timeout: float) -> HypervisorError:
        """The error when the deadline passes with VMs still pending."""


def wait(boot: Boot, vms: list[str], progress: Progress, timeout: float,
         first_note_at: float = 0.0) -> dict[str, Any]:
    """Poll until every VM is ready; returns {vm: what check found}. A VM that stops, or the
    deadline, raises the backend's error with its triage."""
    pending = list(vms)
    found: dict[str, Any] = {}
    deadline = time.monotonic() + timeout
    last_note = first_note_at
    shown: dict[str, str] = {}

    def show(vm: str, state: str) -> None:       # a per-VM event for a live display
        if shown.get(vm) != state:
            shown[vm] = state
            emit(progress, VmState(vm, state))
    for vm in vms:
        show(vm, "defined")
    while pending:
        boot.next_round()
        for vm in list(pending):
            if boot.alive_first and not boot.alive(vm):
                raise boot.stopped(vm)
            ready, what = boot.check(vm)
            if ready:
                found[vm] = what
                pending.remove(vm)
                show(vm, "ready")
                progress(boot.ready_line(vm, what))
            elif not boot.alive_first and not boot.alive(vm):
                raise boot.stopped(vm)
            else:
                show(vm, boot.state_of(vm, what))
        if not pending:
            break
        now = time.monotonic()
        if now > deadline:
            raise boot.timed_out(pending, timeout)
        if now - last_note > boot.note_every:
            progress(f"waiting for {boot.pending_names(pending)} to boot and get addresses")
            last_note = now
        time.sleep(boot.poll)
    return found
