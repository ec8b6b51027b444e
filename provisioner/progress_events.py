"""The structured progress events (see progress.py): what a live display draws besides lines.
Their own module, so the display (progress_live.py) and progress.py both import them."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Union

VM_STATES = ("defined", "booting", "address", "ready")


@dataclass(frozen=True)
class VmState:
    """A VM's boot wait moved on: one of VM_STATES."""
    vm: str
    state: str


@dataclass(frozen=True)
class Cells:
    """Verification: `done` of `total` cells have their outcome."""
    done: int
    total: int


@dataclass(frozen=True)
class Transfer:
    """A download or an image build step with a size: `done` of `total` bytes (0: unknown)."""
    what: str
    done: int
    total: int = 0


Event = Union[VmState, Cells, Transfer]
