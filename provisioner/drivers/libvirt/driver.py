"""The libvirt backend behind the driver contract: any libvirt URI, or a vnet sandbox's private
libvirtd. The work is in lifecycle.py (up, status, destroy, gc, list) and connection.py."""
from __future__ import annotations

from ...host.state import Target
from ...lab.model import Backend, Lab
from ...progress import Progress
from ...errors import LabFileError
from ...lab.naming import object_name
from ..base import Driver, lab_from_record
from . import lifecycle
from .connection import LibvirtDriver


class Libvirt(Driver):
    backend = Backend.LIBVIRT

    @classmethod
    def target_for(cls, sandbox: str | None, uri: str | None) -> Target:
        return lifecycle.target_for(sandbox, uri)

    def up(self, lab: Lab, progress: Progress, wait: bool = True) -> dict:
        return lifecycle.up(lab, self.target, progress, wait=wait)

    def status(self, lab_name: str) -> dict:
        return lifecycle.status(lab_name, self.target)

    def destroy(self, lab_name: str, progress: Progress) -> list[str]:
        return lifecycle.destroy(lab_name, self.target, progress)

    def labs(self) -> list[dict]:
        return lifecycle.list_labs(self.target)

    def gc(self, progress: Progress) -> list[str]:
        return lifecycle.gc(self.target, progress)

    def set_link(self, lab_name: str, vm: str, nic: int, up: bool) -> None:
        """Cut or restore the link of NIC `nic` (its index in the lab file) of a running VM."""
        record = self.record(lab_name)
        lab = lab_from_record(record) if record else None
        vms = {v.name: v for v in lab.vms} if lab else {}
        if vm not in vms or not 0 <= nic < len(vms[vm].nics):
            raise LabFileError(f"vms.{vm}.nics[{nic}]", f"lab {lab_name} has no such NIC; VMs: "
                               f"{', '.join(vms) or 'none (no such lab)'}")
        LibvirtDriver(self.target).set_link(object_name(lab_name, vm), vms[vm].nics[nic].mac, up)

