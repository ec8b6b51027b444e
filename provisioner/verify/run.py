"""Run a lab's checks and compare them with the mode table.

Control path: Ansible reaches each guest over the lab's management network (an isolated
libvirt network, last NIC of every VM, no route beyond it). Every in-guest probe is bound to
the NIC under test with SO_BINDTODEVICE, and targets that network's addresses, so the
management network cannot carry a probe: an internal network's VM->host cell targets the
host's management address on purpose, and must fail. A VirtualBox lab has the same
control path on a lab-owned host-only interface (vbox_exec.inventory), and its expected values
come from the VirtualBox rows of the mode table (Inventory.backend).

Three probe sources run at once: the guests (one Ansible run, one module call per guest), the
host namespace and the Internet namespace (vnet's own listeners answer there)."""
from __future__ import annotations

import importlib.util
import json
import random
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from xml.sax.saxutils import quoteattr

from . import checks as checklib
from . import declared, flowstats, linkcells
from ..host import procs, state
from ..host.ssh import close_masters, control_dir
from . import forwardcheck, topology
from .result import build as build_result
from ..lab.naming import mgmt_subnet_for
from ..errors import VnetError
from ..lab.model import Backend, Lab
from ..host.netns import netns_argv, run_in_netns
from .report import CELL_TITLES, table
from ..resources import data_dir
from ..host.state import Target
from ..host.testpoints import pause_at
from ..drivers.boot import serial_log
from ..progress import Cells, emit

PYTHON_IN_GUEST = "/usr/bin/python3"
ANSIBLE_TIMEOUT = 180      # a whole run; one probe module call takes a few seconds


