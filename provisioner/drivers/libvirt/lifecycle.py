"""A lab's life on libvirt: up (image, key, accelerator, plan, apply, addresses), status,
destroy and gc. The CLI calls these; they raise VnetError and report progress."""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ...guest import cloudimages, seed
from ...host import forwarding, labhelpers, ssh, state, tunnelkeys
from .. import boot
from . import impair
from ...guest.cmdline import bond_nic
from ..base import lab_from_record
from .connection import LibvirtDriver
from . import ovsbridge
from ...host import controller
from ...lab import modes
from ...lab.naming import object_name
from .render import Context, ImageFiles, LibvirtRenderer
from ...errors import HypervisorError, NotFound, quote
from ...lab.model import Lab, is_name
from ...host.state import Target
from ...host.testpoints import pause_at
from ...progress import Progress, progress_printer  # noqa: F401  (callers use lifecycle.progress_printer)

ADDRESS_TIMEOUT = 120.0
CLOUD_ADDRESS_TIMEOUT = 600.0     # a whole distribution boots, cloud-init included (TCG: minutes)
ADDR_RE = boot.ADDR_RE


def target_for(sandbox_name: str | None, uri: str | None) -> Target:
    if sandbox_name:
        from ...host import sandbox

        sb = sandbox.load(sandbox_name)
        return Target(uri=uri or sb.uri, sandbox=sb.name, netns=sb.host_netns)
    return Target(uri=uri or "qemu:///system")


def require_sandbox(target: Target) -> None:
    """Under the lab's lock (so the sandbox's shared lock): the sandbox is still up. An `up`
    that waited while its sandbox went down (a matrix worker outliving its temporary sandbox)
    stops here, before it writes a key or a record that nothing would remove."""
    if target.sandbox is not None:
        from ...host import sandbox

        sandbox.load(target.sandbox)


@dataclass
class Timings:
    phases: dict[str, float] = field(default_factory=dict)
    _t: float = field(default_factory=time.monotonic)

    def mark(self, phase: str) -> None:
        now = time.monotonic()
        self.phases[phase] = round(now - self._t, 2)
        self._t = now


# --- up -----------------------------------------------------------------------------------------

def up(lab: Lab, target: Target, progress: Progress, wait: bool = True, *,
       bring_up: Callable[[Lab, Target, LibvirtDriver, Progress, bool], dict] | None = None) -> dict:
    """Bring the lab up; returns its record (also saved in the lab's state dir). Holds the
    lab's lock: a `destroy` (or a second `up`) of the same lab waits for it. bring_up: the work
    done under the lock (the real one by default; the lock tests pass a fake)."""
    from ... import doctor

    doctor.preflight(lab, target)     # missing SR-IOV/vDPA hardware, taken subnets: refuse first
    driver = LibvirtDriver(target)
    driver.conn       # an unreachable URI fails here, before an image is built or state written
    with state.lab_lock(target, lab.name, progress):
        return (bring_up or _up)(lab, target, driver, progress, wait)


