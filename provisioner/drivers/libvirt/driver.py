"""The libvirt backend behind the driver contract: any libvirt URI, or a vnet sandbox's private
libvirtd. The work is in lifecycle.py (up, status, destroy, gc, list) and connection.py."""
from __future__ import annotations

from ...host.state import Target
from ...lab.model import Backend, Lab
from ...progress import Progress
from ..base import Driver
from . import lifecycle


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
