"""Run a lab's checks and compare them with the mode table.

Control path: Ansible reaches each guest over the lab's management network (an isolated
libvirt network, last NIC of every VM, no route beyond it). Every in-guest probe is bound to
the NIC under test with SO_BINDTODEVICE, and targets that network's addresses, so the
management network cannot carry a probe: an internal network's VM->host cell targets the
host's management address on purpose, and must fail. A VirtualBox lab has the same
control path on a lab-owned host-only interface (drivers/virtualbox/lifecycle.py, inventory),
and its expected values come from the VirtualBox rows of the mode table (Inventory.backend).

Three probe sources run at once: the guests (one Ansible run, one module call per guest), the
host namespace and the Internet namespace (vnet's own listeners answer there). ProbeSources
names what observes the cells: ansible.py (the guests), listeners.py, forwardcheck.py."""
from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from . import ansible as guest_ansible
from . import checks as checklib
from . import (declared, encapcells, flowstats, forwardcheck, impairment, latelook, linkcells,
               listeners, refusals, servedon, topology, tunnelcells)
from ..host import procs, sandbox, state
from .result import build as build_result
from . import hostcells
from ..lab.naming import mgmt_subnet_for
from ..errors import VnetError
from ..lab.model import Backend, Lab
from ..host.netns import run_in_netns
from ..resources import playbook_code
from ..host.state import Target
from ..host.testpoints import pause_at
from ..drivers.boot import read_console, serial_log
from ..progress import Cells, emit
# Kept importable from here for callers written before verify/ was split (`verifier.exit_code`).
from .listeners import listener_argv  # noqa: F401
from .presentation import (KIND_TITLES, exit_code, matrix_text,  # noqa: F401
                           summary_line, verdict_line, write_report)


def probe_module():
    """The probe code shared with the guests (playbooks/library/vnet_probe.py)."""
    return playbook_code("library", "vnet_probe")


@dataclass(frozen=True)
class Inventory:
    """How Ansible reaches each guest over its control path, and where a run keeps its files.
    vnet's own labs take it from the lab record (lab_inventory); a Vagrant project from
    `vagrant ssh-config` (provisioner/ops/vagrant.py)."""
    hosts: dict[str, dict]        # vm -> Ansible host vars: ansible_host, ansible_user, ...
    mgmt_host_ip: str             # the host's address on the control network: no probe may use it
    work_dir: Path                # listener logs and ansible-runner's private dir
    work_marker: str | None = None  # written into work_dir: its owner's tag (a lab's is there)
    source: str = "vnet"          # shown in the result
    notes: tuple[str, ...] = ()
    backend: Backend = Backend.LIBVIRT    # whose mode table gives the expected values
    console: Callable[[str], str] | None = None   # vm -> its serial console (default: the lab's)


@dataclass(frozen=True)
class ProbeSources:
    """What verify() observes the cells with: the guests' Ansible run (and the playbook call
    inside it), vnet's listeners and where they bind, the probe module the host side runs, and
    the host-side SSH login through a forward. The real ones by default; a test passes fakes
    here (verify(..., sources=ProbeSources(guests=fake))) instead of patching this package."""
    guests: Callable[..., dict[str, dict]] = guest_ansible.run_guests
    playbook: Callable[[str, str, dict, dict], dict] = guest_ansible.run_playbook
    start_listeners: Callable[..., None] = listeners.start_listeners
    listener_addresses: Callable[..., list[str]] = listeners.listener_addresses
    probe_module: Callable[[], Any] = probe_module
    ssh_login: Callable[[dict, Path], dict] = forwardcheck.ssh_login
    late_look: Callable[..., dict | None] = latelook.look_again


def lab_inventory(lab: Lab, target: Target) -> Inventory:
    """The control path of a lab vnet created: its management network and its own SSH key."""
    record = state.read(target, lab.name) or {}
    key, _ = state.ssh_key(target, lab.name)
    hosts = {vm.name: {"ansible_host": record.get("mgmt", {}).get(vm.name),
                       "ansible_user": "root", "ansible_ssh_private_key_file": str(key)}
             for vm in lab.vms}
    return Inventory(hosts=hosts, mgmt_host_ip=str(mgmt_subnet_for(lab.name).network_address + 1),
                     work_dir=state.lab_dir(target, lab.name),
                     backend=Backend(record.get("backend", Backend.LIBVIRT.value)),
                     console=_consoles(lab, record.get("hosts"), state.lab_dir(target, lab.name)))