def _up(lab: Lab, target: Target, driver: LibvirtDriver, progress: Progress, wait: bool) -> dict:
    from ...guest import images
    from ...host import accel

    require_sandbox(target)
    timings = Timings()
    image = images.build_tiny(progress=progress)
    timings.mark("image")
    lab_dir = state.lab_dir(target, lab.name)
    _, pubkey = state.ssh_key(target, lab.name)
    tunnelkeys.ensure_secrets(lab_dir, lab.tunnels)     # the lab's own ipsec/wireguard keys
    chosen = accel.choose(image, progress)
    ctx = Context(image=ImageFiles(str(image.kernel), str(image.initrd), str(image.rootdisk),
                                   image.cmdline_base),
                  ssh_pubkey=pubkey, owner=driver.owner, accel=chosen, log_dir=str(lab_dir))
    plan = LibvirtRenderer(ctx).plan(lab)
    bases = fetch_cloud_images(plan, progress)    # a bad download stops before the record
    existing = driver.labs().get(lab.name)
    if not existing:   # a second `up` of a running lab owns its ports already
        forwarding.check_host_ports(target, lab.name, plan.extra["hostfwd"] + plan.extra["proxies"])
    record = {"lab": lab.name, "backend": "libvirt", "uri": target.uri, "sandbox": target.sandbox,
              "accel": chosen, "source": lab.source, "lab_data": lab.meta["raw"],
              "mgmt": plan.extra["mgmt"], "created": time.time(),
              "image": str(Path(image.kernel).parent)}    # `vnet image prune` keeps what labs use
    state.save(target, lab.name, record)     # before anything exists: a crash stays findable
    timings.mark("plan")
    prepare_cloud(plan, bases, progress)
    ovsbridge.create(lab, target, driver.owner, progress)   # before libvirt names them
    try:     # a failure from here on stops the lab's helpers: none outlives a failed `up`
        # a learning controller answers the table-miss before the first guest boots
        controller.start(lab, target, lab_dir, ovsbridge.for_target(target), progress)
        started = driver.apply(plan, progress)
        forwarding.add_hostfwds(driver, plan.extra["hostfwd"])
        forwarding.start_proxy(target, lab_dir, plan.extra["proxies"])
        timings.mark("define")
        if wait:
            wait_for_addresses(lab, target, driver, lab_dir, progress,
                               timeout=CLOUD_ADDRESS_TIMEOUT if plan.extra["cloud"]
                               else ADDRESS_TIMEOUT, boot_only=bool(started))
            timings.mark("address")
            impair.Applier(lab, target, driver, record).apply_all(progress)
        elif any(nic.impair for vm in lab.vms for nic in vm.nics):
            progress("not waiting for the guests: their NICs' impairments are not applied "
                     "(run `vnet up` again, or `vnet impair`, once they are up)")
        record["timings"] = timings.phases
        state.save(target, lab.name, record)
    except BaseException:
        labhelpers.stop_all(lab_dir, progress)
        raise
    return record


def fetch_cloud_images(plan, progress: Progress) -> dict[str, Path]:
    """The verified base image of every cloud-image VM of the plan (downloaded once, cached)."""
    return {vm: cloudimages.fetch(c["image"], progress) for vm, c in plan.extra["cloud"].items()}


def prepare_cloud(plan, bases: dict[str, Path], progress: Progress) -> None:
    """Each cloud-image VM's overlay (kept when it exists: it is the VM's disk) and seed ISO,
    in the lab's state dir, where the domain XML expects them; `destroy` removes that dir."""
    for vm, c in plan.extra["cloud"].items():
        cloudimages.overlay(bases[vm], Path(c["overlay"]))
        seed.build(c["seed"], c["seed_iso"])
        progress(f"{vm}: overlay on {c['image'].name} and cloud-init seed ready")


# --- addresses ----------------------------------------------------------------------------------

def serial_log(lab_dir: Path, vm: str) -> Path:
    return boot.serial_log(lab_dir, vm)


def guest_report(lab_dir: Path, vm: str) -> tuple[bool, dict[str, str]]:
    """(ready, {mac: ip/prefix}) as the guest printed them on its serial console."""
    text = boot.read_console(serial_log(lab_dir, vm))
    return "VNET-READY" in text, boot.console_addresses(text)


class LibvirtBoot(boot.Boot):
    """Ready when the console says VNET-READY and every NIC vnet can know (a static address, or
    DHCP) has its VNET-ADDR line."""

    def __init__(self, lab: Lab, driver: LibvirtDriver, lab_dir: Path):
        self.lab, self.driver, self.lab_dir = lab, driver, lab_dir

    def console(self, vm: str) -> str:
        """The VM's serial console so far (a remote host's: drivers/libvirt/remotehosts.py)."""
        return boot.read_console(serial_log(self.lab_dir, vm))

    def check(self, vm: str) -> tuple[bool, list[str]]:
        text = self.console(vm)
        ready, addrs = "VNET-READY" in text, boot.console_addresses(text)
        spec = self.lab.vm(vm)
        # a bond's members: only its first (the bond's MAC) gets an address (guest/cmdline.py)
        wanted = [n.mac for n in map(lambda nic: bond_nic(spec, nic), spec.nics)
                  if n is not None and (n.ip is not None or self.lab.network(n.network).dhcp)]
        return ready and all(mac in addrs for mac in wanted), [addrs.get(m) for m in wanted]

    def alive(self, vm: str) -> bool:
        return self.driver.domain_state(object_name(self.lab.name, vm)) in ("running", "paused")

    def triage(self, vm: str) -> str:
        return triage(self.lab, self.driver, self.lab_dir, vm, self.console(vm))

    def ready_line(self, vm: str, found: list[str]) -> str:
        return f"{vm} ready: " + ", ".join(found)

    def timed_out(self, pending: list[str], timeout: float) -> HypervisorError:
        return HypervisorError(f"VM(s) {', '.join(sorted(pending))} got no address within "
                               f"{timeout:.0f}s\n" + self.triage(sorted(pending)[0]),
                               hint=f"vnet destroy {self.lab.name} removes the lab")


