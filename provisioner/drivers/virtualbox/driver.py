"""The VirtualBox backend behind the driver contract: VMs and networks on this machine's
VirtualBox, through VBoxManage or the vboxapi bindings (api.py). The work is in lifecycle.py;
status, the list of labs and gc read VirtualBox's VMs by their vnet/lab and vnet/owner tags."""
from __future__ import annotations

import os
import shutil
from dataclasses import replace
from pathlib import Path

from ...errors import NotFound, Unsupported
from ...host import runner, state
from ...host.owner import owner_id
from ...host.state import Target
from ...lab.model import Backend, Impairment, Lab
from ...progress import Progress
from ...host.capture import CapturePoint, open_pcap
from ...host.safepath import child
from ..base import Driver, declare_impairment, lab_from_record
from . import api as vbox_api
from . import bandwidth
from . import lifecycle, objects, teardown


class VirtualBox(Driver):
    backend = Backend.VIRTUALBOX
    status_after_up = False      # up already printed every VM's addresses
    says_destroyed = True        # lifecycle.destroy reports "lab X destroyed" itself

    @classmethod
    def target_for(cls, sandbox: str | None, uri: str | None) -> Target:
        """VirtualBox runs on this machine: --sandbox and --uri name libvirt targets."""
        return lifecycle.TARGET

    @classmethod
    def available(cls) -> bool:
        return bool(os.environ.get(vbox_api.ENV_BINARY)
                    or any(runner.which(name) for name in vbox_api.BINARIES))

    def up(self, lab: Lab, progress: Progress, wait: bool = True) -> dict:
        record = lifecycle.up(lab, progress=progress, wait=wait)
        applied = {vm.name: {nic.mac: _applied(nic.impair, k) for k, nic in enumerate(vm.nics)
                             if nic.impair is not None} for vm in lab.vms}
        if any(applied.values()):      # the plan's bandwidth groups, for the cells' detail
            record["impair"] = {vm: nics for vm, nics in applied.items() if nics}
            state.save(self.target, lab.name, record)
        return record

    def inventory(self, lab: Lab):
        return lifecycle.inventory(lab)

    def status(self, lab_name: str) -> dict:
        record = self.record(lab_name)
        be = vbox_api.backend()
        if record is None:
            if lab_name in self._tagged(be):
                raise NotFound(f"lab {lab_name!r} has VMs on VirtualBox but no state",
                               hint="vnet gc removes them")
            raise NotFound(f"no lab named {lab_name!r} on this target",
                           hint="vnet list shows the labs")
        lab = lab_from_record(record)
        running = objects.running_vms(be)
        found = record.get("addresses", {})
        vms = []
        for vm in lab.vms:
            seen = {entry.get("network"): entry.get("ip") for entry in found.get(vm.name, [])}
            vms.append({"name": vm.name,
                        "state": "running" if record["vms"].get(vm.name) in running else "shutoff",
                        "nics": [{"network": n.network, "model": n.model, "mac": n.mac,
                                  "addresses": [seen[n.network]] if seen.get(n.network) else []}
                                 for n in vm.nics]})
        return {"lab": lab_name, "vms": vms}

    def destroy(self, lab_name: str, progress: Progress) -> list[str]:
        return lifecycle.destroy(lab_name, progress)

    def labs(self) -> list[dict]:
        be = vbox_api.backend()
        ours, unowned = self._tagged(be), self._tagged(be, owner=None)
        names = sorted(set(ours) | set(state.labs_of(self.target)))

        def networks(name: str) -> int:
            try:
                record = state.read(self.target, name)
            except state.CorruptState:
                return 0
            return sum(1 for kind, _ in (record or {}).get("created", []) if kind != "vm")
        labs = [{"lab": n, "domains": len(ours.get(n, [])), "networks": networks(n),
                 "state": "ok" if n in ours and self._readable(n) else
                          ("orphaned (vnet gc)" if n in ours else "stale state")}
                for n in names]
        return labs + [{"lab": n, "domains": len(vms), "networks": 0,
                        "state": "no owner id (older vnet; gc leaves it alone)"}
                       for n, vms in sorted(unowned.items())]

    def gc(self, progress: Progress) -> list[str]:
        be = vbox_api.backend(progress)
        known = set(state.labs_of(self.target))
        removed: list[str] = []
        for lab in sorted(set(self._tagged(be)) - known):
            with state.lab_lock(self.target, lab, progress):
                if state.read(self.target, lab) is not None:
                    continue             # an `up` of it ran while we waited: not an orphan
                removed += teardown.destroy_held(lab, progress, be)
        return removed

    def set_link(self, lab_name: str, vm: str, nic: int, up: bool) -> None:
        """Cut or restore the cable of NIC `nic` (its index in the lab file) of a running VM:
        `VBoxManage controlvm VM setlinkstateN on|off` (the VirtualBox manual, controlvm)."""
        record, _ = self.link_nic(lab_name, vm, nic)
        vbox_api.backend().run(("VBoxManage", "controlvm", record["vms"][vm],
                                f"setlinkstate{nic + 1}", "on" if up else "off"))

    def capture_point(self, lab_name: str, vm: str, nic: int) -> CapturePoint:
        """VirtualBox has no host-side tap vnet could open for every attachment (an internal
        network has none at all), but it writes a NIC's frames to a pcap itself: nic_trace."""
        self.link_nic(lab_name, vm, nic)
        return CapturePoint(f"{vm}:{nic} (VirtualBox's trace of NIC {nic + 1})", None)

    def nic_trace(self, lab_name: str, vm: str, nic: int, pcap: str, on: bool) -> None:
        """Start or stop VirtualBox's own capture of a running VM's NIC into `pcap`. VirtualBox
        (as root) opens the file it is given, following a symlink planted under that name:
        it writes into the lab's own directory instead, and stopping copies the trace to
        `pcap` through capture.open_pcap (no symlink, no file with other hard links)."""
        record, _ = self.link_nic(lab_name, vm, nic)
        own = child(state.lab_dir(self.target, lab_name), f"trace-{vm}-nic{nic}.pcap")
        if on:
            own.unlink(missing_ok=True)
        be = vbox_api.backend()
        for argv in nic_trace_argv(record["vms"][vm], nic, str(own), on):
            be.run(argv)
        if not on:
            _deliver(own, pcap)

    def set_impairment(self, lab_name: str, vm: str, nic: int,
                       impair: Impairment | None) -> dict:
        """A new limit for the NIC's bandwidth group while the VM runs (`bandwidthctl set`;
        0 turns it off). The group exists only where the lab file declared a rate: a NIC
        joins a group only while its VM is powered off (modifyvm)."""
        record, found = self.link_nic(lab_name, vm, nic)
        if impair is not None:
            bandwidth.check_impairment(lab_from_record(record).vm(vm), nic,
                                       replace(found, impair=impair))
        if found.impair is None or not found.impair.rate_mbit:
            raise Unsupported(f"vms.{vm}.nics[{nic}].impair.rate_mbit: this NIC has no "
                              "bandwidth group (VirtualBox attaches one only to a powered-off "
                              "VM); declare impair.rate_mbit for it in the lab file")
        vbox_api.backend().run(bandwidth.set_argv(record["vms"][vm], nic,
                                                  impair.rate_mbit if impair else None))
        declare_impairment(record, vm, nic, impair)
        entry = _applied(impair, nic)
        record.setdefault("impair", {}).setdefault(vm, {})[found.mac] = entry
        state.save(self.target, lab_name, record)
        return entry

    def _tagged(self, be, owner: str | None | bool = True) -> dict[str, list[str]]:
        """lab -> its VMs: this state root's (owner=True), or an older vnet's (owner=None)."""
        tags = objects.vm_tags(be)
        owners = objects.vm_owners(be, tags)
        want = owner_id() if owner is True else owner
        labs: dict[str, list[str]] = {}
        for vm, tag in tags.items():
            if tag is not None and owners.get(vm) == want:
                labs.setdefault(tag, []).append(vm)
        return labs

    def _readable(self, name: str) -> bool:
        try:
            return state.read(self.target, name) is not None
        except state.CorruptState:
            return False


