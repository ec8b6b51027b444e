"""Backend-neutral operations on labs: the CLI calls these and never asks which backend a lab
is on. A lab's record names its backend, so `status`, `verify` and `destroy` find it by name;
`list` and `gc` cover every backend installed here.

    lab.yaml -> lab.loader -> Lab -> driver.plan -> driver.up -> verify.run -> verify.report
"""
from __future__ import annotations

from ..drivers.base import Driver, driver_class, lab_from_record
from ..errors import NotFound, VnetError
from ..host import state
from ..lab import lanshare
from ..lab.model import Backend, Lab
from ..progress import Progress


def driver(backend: Backend | str, sandbox: str | None = None, uri: str | None = None) -> Driver:
    """The driver for a backend on the target that --sandbox/--uri name."""
    cls = driver_class(backend)
    return cls(cls.target_for(sandbox, uri))


def find(lab_name: str, sandbox: str | None = None, uri: str | None = None,
         backend: Backend | str | None = None) -> Driver:
    """The driver of the lab's backend: the one given, else the one whose target holds the
    lab's record (libvirt first), else libvirt (whose destroy also finds record-less labs)."""
    if backend is not None:
        return driver(backend, sandbox, uri)
    for candidate in Backend:
        if candidate is not Backend.LIBVIRT and (sandbox or uri):
            break                    # a sandbox or URI names a libvirt target
        found = driver(candidate, sandbox, uri)
        try:
            record = found.record(lab_name)
        except state.CorruptState:
            return found         # its record is unreadable: its commands say so, destroy goes on
        if record is not None and record.get("backend", Backend.LIBVIRT.value) == candidate.value:
            return found
    return driver(Backend.LIBVIRT, sandbox, uri)


def drivers_here(sandbox: str | None = None, uri: str | None = None) -> list[Driver]:
    """A driver per backend on this target: libvirt always; the others only when no sandbox or
    URI is named and they are installed here."""
    return [driver(b, sandbox, uri) for b in Backend
            if b is Backend.LIBVIRT or (not sandbox and not uri and driver_class(b).available())]


def up(lab: Lab, backend: Backend | str, sandbox: str | None, uri: str | None,
       progress: Progress, wait: bool = True, verify_next: bool = False) -> tuple[Driver, dict]:
    """verify_next: verify() follows, so Ansible starts while the guests boot
    (verify/earlyrun.py); verify() takes that run, or calls it off."""
    from ..verify import earlyrun

    chosen = driver(backend, sandbox, uri)
    if not (wait and verify_next and earlyrun.pays(sum(vm.cpus for vm in lab.vms))):
        return chosen, up_on(chosen, lab, progress, wait=wait)
    from ..verify import ansible

    def start() -> None:
        ansible.start_early(lab.name, chosen.target, _inventory(chosen, lab))
    try:
        return chosen, up_on(chosen, lab, earlyrun.StartOnBoot(progress, start), wait=wait)
    except BaseException:
        ansible.cancel_early(chosen.target, lab.name)
        raise


def up_on(chosen: Driver, lab: Lab, progress: Progress, wait: bool = True) -> dict:
    """driver.up, after refusing a lab whose LAN addresses another lab here already uses."""
    others = {}
    for name in state.labs_of(chosen.target):
        try:
            record = chosen.record(name) if name != lab.name else None
            if record is not None:
                others[name] = lab_from_record(record)
        except VnetError:
            continue           # a lab whose record cannot be read: `vnet list` names it
    lanshare.conflicts(lab, others)
    return chosen.up(lab, progress, wait=wait)


def _inventory(chosen: Driver, lab: Lab):
    from ..verify import run as verifier

    return chosen.inventory(lab) or verifier.lab_inventory(lab, chosen.target)


def verify(chosen: Driver, lab: Lab, progress: Progress, timings: dict | None = None,
           pcap_dir=None) -> dict:
    """pcap_dir: where the encapsulation cells' pcaps go (beside the report; default: the
    lab's state directory)."""
    from ..verify import ansible
    from ..verify import run as verifier    # Ansible and the probes: only when verifying

    beside = {"pcap_dir": pcap_dir} if pcap_dir is not None else {}
    try:
        return verifier.verify(lab, chosen.target, progress, timings=timings,
                               inventory=chosen.inventory(lab), **beside)
    finally:
        ansible.cancel_early(chosen.target, lab.name)    # one that verify did not take


def lab_of(chosen: Driver, lab_name: str) -> Lab:
    record = chosen.record(lab_name)
    if record is None:
        raise NotFound(f"no lab named {lab_name!r} on this target", hint="vnet list shows the labs")
    return lab_from_record(record)


def list_labs(sandbox: str | None = None, uri: str | None = None) -> list[dict]:
    return [lab for d in drivers_here(sandbox, uri) for lab in d.labs()]


def gc(progress: Progress, sandbox: str | None = None, uri: str | None = None) -> list[str]:
    """Every backend's orphans here; of a sandbox that is down, the lab state it left."""
    from ..host import locks, sandbox as sandboxes

    if sandbox is not None and uri is None and sandboxes.clear_left_state(sandbox, progress):
        removed: list[str] = []
    else:
        here = drivers_here(sandbox, uri)
        removed = [obj for d in here for obj in d.gc(progress)]
        # `vnet verify --vagrant`'s files: only logs of past runs (Vagrant owns those VMs)
        state.forget_vagrant_runs(driver(Backend.LIBVIRT, sandbox, uri).target, progress,
                                  locked=True)
    locks.sweep()          # the lock files of labs and sandboxes that are gone
    return removed