def wait_for_addresses(lab: Lab, target: Target, driver: LibvirtDriver, lab_dir: Path,
                       progress: Progress, timeout: float = ADDRESS_TIMEOUT,
                       boot_only: bool = True) -> None:
    """Wait until every VM is SSH-ready and every NIC that vnet can know has its address."""
    pause_at("address")                         # a test may kill `vnet up` here
    boot.wait(LibvirtBoot(lab, driver, lab_dir), [vm.name for vm in lab.vms], progress, timeout)


def triage(lab: Lab, driver: LibvirtDriver, lab_dir: Path | str, vm: str,
           text: str | None = None) -> str:
    """What a person needs when an address does not come: console (`text`, else read from
    lab_dir), leases, DHCP attempts."""
    lines = [f"--- triage for {vm} ---"]
    text = boot.read_console(serial_log(lab_dir, vm)) if text is None else text
    console = text.splitlines()
    lines.append(f"last console lines ({serial_log(lab_dir, vm)}):")
    lines += boot.text_tail(text, "(empty: the kernel printed nothing)")
    for nic in lab.vm(vm).nics:
        net = lab.network(nic.network)
        if net.dhcp and not modes.MODES[net.mode].per_vm_nat:
            leases = driver.leases(object_name(lab.name, net.name))
            lines.append(f"lease table of {net.name}: " + (", ".join(
                f"{l['mac']}={l['ipaddr']}" for l in leases) or "empty"))
            sent = any("udhcpc" in line and "sending discover" in line for line in console)
            lines.append(f"{nic.mac}: the guest {'sent' if sent else 'did not send'} DHCP "
                         "discover (as seen on its console)")
    return "\n".join(lines)


# --- status / destroy / gc / list ---------------------------------------------------------------

def status(lab_name: str, target: Target) -> dict:
    record = state.read(target, lab_name)
    driver = LibvirtDriver(target)
    if record is None:
        if lab_name in driver.labs():
            raise NotFound(f"lab {lab_name!r} has objects on {target.uri} but no state",
                           hint="vnet gc removes them")
        raise NotFound(f"no lab named {lab_name!r} on this target",
                       hint="vnet list shows the labs")
    lab = lab_from_record(record)
    lab_dir = state.lab_dir(target, lab_name)
    vms = []
    for vm in lab.vms:
        _, reported = guest_report(lab_dir, vm.name)
        vms.append({"name": vm.name, "state": driver.domain_state(object_name(lab_name, vm.name)),
                    "nics": [{"network": n.network, "model": n.model, "mac": n.mac,
                              "addresses": _addresses(n, reported)} for n in vm.nics]})
    return {"lab": lab_name, "vms": vms}


def _addresses(nic, reported: dict[str, str]) -> list[str]:
    seen = reported.get(nic.mac)
    if seen:
        return [seen.split("/")[0]]
    return []


def destroy(lab_name: str, target: Target, progress: Progress, *,
            tear_down: Callable[[str, Target, Progress], list[str]] | None = None) -> list[str]:
    """Remove this owner's objects of the lab, its helpers and its state; waits for a running
    `up` of the same lab to finish first. tear_down: the work done under the lock (the real one
    by default; the lock tests pass a fake)."""
    with state.lab_lock(target, lab_name, progress):
        return (tear_down or _destroy)(lab_name, target, progress)