def _consoles(lab: Lab, hosts: dict | None, lab_dir: Path) -> Callable[[str], str] | None:
    """A lab across several hosts: each VM's console where its host's QEMU writes it (a remote
    host's read over SSH); "" when it cannot be read (no evidence, never a crash)."""
    if not hosts:
        return None
    from ..drivers.libvirt import remotehosts

    def console(vm: str) -> str:
        entry = hosts.get(lab.vm(vm).host or "") or {}
        try:
            return remotehosts.console(remotehosts.target_of(entry),
                                       entry.get("log_dir", str(lab_dir)), vm)
        except (VnetError, KeyError, ValueError, OSError):
            return ""
    return console


def verify(lab: Lab, target: Target, progress: Callable[[str], None],
           timings: dict | None = None, inventory: Inventory | None = None,
           pcap_dir: Path | None = None, sources: ProbeSources | None = None) -> dict:
    """pcap_dir: where the encapsulation cells' captures go (default: the lab's directory);
    sources: what observes the cells (ProbeSources: the real ones by default)."""
    with state.lab_lock(target, lab.name, progress):     # a `destroy` waits for the probes
        return _verify(lab, target, progress, timings, inventory, pcap_dir,
                       sources or ProbeSources())


def _verify(lab: Lab, target: Target, progress: Callable[[str], None],
            timings: dict | None, inventory: Inventory | None,
            pcap_dir: Path | None, sources: ProbeSources) -> dict:
    started = time.monotonic()
    sb = _sandbox(target)     # first: a verify that waited while its sandbox went down writes nothing
    inventory = inventory or lab_inventory(lab, target)
    port = random.randint(20000, 29999)       # host-side listeners: free per run
    ends = endpoints(lab, target, port, inventory.mgmt_host_ip)
    cells = checklib.build(lab, inventory.backend, ends)
    progress(f"verifying {len(cells)} cells of lab {lab.name}")
    emit(progress, Cells(0, len(cells)))      # the live display's count (progress.py)
    inventory.work_dir.mkdir(parents=True, exist_ok=True)
    if inventory.work_marker:                 # before anything else lands there
        (inventory.work_dir / inventory.work_marker).touch()
    records: list[Path] = []
    clock: dict[str, float] = {}              # the verify breakdown's moments (breakdown())
    try:     # the listeners start inside the try that stops them, even half started
        sources.start_listeners(target, sb, port, inventory.work_dir, records,
                                sources.listener_addresses(target, cells, port))
        for host, netns in servedon.other_host_namespaces(lab, target).items():
            where = inventory.work_dir / f"listeners-{host}"     # records apart from hv1's
            where.mkdir(exist_ok=True)
            sources.start_listeners(Target(uri=target.uri, netns=netns), None, port, where,
                                    records, ["0.0.0.0"], servedon.listener_name(lab, host))
        listeners.start_declared(target, sb, cells, inventory.work_dir, records, port)
        pause_at("verify")                      # a test may kill `vnet up` here
        flows_before = flowstats.snapshot(lab, target)
        clock["prepared"] = time.monotonic()
        encapcells.while_capturing(
            lambda: _run(lab, target, sb, cells, inventory, progress, sources, clock, records),
            lab, target, inventory, cells, pcap_dir, progress)
        impairment.annotate(cells, (state.read(target, lab.name) or {}).get("impair", {}))
        flow_tables = flowstats.attribute(lab, target, cells, flows_before)
    finally:
        for record in records:
            procs.stop(record, progress)
    emit(progress, Cells(len(cells), len(cells)))    # every cell has its outcome now
    phases = dict(timings or {})
    phases["verify"] = round(time.monotonic() - started, 2)
    phases["total"] = round(sum(phases.values()), 2)
    notes = list(inventory.notes) + ([] if sb else ["not in a sandbox: no Internet cells were probed"])
    found = [c.as_dict() for c in cells]
    hostcells.annotate(found, lab)            # several hosts: where each cell's ends run
    control = {vm: h.get("ansible_host") for vm, h in inventory.hosts.items()}
    # ok needs at least one verified cell and none skipped: a lab with no cell proves nothing
    result = dict(build_result(lab.name, inventory.backend,
                               checklib.booted_ok(found), found, phases, notes,
                               inventory=inventory.source, topology=topology.of(lab, control)))
    if flow_tables:          # OpenFlow networks: every flow and its packets during this run
        result["openflow"] = flow_tables
    result["verify_breakdown"] = breakdown(started, clock, time.monotonic())
    return result


def breakdown(started: float, clock: dict, ended: float) -> dict:
    """Where the verify phase's seconds went (benchmarks/run reports it): prepare (cells,
    listeners, flow snapshot), guests (the Ansible run: its controller start-up, then per guest
    the probe task and, inside it, Python's start and the probes), the host-side probes, and
    finish (after the guests: the last host probes, records, listeners stopped)."""
    def span(a: str, b: str) -> float | None:
        return round(clock[b] - clock[a], 3) if a in clock and b in clock else None

    clock = dict(clock, started=started, ended=ended)
    return {"prepare_s": span("started", "prepared"), "guests_s": span("guests", "guests_done"),
            "host_side_s": {k[5:]: round(v, 3) for k, v in clock.items()
                            if k.startswith("side:")},
            "finish_s": span("guests_done", "ended"), "per_guest": clock.get("per_guest", {})}