def probe_module():
    """The probe code shared with the guests (playbooks/library/vnet_probe.py)."""
    path = data_dir("playbooks") / "library" / "vnet_probe.py"
    spec = importlib.util.spec_from_file_location("vnet_probe", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass(frozen=True)
class Inventory:
    """How Ansible reaches each guest over its control path, and where a run keeps its files.
    vnet's own labs take it from the lab record (lab_inventory); a Vagrant project from
    `vagrant ssh-config` (provisioner/ops/vagrant.py)."""
    hosts: dict[str, dict]        # vm -> Ansible host vars: ansible_host, ansible_user, ...
    mgmt_host_ip: str             # the host's address on the control network: no probe may use it
    work_dir: Path                # listener logs and ansible-runner's private dir
    source: str = "vnet"          # shown in the result
    notes: tuple[str, ...] = ()
    backend: Backend = Backend.LIBVIRT    # whose mode table gives the expected values


def lab_inventory(lab: Lab, target: Target) -> Inventory:
    """The control path of a lab vnet created: its management network and its own SSH key."""
    record = state.read(target, lab.name) or {}
    key, _ = state.ssh_key(target, lab.name)
    hosts = {vm.name: {"ansible_host": record.get("mgmt", {}).get(vm.name),
                       "ansible_user": "root", "ansible_ssh_private_key_file": str(key)}
             for vm in lab.vms}
    return Inventory(hosts=hosts, mgmt_host_ip=str(mgmt_subnet_for(lab.name).network_address + 1),
                     work_dir=state.lab_dir(target, lab.name),
                     backend=Backend(record.get("backend", Backend.LIBVIRT.value)))


def verify(lab: Lab, target: Target, progress: Callable[[str], None],
           timings: dict | None = None, inventory: Inventory | None = None) -> dict:
    with state.lab_lock(target, lab.name, progress):     # a `destroy` waits for the probes
        return _verify(lab, target, progress, timings, inventory)


def _verify(lab: Lab, target: Target, progress: Callable[[str], None],
            timings: dict | None, inventory: Inventory | None) -> dict:
    started = time.monotonic()
    inventory = inventory or lab_inventory(lab, target)
    sb = _sandbox(target)
    port = random.randint(20000, 29999)       # host-side listeners: free per run
    ends = endpoints(lab, target, port, inventory.mgmt_host_ip)
    cells = checklib.build(lab, inventory.backend, ends)
    progress(f"verifying {len(cells)} cells of lab {lab.name}")
    emit(progress, Cells(0, len(cells)))      # the live display's count (progress.py)
    inventory.work_dir.mkdir(parents=True, exist_ok=True)
    records: list[Path] = []
    try:     # the listeners start inside the try that stops them, even half started
        _start_listeners(target, sb, port, inventory.work_dir, records,
                         _listener_addresses(target, cells, port))
        _start_declared_listeners(target, sb, cells, inventory.work_dir, records, port)
        pause_at("verify")                      # a test may kill `vnet up` here
        flows_before = flowstats.snapshot(lab, target)
        _run(lab, target, sb, cells, inventory, progress)
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
    control = {vm: h.get("ansible_host") for vm, h in inventory.hosts.items()}
    # ok needs at least one verified cell: a lab with no cell at all proves nothing
    result = dict(build_result(lab.name, inventory.backend,
                               checklib.verdict(found) == checklib.GREEN, found, phases, notes,
                               inventory=inventory.source, topology=topology.of(lab, control)))
    if flow_tables:          # OpenFlow networks: every flow and its packets during this run
        result["openflow"] = flow_tables
    return result


def _sandbox(target: Target):
    if not target.sandbox:
        return None
    from ..host import sandbox

    return sandbox.load(target.sandbox)


def endpoints(lab: Lab, target: Target, port: int = 0,
              mgmt_host_ip: str | None = None) -> checklib.Endpoints:
    """Where the probes of a lab on `target` go (port: the host-side listeners'; the
    management address defaults to that of vnet's libvirt management network)."""
    sb = _sandbox(target)
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


# Runs the probe module's listener on one address: it is loaded by path (runpy), so nothing
# is imported from the caller's directory, and serve() gets the address to bind.
LISTENER_BOOT = ("import runpy, sys; runpy.run_path(sys.argv[1])['serve']"
                 "(int(sys.argv[2]), sys.argv[3], host=sys.argv[4])")


def listener_argv(script: str, port: int, name: str, address: str) -> list[str]:
    return [sys.executable, "-I", "-c", LISTENER_BOOT, script, str(port), name, address]


def _listener_addresses(target: Target, cells, port: int) -> list[str]:
    """Where the host-side listener binds. In a sandbox its host namespace is vnet's own: every
    address. Outside, only loopback (QEMU's and VirtualBox's NAT map the guests' 10.0.2.2 to it)
    and the host's own addresses on the lab's networks that the probes target: never the
    machine's other interfaces."""
    if target.netns:
        return ["0.0.0.0"]
    wanted = {c.probe["target"] for c in cells
              if c.kind == "vm_to_host" and c.probe.get("port") == port}
    return ["127.0.0.1", *sorted(a for a in wanted if a != "127.0.0.1" and _bindable(a))]


def _bindable(address: str) -> bool:
    import socket

    with socket.socket() as sock:
        try:
            sock.bind((address, 0))
            return True
        except OSError:      # not an address of this host (a NAT's gateway, say)
            return False


def _start_listeners(target: Target, sb, port: int, lab_dir: Path, records: list[Path],
                     host_addresses: list[str]) -> None:
    """vnet's listeners (the host's, and the Internet's in a sandbox); each one's record is
    appended to `records` the moment it is spawned, for the caller to stop."""
    script = str(data_dir("playbooks") / "library" / "vnet_probe.py")
    places = [(target.netns, checklib.HOST, a) for a in host_addresses]
    places += [(sb.inet_netns, checklib.INTERNET, "0.0.0.0")] if sb else []
    for i, (netns, name, address) in enumerate(places):
        argv = listener_argv(script, port, name, address)
        log = lab_dir / f"listener-{name}-{i}.log"
        log.unlink(missing_ok=True)
        records.append(lab_dir / f"listener-{name}-{i}.pid")
        proc = procs.spawn(netns_argv(netns, argv) if netns else argv, records[-1], script,
                           log_path=str(log), cwd="/")
        deadline = time.monotonic() + 10
        ready = f"vnet-listener {name} ready"    # not just "ready": "already in use" has it
        while ready not in (log.read_text() if log.exists() else ""):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise VnetError(f"vnet's {name} listener on {address} did not start: "
                                f"{log.read_text()[-200:] if log.exists() else ''}")
            time.sleep(0.02)


def _start_declared_listeners(target: Target, sb, cells, lab_dir: Path, records: list[Path],
                              port: int) -> None:
    """vnet listeners on the host's and the Internet's declared ports (verify/declared.py)."""
    script = str(data_dir("playbooks") / "library" / "vnet_probe.py")
    places = {checklib.HOST: (target.netns, _listener_addresses(target, cells, port))}
    if sb:
        places[checklib.INTERNET] = (sb.inet_netns, ["0.0.0.0"])

    def spawn(netns, declared_port, name, address, log, record):
        argv = listener_argv(script, declared_port, name, address)
        return procs.spawn(netns_argv(netns, argv) if netns else argv, record, script,
                           log_path=str(log), cwd="/")
    declared.start_listeners(cells, places, lab_dir, records, spawn)


def _run(lab, target, sb, cells, inventory, progress) -> None:
    module = probe_module()
    outcome: dict[str, dict] = {}
    errors: list[BaseException] = []

    origins = [checklib.HOST] + ([checklib.INTERNET] if sb else [])
    stop = inventory.work_dir / "forwards.stop"     # the guests' run has ended (forwardcheck)
    stop.unlink(missing_ok=True)

    def side(netns, source):
        specs = [forwardcheck.with_login(dict(c.probe, id=str(i)), inventory.hosts)
                 for i, c in enumerate(cells) if c.runner == source]
        if not specs:
            return
        try:
            args = (module, specs, source, stop)
            results = run_in_netns(netns, forwardcheck.side_probes, *args) if netns \
                else forwardcheck.side_probes(*args)
            outcome.update({f"{source}:{k}": v for k, v in results.items()})
        except BaseException as exc:  # reported below, after the other sources finish
            errors.append(exc)

    threads = [threading.Thread(target=side, args=(target.netns, checklib.HOST))]
    if sb:
        threads.append(threading.Thread(target=side, args=(sb.inet_netns, checklib.INTERNET)))
    for t in threads:
        t.start()
    cutter = linkcells.LinkCutter(lab, cells, _link_setter(lab, target, inventory.backend),
                                  lambda vm: serial_log(inventory.work_dir, vm),
                                  ready=linkcells.host_probes_done(threads)).start()
    try:
        holds = forwardcheck.guest_holds(cells, origins)
        for vm, held in declared.holds(cells).items():
            holds[vm] = holds.get(vm, []) + held
        guest = _ansible(lab, target, cells, inventory, progress, holds, stop)
    finally:
        cutter.stop()        # restores every link it cut, before the forwards' last probes
        stop.touch()
        for t in threads:
            t.join()
    if errors:
        raise VnetError(f"host-side probes failed to run: {errors[0]!r}")
    record(cells, guest, outcome)
    cutter.annotate(cells)


def _link_setter(lab: Lab, target: Target, backend: Backend):
    """set_link(vm, nic index, up) of the lab's driver: bond_failover's cable puller."""
    def set_link(vm: str, nic: int, up: bool) -> None:
        from ..drivers.base import driver_class

        driver_class(backend)(target).set_link(lab.name, vm, nic, up)
    return set_link


def record(cells: list, guest: dict[str, dict], sides: dict[str, dict],
           settle_silence: Callable[[dict, list], dict] | None = None) -> None:
    """Write each cell's observed value and detail from the guests' module results
    ({vm: {"probes", "drivers"}}) and the host/Internet results ({"host:<i>": result}); then
    settle UDP silences against their positive controls, wherever those ran."""
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
                r = raw[str(i)] = result["probes"].get(str(i), {"observed": "error",
                                                                "detail": "no result"})
                cell.observed, cell.detail = r["observed"], r["detail"]
                fwd = cell.probe.get("forward")
                if fwd and "nonces" in r:   # a declared check's port held by another guest
                    held = guest.get(fwd["vm"], {}).get("forwards", {}).get(fwd["name"])
                    cell.observed, cell.detail = forwardcheck.conclude(r, held, vm, fwd["vm"])
        else:
            r = raw[str(i)] = sides.get(f"{cell.runner}:{i}", {"observed": "error",
                                                               "detail": "not run"})
            cell.observed, cell.detail = r["observed"], r["detail"]
            fwd = cell.probe.get("forward")
            if fwd and "nonces" in r:        # with what the guest saw at the forwarded port
                held = guest.get(fwd["vm"], {}).get("forwards", {}).get(fwd["name"])
                cell.observed, cell.detail = forwardcheck.conclude(r, held, cell.runner, fwd["vm"])
    for i, cell in enumerate(cells):     # UDP silence: its controls may have run elsewhere
        if cell.probe.get("confirmed_by") and str(i) in raw:
            settle_silence = settle_silence or probe_module().settle_silence
            r = settle_silence(raw[str(i)], [raw.get(j) for j in cell.probe["confirmed_by"]])
            cell.observed, cell.detail = r["observed"], r["detail"]


def _ansible(lab: Lab, target: Target, cells, inventory: Inventory, progress,
             holds: dict[str, list[dict]] | None = None,
             stop: Path | None = None) -> dict[str, dict]:
    """One ansible-runner run over all guests; returns {vm: module result}. `holds`: the
    forwards each guest holds open meanwhile (forwardcheck.guest_holds); `stop`: the file that
    tells the host-side forward probes that the guests' run has ended."""
    hosts = {}
    for vm in lab.vms:
        mine = [(i, c) for i, c in enumerate(cells) if c.runner == f"guest:{vm.name}"]
        hosts[vm.name] = {
            **inventory.hosts.get(vm.name, {}),
            "vnet_probes": [dict(c.probe, id=str(i)) for i, c in mine
                            if c.kind != "nic_model" and not c.probe.get("failover")],
            "vnet_nic_macs": [c.probe["mac"] for _, c in mine if c.kind == "nic_model"],
            "vnet_forwards": (holds or {}).get(vm.name, []),
            # a second task, after every guest's probes: a cut link must disturb no other cell
            "vnet_failovers": [dict(c.probe, id=str(i)) for i, c in mine
                               if c.probe.get("failover")],
        }
    private = inventory.work_dir / "ansible"
    inventory_data = {"all": {"hosts": hosts, "vars": {
        "ansible_python_interpreter": PYTHON_IN_GUEST}}}
    env = {"ANSIBLE_HOST_KEY_CHECKING": "False", "ANSIBLE_PIPELINING": "True",
           "ANSIBLE_SSH_TRANSFER_METHOD": "piped", "ANSIBLE_REMOTE_TMP": "/tmp/.ansible",
           "ANSIBLE_GATHERING": "explicit", "ANSIBLE_RETRY_FILES_ENABLED": "False",
           "ANSIBLE_LIBRARY": str(data_dir("playbooks") / "library"),
           "ANSIBLE_FORKS": str(max(5, len(hosts))),
           "ANSIBLE_SSH_ARGS": "-o ControlMaster=auto -o ControlPersist=30s "
                               "-o UserKnownHostsFile=/dev/null -o StrictHostKeyChecking=no",
           # Masters of this lab only: another sandbox reuses the same guest addresses, and a
           # master left from it would carry this run's SSH into a namespace that is gone.
           "ANSIBLE_SSH_CONTROL_PATH_DIR": str(control_dir(target, lab.name)),
           "ANSIBLE_NOCOLOR": "True"}
    progress(f"running Ansible on {len(hosts)} guest(s)")
    args = (stop, str(private), str(data_dir("playbooks") / "verify.yml"), inventory_data, env)
    results = run_in_netns(target.netns, _run_playbook_then_stop, *args) if target.netns \
        else _run_playbook_then_stop(*args)
    failed = [vm for vm in hosts if vm not in results]
    if failed:
        progress(f"Ansible reached no result on {', '.join(failed)}; see {private}/artifacts")
    return results


def _run_playbook_then_stop(stop: Path | None, *args) -> dict:
    """The playbook run, then the stop file, from the process that ran it. Why not from the
    caller: the host-side probe processes were forked while this one's result pipe was open,
    so they hold its write end, and the caller sees the result only once they have ended, which
    they do on the stop file."""
    try:
        return _run_playbook(*args)
    finally:
        if stop is not None:
            stop.touch()


def _run_playbook(private_dir: str, playbook: str, inventory: dict, env: dict) -> dict:
    import os

    import ansible_runner

    # ansible-playbook sits beside this interpreter (the venv), which may not be on PATH.
    bindir = str(Path(sys.executable).parent)
    os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")
    Path(private_dir).mkdir(parents=True, exist_ok=True)
    try:
        run = ansible_runner.run(private_data_dir=private_dir, playbook=playbook,
                                 inventory=inventory, envvars=env, quiet=True, rotate_artifacts=3,
                                 timeout=ANSIBLE_TIMEOUT)
    finally:
        close_masters(Path(env["ANSIBLE_SSH_CONTROL_PATH_DIR"]))
    results: dict[str, dict] = {}
    for event in run.events:
        if event.get("event") == "runner_on_ok":
            data = event["event_data"]
            res = data.get("res", {})
            if "probes" in res:        # one result per task (probes, then bond failovers)
                got = results.setdefault(data["host"], {"probes": {}, "drivers": {},
                                                        "forwards": {}})
                for key in got:
                    got[key].update(res.get(key, {}))
    return results


# --- presentation ---------------------------------------------------------------------------

KIND_TITLES = dict(CELL_TITLES, port_forward="port fwd", nic_model="NIC model", route="route",
                   bond_failover="bond failover")


def matrix_text(result: dict) -> str:
    color = sys.stdout.isatty()

    def paint(text, code):
        return f"\033[{code}m{text}\033[0m" if color else text

    def mark(c):
        if c["observed"] == checklib.SKIPPED:
            return paint(c["observed"], 33), "skipped"
        return paint(c["observed"], 32 if c["ok"] else 31), "ok" if c["ok"] else "MISMATCH"
    rows = [[c["network"], KIND_TITLES[c["kind"]] + (" (declared)" if c.get("declared") else ""),
             c["source"], c["target"], c["expected"], *mark(c)] for c in result["checks"]]
    skipped = [c for c in result["checks"] if c["observed"] == checklib.SKIPPED]
    lines = [f"lab {result['lab']} ({result['backend']}): {summary_line(result)}",
             table(["network", "cell", "from", "to", "expected", "observed", ""], rows)]
    red = [c for c in result["checks"] if not c["ok"] and c["observed"] != checklib.SKIPPED]
    if red:
        lines.append("diagnosis:")
        lines += [f"  {c['kind']} {c['source']} -> {c['target']}: expected {c['expected']}, "
                  f"observed {c['observed']}: {c['detail']}" for c in red]
    lines += flowstats.text(result)
    if skipped:
        lines.append(f"skipped: {skipped[0]['detail']}")
    lines += [f"note: {n}" for n in result.get("notes", [])]
    lines.append("timings: " + ", ".join(f"{k} {v}s" for k, v in result["timings"].items()))
    if result.get("booted", True) is False:
        lines.append("SKIPPED (not booted: no hardware)" if result["ok"] else "NOT VERIFIED")
    else:
        lines.append(verdict_line(result))
    return "\n".join(lines)


def summary_line(result: dict) -> str:
    """"12 ok, 1 red, 2 skipped (of 15 cells)": what the exit code is made of."""
    counts = checklib.tally(result["checks"])
    return ", ".join(f"{n} {k}" for k, n in counts.items()) + f" (of {len(result['checks'])} cells)"


def verdict_line(result: dict) -> str:
    verdict = checklib.verdict(result["checks"])
    if verdict == checklib.NOTHING_VERIFIED:
        return "NOTHING VERIFIED (every cell skipped or unsupported)"
    return "VERIFIED" if verdict == checklib.GREEN and result["ok"] else "NOT VERIFIED"


def exit_code(result: dict) -> int:
    """0 only when the lab is green: 1 on any red cell, and 1 when nothing was verified."""
    green = result["ok"] and checklib.verdict(result["checks"]) == checklib.GREEN
    return 0 if green else 1


def write_report(result: dict, kind: str, out: Path) -> None:
    if kind == "html":       # the topology drawn and the matrix as a coloured grid
        from .htmlreport import write_html

        write_html(result, out)
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    if kind == "json":
        out.write_text(json.dumps(result, indent=2) + "\n")
        return
    cases = []
    for c in result["checks"]:
        name = quoteattr(f"{c['kind']} {c['source']} -> {c['target']}")
        if c["observed"] == checklib.SKIPPED:
            body = f"<skipped message={quoteattr(c['detail'])}/>"
        elif c["ok"]:
            body = ""
        else:
            body = (f"<failure message={quoteattr(c['detail'])}>expected {c['expected']}, "
                    f"observed {c['observed']}</failure>")
        cases.append(f'  <testcase classname={quoteattr(result["lab"] + "." + c["network"])} '
                     f'name={name}>{body}</testcase>')
    errors = 0
    if result.get("error"):      # the lab could not be created or booted: no cell ran
        errors = 1
        cases.append(f'  <testcase classname={quoteattr(result["lab"])} name="create lab">'
                     f'<error message={quoteattr(result["error"])}/></testcase>')
    failures = sum(not c["ok"] and c["observed"] != checklib.SKIPPED for c in result["checks"])
    skipped = sum(c["observed"] == checklib.SKIPPED for c in result["checks"])
    out.write_text(f'<?xml version="1.0" encoding="UTF-8"?>\n<testsuite name={quoteattr("vnet " + result["lab"])} '
                   f'tests="{len(cases)}" failures="{failures}" errors="{errors}" '
                   f'skipped="{skipped}" time="{result["timings"].get("verify", 0)}">\n'
                   + "\n".join(cases) + "\n</testsuite>\n")