def _destroy(lab_name: str, target: Target, progress: Progress) -> list[str]:
    lab_dir = state.lab_dir(target, lab_name)
    labhelpers.stop_all(lab_dir, progress)
    driver = LibvirtDriver(target)
    removed = driver.destroy(lab_name, progress)
    removed += ovsbridge.remove(lab_name, target, driver.owner, progress,
                                needed=_had_ovs(target, lab_name))
    ssh.close_masters(ssh.control_dir(target, lab_name))
    has_record = (lab_dir / state.RECORD).exists()
    unowned = driver.unowned().get(lab_name)
    if unowned and has_record:
        # Most likely this state root's own lab from before owner ids; keep its record so
        # nothing is lost, and let a person decide.
        raise HypervisorError(f"lab {lab_name}: {_names(unowned)} carry no owner id (an older "
                              "vnet made them), so vnet leaves them alone and keeps the lab's "
                              "state", hint="if they are yours, remove them with `virsh "
                                            "destroy` and `virsh undefine` (or net-*), then "
                                            f"`vnet destroy {lab_name}`")
    if unowned:
        progress(_left_alone(lab_name, unowned))
    if not removed and not lab_dir.exists():
        raise NotFound(f"no lab named {lab_name!r} on this target", hint="vnet list shows the labs")
    state.remove(target, lab_name)
    return removed


def _had_ovs(target: Target, lab_name: str) -> bool:
    """The lab's record says it has openvswitch networks (a corrupt record: as before, no)."""
    try:
        return ovsbridge.recorded_ovs(state.read(target, lab_name))
    except state.CorruptState:
        return False


def tagged_labs(driver: LibvirtDriver, progress: Progress) -> dict[str, dict[str, list[str]]]:
    """The driver's labs by tag name, without tags that are not valid lab names: a name read
    back from libvirt metadata never reaches a path or an API unchecked."""
    labs = driver.labs()
    for bad in sorted((name for name in labs if not is_name(name)), key=repr):
        progress(f"warning: ignoring libvirt objects tagged with the invalid lab name "
                 f"{quote(bad)}: {', '.join(sorted(sum(labs[bad].values(), [])))}")
    return {name: objects for name, objects in labs.items() if is_name(name)}


def gc(target: Target, progress: Progress) -> list[str]:
    """Remove objects tagged by vnet whose lab state is gone (a crash, a deleted state dir)."""
    driver = LibvirtDriver(target)
    known = set(state.labs_of(target))
    removed = []
    ovs_labs = {n for n in ovsbridge.orphan_labs(target, driver.owner) if is_name(n)}
    for lab in sorted((set(tagged_labs(driver, progress)) | ovs_labs) - known):
        with state.lab_lock(target, lab, progress):
            elsewhere = state.targets_recording(lab)
            if target.key in elsewhere:
                continue                 # an `up` of it ran while we waited: not an orphan
            if elsewhere:                # the same URI spelled another way, or a sandbox
                progress(f"left alone: lab {lab} has a record under {', '.join(elsewhere)} "
                         f"(another spelling of the URI?); `vnet destroy {lab}` with that "
                         "--uri or --sandbox removes it")
                continue
            labhelpers.stop_all(state.lab_dir(target, lab), progress)
            removed += driver.destroy(lab, progress)
            removed += ovsbridge.remove(lab, target, driver.owner, progress)
            ssh.close_masters(ssh.control_dir(target, lab))
            state.remove(target, lab)
    for lab, objects in sorted(driver.unowned().items()):
        progress(_left_alone(lab, objects))
    return removed


def _names(objects: dict[str, list[str]]) -> str:
    return ", ".join(objects["domain"] + objects["network"])


def _left_alone(lab: str, objects: dict[str, list[str]]) -> str:
    """Objects an older vnet tagged without an owner id: nobody can tell whose they are."""
    name = lab if is_name(lab) else quote(lab)
    return (f"left alone: {_names(objects)} (lab {name}, tagged without an owner id by an older "
            "vnet); remove them with virsh if they are yours")


def list_labs(target: Target) -> list[dict]:
    driver = LibvirtDriver(target)
    running = tagged_labs(driver, lambda message: print(f"vnet: {message}", file=sys.stderr))
    names = sorted(set(running) | set(state.labs_of(target)))

    def readable(n: str) -> bool:
        try:
            return state.read(target, n) is not None
        except state.CorruptState:
            return False
    labs = [{"lab": n, "domains": len(running.get(n, {}).get("domain", [])),
             "networks": len(running.get(n, {}).get("network", [])),
             "state": "ok" if n in running and readable(n) else
                      ("orphaned (vnet gc)" if n in running else "stale state")}
            for n in names]
    return labs + [{"lab": n, "domains": len(o["domain"]), "networks": len(o["network"]),
                    "state": "no owner id (older vnet; gc leaves it alone)"}
                   for n, o in sorted(driver.unowned().items())]