def _deliver(own: Path, pcap: str) -> None:
    """The finished trace, copied into the file the user named, then removed."""
    fd, _ = open_pcap(Path(pcap))
    try:
        with open(fd, "wb", closefd=False) as out, open(own, "rb") as trace:
            shutil.copyfileobj(trace, out)
    finally:
        os.close(fd)
    own.unlink(missing_ok=True)


def nic_trace_argv(vbox_vm: str, nic: int, pcap: str, on: bool) -> list[tuple[str, ...]]:
    """`VBoxManage controlvm VM nictracefileN FILE` then `nictraceN on` (off to stop): the
    running-VM form of modifyvm's --nictraceN/--nictracefileN (the VirtualBox manual,
    "VBoxManage controlvm" and "Network tracing"); modifyvm would need the VM powered off."""
    slot = nic + 1
    if not on:
        return [("VBoxManage", "controlvm", vbox_vm, f"nictrace{slot}", "off")]
    return [("VBoxManage", "controlvm", vbox_vm, f"nictracefile{slot}", pcap),
            ("VBoxManage", "controlvm", vbox_vm, f"nictrace{slot}", "on")]


def _applied(impair: Impairment | None, k: int) -> dict:
    """What the record says was applied to NIC k: its bandwidth group, or nothing."""
    parts = {"rate_mbit": f"VirtualBox bandwidth group {bandwidth.bandwidth_group(k)} (what "
                          "the VM sends)"} if impair and impair.rate_mbit else {}
    return {"declared": impair.as_dict() if impair else {}, "parts": parts,
            "summary": "; ".join(f"{k} -> {v}" for k, v in parts.items()) or "nothing (cleared)"}
