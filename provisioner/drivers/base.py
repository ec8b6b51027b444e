"""The driver interface and a lazy registry: optional backends import only when used."""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from ..errors import Unsupported
from ..lab.model import Backend, Lab


@dataclass(frozen=True)
class Document:
    kind: str         # "network" | "domain" | "command"
    name: str         # libvirt object name, or a label for a command
    text: str         # XML, or the shell-quoted command for people


@dataclass(frozen=True)
class Plan:
    """What a driver will do, computed without touching anything (shown by --dry-run)."""
    backend: Backend
    lab: Lab
    documents: tuple[Document, ...]
    commands: tuple[tuple[str, ...], ...] = ()     # argv lists (VirtualBox)
    extra: dict[str, Any] = field(default_factory=dict)


class Driver(Protocol):
    name: ClassVar[str]

    def plan(self, lab: Lab) -> Plan: ...
    def apply(self, plan: Plan) -> None: ...
    def destroy(self, lab_name: str) -> None: ...


_REGISTRY = {
    Backend.LIBVIRT: "provisioner.drivers.libvirt.render:LibvirtRenderer",
    Backend.VIRTUALBOX: "provisioner.drivers.virtualbox.render:VirtualBoxRenderer",
}


def renderer(backend: Backend | str):
    """The pure planner class for a backend (no hypervisor library needed)."""
    try:
        target = _REGISTRY[Backend(backend)]
    except ValueError:
        raise Unsupported(f"unknown backend {backend!r}; valid backends: "
                          f"{', '.join(b.value for b in Backend)}") from None
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)
