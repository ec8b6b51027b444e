"""The driver contract and a lazy registry: one Driver subclass per backend, found by backend
name, imported only when used (so an optional backend's dependencies stay optional).

Reading order: lab/model.py -> this file -> drivers/libvirt/driver.py -> verify/checks.py.
Adding a backend is one subpackage with render.py (the pure planner) and driver.py (a Driver),
plus one line in each registry below."""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from abc import ABC, abstractmethod
from typing import Any, ClassVar, cast, TypedDict

from ..errors import LabFileError, Unsupported
from ..host import state
from ..host.capture import CapturePoint
from ..host.sandbox import lab_defaults
from ..host.state import LabRecord, Target
from ..lab import loader
from ..lab.model import Backend, Impairment, Lab, Nic
from ..progress import Progress


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
    # The backend's own hand-off from plan to apply: LibvirtExtra or VBoxExtra below.
    extra: Any = field(default_factory=dict)


class LibvirtExtra(TypedDict):
    """What a libvirt plan hands to its lifecycle besides the XML documents."""
    cloud: dict[str, dict]        # VM -> its cloud image, overlay and seed
    hostfwd: list[dict]           # nat: QEMU hostfwd rules
    proxies: list[dict]           # natnetwork: vnet's port proxy rules
    mgmt: dict[str, str]          # VM -> management address
    mgmt_subnet: str


class VBoxExtra(TypedDict):
    """What a VirtualBox plan hands to its lifecycle besides the VBoxManage argv lists."""
    teardown: list[tuple[str, ...]]   # argv lists that remove what the plan creates
    tag: dict[str, str]           # extradata keys and values every VM carries
    captures: dict[int, str]      # step index -> the token its output binds (host-only ifs)
    hostonlyifs: dict[str, dict]  # network -> {token, ip, netmask}
    mgmt: dict[str, str]          # VM -> management address
    mgmt_subnet: str
    mgmt_host_ip: str
    vms: dict[str, str]           # VM -> VirtualBox VM name
    boot: dict[str, dict]         # VM -> its boot ISO and kernel command line
    version: str


class Driver(ABC):
    """One backend's labs on one target. `plan` is pure; the other methods act on the target.
    The ops layer (provisioner/ops/labs.py) is the only caller; it never asks which backend."""
    backend: ClassVar[Backend]
    status_after_up: ClassVar[bool] = True     # `up --no-verify` prints `status` afterwards
    says_destroyed: ClassVar[bool] = False     # destroy itself reports "lab X destroyed"

    def __init__(self, target: Target):
        self.target = target

    @classmethod
    @abstractmethod
    def target_for(cls, sandbox: str | None, uri: str | None) -> Target:
        """Where this backend's labs live for --sandbox/--uri (None, None: this machine)."""

    @classmethod
    def available(cls) -> bool:
        """Whether this backend can be asked here at all (`list` and `gc` skip it if not)."""
        return True

    def plan(self, lab: Lab) -> Plan:
        return renderer(self.backend)().plan(lab)

    @abstractmethod
    def up(self, lab: Lab, progress: Progress, wait: bool = True) -> dict:
        """Create (or complete) the lab and wait for its addresses; returns its record."""

    def inventory(self, lab: Lab):
        """What Ansible needs to reach each guest (verify.run.Inventory); None: the verifier
        derives it from the target (libvirt's management network)."""
        return None

    @abstractmethod
    def status(self, lab_name: str) -> dict:
        """{"lab": name, "vms": [{"name", "state", "nics": [{network, model, mac, addresses}]}]}"""

    @abstractmethod
    def destroy(self, lab_name: str, progress: Progress) -> list[str]:
        """Remove what this state root made for the lab; returns what was removed."""

    @abstractmethod
    def labs(self) -> list[dict]:
        """[{"lab", "domains", "networks", "state"}] for every lab of this target."""

    @abstractmethod
    def gc(self, progress: Progress) -> list[str]:
        """Remove objects this state root tagged whose lab record is gone."""

    def set_link(self, lab_name: str, vm: str, nic: int, up: bool) -> None:
        """Bring one NIC's link up or down (the link/tunnel issue builds on this)."""
        raise Unsupported(f"setting a NIC's link is not supported on {self.backend.value} yet")

    def capture_point(self, lab_name: str, vm: str, nic: int) -> CapturePoint:
        """Where NIC `nic` (its index in the lab file) of a running VM can be captured on the
        host side (`vnet capture`, issue 18); Unsupported, with why and what to use instead,
        where there is no such place."""
        raise Unsupported(f"capturing a NIC is not supported on {self.backend.value}")

    def network_capture_point(self, lab_name: str, network: str) -> CapturePoint:
        """Where every frame of a lab network passes on the host side (its bridge): the
        encapsulation cell's underlay (issue 17)."""
        raise Unsupported(f"capturing a network is not supported on {self.backend.value}")

    def nic_trace(self, lab_name: str, vm: str, nic: int, pcap: str, on: bool) -> None:
        """For a CapturePoint without interface: the hypervisor writes the pcap itself."""
        raise Unsupported(f"the hypervisor's own NIC trace is not supported on "
                          f"{self.backend.value}")

    def set_impairment(self, lab_name: str, vm: str, nic: int,
                       impair: Impairment | None) -> dict:
        """Change the impairment of NIC `nic` (its index in the lab file) of a running VM, or
        remove it (None). The lab record's declaration changes with it, so `verify` measures
        the new one. Returns where each part was applied ({"parts", "summary"})."""
        raise Unsupported(f"changing a NIC's impairment is not supported on "
                          f"{self.backend.value}")

    def record(self, lab_name: str) -> dict | None:
        return state.read(self.target, lab_name)

    def link_nic(self, lab_name: str, vm: str, nic: int) -> tuple[dict, Nic]:
        """(the lab's record, the NIC) that set_link acts on; LabFileError when there is none."""
        record = self.record(lab_name)
        vms = {v.name: v for v in lab_from_record(cast(LabRecord, record)).vms} if record else {}
        if vm not in vms or not 0 <= nic < len(vms[vm].nics):
            raise LabFileError(f"vms.{vm}.nics[{nic}]", f"lab {lab_name} has no such NIC; VMs: "
                               f"{', '.join(vms) or 'none (no such lab)'}")
        assert record is not None            # a VM was found in it
        return record, vms[vm].nics[nic]


