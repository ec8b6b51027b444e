"""The libvirt backend behind the driver contract: any libvirt URI, or a vnet sandbox's private
libvirtd. The work is in lifecycle.py (up, status, destroy, gc, list) and connection.py."""
from __future__ import annotations

from ...host import state
from ...host.capture import CapturePoint
from ...host.state import Target
from ...lab.model import Backend, Impairment, Lab
from ...progress import Progress
from ...lab.naming import object_name
from ..base import Driver, declare_impairment, lab_from_record
from . import capture, impair as impairs, lifecycle, multihost, vmhost
from .connection import LibvirtDriver


class Libvirt(Driver):
    backend = Backend.LIBVIRT

    @classmethod
    def target_for(cls, sandbox: str | None, uri: str | None) -> Target:
        return lifecycle.target_for(sandbox, uri)

    def up(self, lab: Lab, progress: Progress, wait: bool = True) -> dict:
        if lab.hosts:
            return multihost.up(lab, self.target, progress, wait=wait)
        return lifecycle.up(lab, self.target, progress, wait=wait)

    def status(self, lab_name: str) -> dict:
        if record := self._multihost_record(lab_name):
            return multihost.status(record, self.target)
        return lifecycle.status(lab_name, self.target)

    def destroy(self, lab_name: str, progress: Progress) -> list[str]:
        if record := self._multihost_record(lab_name):
            with state.lab_lock(self.target, lab_name, progress):
                return multihost.destroy(record, self.target, progress)
        return lifecycle.destroy(lab_name, self.target, progress)

    def _multihost_record(self, lab_name: str) -> dict | None:
        """The lab's record if it spans several hosts (multihost.py), else None."""
        try:
            record = state.read(self.target, lab_name)
        except state.CorruptState:
            return None                 # lifecycle says what is wrong with it
        return record if record and record.get("hosts") else None

    def labs(self) -> list[dict]:
        return lifecycle.list_labs(self.target)

    def gc(self, progress: Progress) -> list[str]:
        return lifecycle.gc(self.target, progress) + multihost.gc_hosts(self.target, progress)

    def set_link(self, lab_name: str, vm: str, nic: int, up: bool) -> None:
        """Cut or restore the link of NIC `nic` (its index in the lab file) of a running VM."""
        record, found = self.link_nic(lab_name, vm, nic)
        where = vmhost.vm_target(record, lab_from_record(record), vm, self.target)
        LibvirtDriver(where).set_link(object_name(lab_name, vm), found.mac, up)

    def capture_point(self, lab_name: str, vm: str, nic: int) -> CapturePoint:
        record, found = self.link_nic(lab_name, vm, nic)
        lab = lab_from_record(record)
        where = vmhost.capture_target(record, lab, vm, self.target)  # the tap: on the VM's host
        tap = LibvirtDriver(where).interface_target(object_name(lab_name, vm), found.mac)
        return capture.nic_point(lab, where, vm, nic, tap)

    def network_capture_point(self, lab_name: str, network: str) -> CapturePoint:
        lab = self.lab(lab_name)
        vmhost.stretched_refusal(lab, network)
        where = vmhost.network_target(self.record(lab_name) or {}, lab, network, self.target)
        return capture.network_point(lab, where, network)

    def lab(self, lab_name: str) -> Lab:
        from ...errors import NotFound

        record = self.record(lab_name)
        if record is None:
            raise NotFound(f"no lab named {lab_name!r} on this target",
                           hint="vnet list shows the labs")
        return lab_from_record(record)

    def set_impairment(self, lab_name: str, vm: str, nic: int,
                       impair: Impairment | None) -> dict:
        """tc on the NIC's tap and/or netem in the guest (drivers/libvirt/impair.py)."""
        record, _ = self.link_nic(lab_name, vm, nic)
        declare_impairment(record, vm, nic, impair)
        lab = lab_from_record(record)
        if impair is not None:         # before anything changes: exit 2 (a clear needs no tap)
            impairs.check(lab)
        return impairs.Applier(lab, self.target, LibvirtDriver(self.target), record) \
            .apply(vm, lab.vm(vm).nics[nic], impair)