def _sandbox(target: Target, running: bool = True):
    """The target's sandbox, or None outside one. running: it must be up (verify probes in
    it); else only its fixed addresses are wanted (sandbox.describe)."""
    if not target.sandbox:
        return None
    return sandbox.load(target.sandbox) if running else sandbox.describe(target.sandbox)


def endpoints(lab: Lab, target: Target, port: int = 0,
              mgmt_host_ip: str | None = None) -> checklib.Endpoints:
    """Where the probes of a lab on `target` go (port: the host-side listeners'; the
    management address defaults to that of vnet's libvirt management network). Needs no
    running sandbox: a sandbox's addresses are fixed."""
    sb = _sandbox(target, running=False)
    return checklib.Endpoints(
        host_listener_port=port, internet_ip=sb.internet_ip if sb else None,
        host_uplink_ip=sb.host_uplink_ip if sb else "127.0.0.1",
        mgmt_host_ip=mgmt_host_ip or str(mgmt_subnet_for(lab.name).network_address + 1))


def unbooted_result(lab: Lab, cells: list, note: str, timings: dict | None = None,
                    backend: Backend = Backend.LIBVIRT) -> dict:
    """A result shaped like verify()'s for a lab that was never booted (its hardware is
    missing): its cells are observed "skipped", which is not a failure for such a lab."""
    from . import topology

    return dict(build_result(lab.name, backend, checklib.result_ok(cells, booted=False),
                             [c.as_dict() for c in cells], dict(timings or {}), [note],
                             booted=False, topology=topology.of(lab)))


def _run(lab, target, sb, cells, inventory, progress, sources: ProbeSources,
         clock: dict | None = None, listener_records: list[Path] | None = None) -> None:
    clock = {} if clock is None else clock
    module = sources.probe_module()
    outcome: dict[str, dict] = {}
    errors: list[BaseException] = []

    stop = inventory.work_dir / "forwards.stop"     # the guests' run has ended (forwardcheck)
    stop.unlink(missing_ok=True)

    def side(netns, source):
        specs = [forwardcheck.with_login(dict(c.probe, id=str(i)), inventory.hosts)
                 for i, c in enumerate(cells) if c.runner == source]
        if not specs:
            return
        try:
            began = time.monotonic()
            args = (module, specs, source, stop, sources.ssh_login)
            results = run_in_netns(netns, forwardcheck.side_probes, *args) if netns \
                else forwardcheck.side_probes(*args)
            clock[f"side:{source}"] = time.monotonic() - began
            outcome.update({f"{source}:{k}": v for k, v in results.items()})
        except BaseException as exc:  # reported below, after the other sources finish
            errors.append(exc)

    threads = [threading.Thread(target=side, args=(target.netns, checklib.HOST))]
    threads += [threading.Thread(target=side, args=(netns, runner)) for runner, netns in
                servedon.side_namespaces(lab, target, {c.runner for c in cells}).items()]
    if sb:
        threads.append(threading.Thread(target=side, args=(sb.inet_netns, checklib.INTERNET)))
    for t in threads:
        t.start()
    cutter = linkcells.LinkCutter(lab, cells, _link_setter(lab, target, inventory.backend),
                                  lambda vm: serial_log(inventory.work_dir, vm),
                                  ready=linkcells.host_probes_done(threads)).start()
    try:
        holds = forwardcheck.guest_holds(cells)
        for vm, held in declared.holds(cells).items():
            holds[vm] = holds.get(vm, []) + held
        clock["guests"] = time.monotonic()
        guest = sources.guests(lab, target, cells, inventory, progress, holds, stop,
                               sources.playbook)
        clock["guests_done"] = time.monotonic()
        clock["per_guest"] = {vm: r["timing"] for vm, r in guest.items()  # type: ignore[assignment]
                              if isinstance(r, dict) and "timing" in r}
    finally:
        cutter.stop()        # restores every link it cut, before the forwards' last probes
        stop.touch()
        for t in threads:
            t.join()
    if errors:
        raise VnetError(f"host-side probes failed to run: {errors[0]!r}")
    _look_again(cells, guest, outcome, inventory, target.netns, progress, sources)
    console = inventory.console or (lambda vm: read_console(serial_log(inventory.work_dir, vm)))
    record(cells, guest, outcome, evidence=refusals.Evidence(
        {vm.name: refusals.listen_stamps(console(vm.name)) for vm in lab.vms},
        listeners.ran_through(listener_records or [])))
    cutter.annotate(cells)
    tunnelcells.annotate(cells, guest)