def declare_impairment(record: dict, vm: str, nic: int, impair: Impairment | None) -> None:
    """Write a NIC's impairment into the record's lab data (the lab file's data, which the lab
    is resolved from again): what `verify` will measure against."""
    spec = next(v for v in record["lab_data"]["vms"] if v.get("name") == vm)["nics"][nic]
    spec.pop("impair", None)
    if impair is not None:
        spec["impair"] = impair.as_dict()


def lab_from_record(record: LabRecord) -> Lab:
    """The Lab a record was made from (its lab file's data, resolved again)."""
    return loader.resolve(record["lab_data"], lab_defaults(record.get("sandbox")),
                          source=record.get("source"))


_DRIVERS: dict[Backend, str | type[Driver]] = {
    Backend.LIBVIRT: "provisioner.drivers.libvirt.driver:Libvirt",
    Backend.VIRTUALBOX: "provisioner.drivers.virtualbox.driver:VirtualBox",
}
_REGISTRY = {
    Backend.LIBVIRT: "provisioner.drivers.libvirt.render:LibvirtRenderer",
    Backend.VIRTUALBOX: "provisioner.drivers.virtualbox.render:VirtualBoxRenderer",
}


def _load(table: dict[Backend, Any], backend: Backend | str):
    try:
        target = table[Backend(backend)]
    except ValueError:
        raise Unsupported(f"unknown backend {backend!r}; valid backends: "
                          f"{', '.join(b.value for b in Backend)}") from None
    if not isinstance(target, str):          # a class given to register()
        return target
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def renderer(backend: Backend | str):
    """The pure planner class for a backend (no hypervisor library needed)."""
    return _load(_REGISTRY, backend)


def driver_class(backend: Backend | str) -> type[Driver]:
    """The Driver subclass for a backend, imported now."""
    return _load(_DRIVERS, backend)


def register(backend: Backend | str, driver: type[Driver] | str) -> type[Driver] | str:
    """Make `driver` (a Driver subclass, or "module:Class" imported when first used) the one
    for `backend`; returns the one it replaces, so a caller can put it back (a test registers
    a fake driver this way, and the ops layer and the matrix then drive it)."""
    backend = Backend(backend)
    previous = _DRIVERS[backend]
    _DRIVERS[backend] = driver
    return previous