def _look_again(cells, guest, sides, inventory, netns, progress, sources) -> None:
    """A guest a host-side refused attempt aimed at, where it ended after the guest's last
    look at its sockets: it looks again now, and that look judges the refusals (latelook)."""
    late = latelook.wanted(cells, guest, sides)
    if not late:
        return
    progress(f"{', '.join(late)}: a host-side refusal ended after the guest's last look at "
             "its sockets; listing them again")
    clock = next((c.probe["clock"] for c in cells if c.probe.get("clock")), None)
    for vm, ports in late.items():
        look = sources.late_look(vm, inventory.hosts.get(vm, {}), netns,
                                 {"ports": ports, "clock": clock})
        # only a look of the same boot: inodes repeat across boots, so a rebooted guest's
        # socket could pass for the one its first look saw
        if look is not None and look.get("boot") == guest[vm]["listening"]["last"].get("boot"):
            guest[vm]["listening"]["last"] = look


def _link_setter(lab: Lab, target: Target, backend: Backend):
    """set_link(vm, nic index, up) of the lab's driver: bond_failover's cable puller."""
    def set_link(vm: str, nic: int, up: bool) -> None:
        from ..drivers.base import driver_class

        driver_class(backend)(target).set_link(lab.name, vm, nic, up)
    return set_link


def record(cells: list, guest: dict[str, dict], sides: dict[str, dict],
           settle_silence: Callable[[dict, list], dict] | None = None,
           evidence: refusals.Evidence = refusals.Evidence()) -> None:
    """Write each cell's observed value and detail from the guests' module results
    ({vm: {"probes", "drivers"}}) and the host/Internet results ({"host:<i>": result}): UDP
    silences settled against their positive controls, wherever those ran, refusals against
    what shows the target listened (refusals.settle, `evidence`), then, for a port a guest
    held, judged with what the hold saw (forwardcheck.conclude)."""
    raw: dict[str, dict] = {}
    for i, cell in enumerate(cells):
        if cell.runner == "none":          # decided before the run (verify/declared.py)
            continue
        if cell.runner.startswith("guest:"):
            vm = cell.runner.split(":", 1)[1]
            result = guest.get(vm)
            if result is None:
                cell.observed, cell.detail = "error", f"Ansible could not run on {vm}"
            elif cell.kind == "nic_model":
                seen = result["drivers"].get(cell.probe["mac"])
                # "fail" is kept for "no connection": a wrong or missing driver is an error
                cell.observed = "pass" if seen == cell.probe["driver"] else "error"
                cell.detail = f"guest driver {seen}, expected {cell.probe['driver']}"
            else:
                raw[str(i)] = result["probes"].get(str(i), {"observed": "error",
                                                            "detail": "no result"})
                cell.measured = raw[str(i)].get("measured")
        else:
            raw[str(i)] = sides.get(f"{cell.runner}:{i}", {"observed": "error",
                                                           "detail": "not run"})
    for i, cell in enumerate(cells):   # silences settled first, then a hold's report decides
        if str(i) not in raw:
            continue
        r = raw[str(i)]
        keep_timeout(cell, r)
        if cell.probe.get("confirmed_by"):  # UDP silence: its controls may have run elsewhere
            settle_silence = settle_silence or probe_module().settle_silence
            r = settle_silence(r, [raw.get(j) for j in cell.probe["confirmed_by"]])
        r = refusals.settle(r, cell.probe, cell.runner, guest, evidence)
        cell.observed, cell.detail = r["observed"], r["detail"]
        fwd = cell.probe.get("forward")
        if fwd and "nonces" in r:   # a forward, or a declared check's port held by a guest:
            held = guest.get(fwd["vm"], {}).get("forwards", {}).get(fwd["name"])  # its report
            origin = cell.runner.split(":", 1)[-1]        # guest:vm -> vm; host, internet
            prober = guest.get(origin, {}).get("clock") if cell.runner.startswith("guest:") \
                else forwardcheck.HOST_CLOCK
            clocks = (prober, guest.get(fwd["vm"], {}).get("clock"))
            cell.observed, cell.detail = forwardcheck.conclude(r, held, origin, fwd["vm"], clocks)
            # how far apart the two clocks may still be: the hold's window shrinks by this
            cell.evidence["clock_margin_s"] = round(forwardcheck.skew(clocks)[2], 4)


def keep_timeout(cell, result: dict) -> None:
    """The connect timeout a probe was given, and why (vnet_probe.RoundTrips: derived from the
    run's measured round trips, or fixed), and its own connect time: shown in the cell's JSON,
    so a reader sees how long a red cell waited."""
    for key in ("connect_timeout", "connect_ms"):
        if key in result:
            cell.evidence[key] = result[key]
