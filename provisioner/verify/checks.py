"""Which cells to probe for a lab, and what each must show: pure data built from the lab and
the mode table. verify.py runs them; report.py shows them.

A cell's observed value is "pass", "fail", "error" (playbooks/library/vnet_probe.py says which
evidence gives which), or "skipped": a NIC whose model needs
hardware this host lacks (an SR-IOV VF, a vDPA device) is never booted here, so its cells are
reported as skipped (`hardware_cells`), never as passed.

A check runs from one of three places: a guest (through Ansible, bound to the NIC under test),
the host (its network namespace), or the Internet (the sandbox's Internet namespace)."""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from ..lab import modes, nics
from ..lab.defaults import ECHO_PORT
from ..lab.model import Backend, Lab
from . import declared, refusals, servedon
from .encapcells import encapsulation_cells
from .impairment import harden_negatives, impairment_cells
from .linkcells import link_cells, probed_nics
from .tunnelcells import tunnel_cells

HOST, INTERNET = "host", "internet"
SKIPPED = "skipped"
# direct path; forwards apart. A negative cell expects "fail" (no connection could be made):
# "error" (connected to the wrong place, silence, a stale nonce) is never ok.
PASS_WHEN = {"yes": "pass", "no": "fail", "port-forward": "fail"}


@dataclass(frozen=True)
class Endpoints:
    """Where the host-side listeners are, as each network sees them."""
    host_listener_port: int
    internet_ip: str | None          # None outside a sandbox: no Internet cells
    host_uplink_ip: str | None       # where port forwards are reached from outside
    mgmt_host_ip: str                # the host's management address: a path a probe must NOT use


@dataclass
class Check:
    kind: str
    network: str
    mode: str
    source: str
    target: str
    expected: str
    runner: str                      # "guest:<vm>" | "host" | "internet"
    probe: dict = field(default_factory=dict)
    observed: str = "error"
    detail: str = "not run"
    evidence: dict = field(default_factory=dict)   # files a cell leaves (an encapsulation pcap)
    declared: bool = False           # a cell of the lab file's `checks:` (verify/declared.py)
    flows: list | None = None        # OpenFlow rules its packet hits (verify/flowstats.py)
    measured: dict | None = None     # impairment cells: what the guest measured

    @property
    def ok(self) -> bool:
        return self.observed == self.expected and self.observed != "error"   # never ok

    @property
    def skipped(self) -> bool:
        return self.observed == SKIPPED

    def as_dict(self) -> dict:
        found = {"kind": self.kind, "network": self.network, "mode": self.mode,
                 "source": self.source, "target": self.target, "expected": self.expected,
                 "observed": self.observed, "ok": self.ok, "detail": self.detail,
                 **({"measured": self.measured} if self.measured is not None else {}),
                 **self.evidence}
        if self.flows is not None:
            found["flows"] = self.flows
        return {**found, "declared": True} if self.declared else found


def build(lab: Lab, backend: Backend, ends: Endpoints) -> list[Check]:
    checks: list[Check] = []
    for net in lab.networks:
        row = modes.expected(net.mode, backend).as_dict()
        members = probed_nics(lab, net.name)     # a bond stands for its members

        def add(kind, source, label, runner, **probe):
            probe.setdefault("timeout", 3.0)     # until a round trip is measured (vnet_probe)
            probe.setdefault("rtt_timeout", True)
            checks.append(Check(kind, net.name, net.mode, source, label,
                                PASS_WHEN[row[kind]], runner, probe))

        for vm, nic in members:
            model = nics.NIC_MODELS[nic.model]
            # Hardware NICs (SR-IOV, vDPA) are probed like any other once their lab boots;
            # without the hardware the lab never boots (doctor.preflight) and hardware_cells()
            # reports these cells as skipped.
            host_target = str(net.host_ip) if net.host_ip else ends.mgmt_host_ip
            host_name = servedon.host_answer(lab, vm, net)
            # `listens`: whose socket the probe aims at; a refusal is evidence of a closed path
            # only if that socket listened through it (verify/refusals.py)
            add("vm_to_host", vm.name, f"host ({host_target})", f"guest:{vm.name}",
                target=host_target, port=ends.host_listener_port, expect_name=host_name,
                bind_mac=nic.mac, listens=refusals.vnet_listener(host_name))
            if nic.ip is not None:
                add("host_to_vm", HOST, f"{vm.name} ({nic.ip.ip})",
                    servedon.network_runner(lab, net.name, HOST),
                    target=str(nic.ip.ip), port=ECHO_PORT, expect_name=vm.name,
                    listens=vm.name)
            for peer, peer_nic in members:
                if peer is not vm and peer_nic.ip is not None:
                    add("vm_to_vm", vm.name, f"{peer.name} ({peer_nic.ip.ip})", f"guest:{vm.name}",
                        target=str(peer_nic.ip.ip), port=ECHO_PORT, expect_name=peer.name,
                        bind_mac=nic.mac, listens=peer.name,
                        **declared.own_address(vm, nic, peer, peer_nic, net))
            if ends.internet_ip:
                add("vm_to_internet", vm.name, f"internet ({ends.internet_ip})", f"guest:{vm.name}",
                    target=ends.internet_ip, port=ends.host_listener_port, expect_name=INTERNET,
                    bind_mac=nic.mac, listens=refusals.vnet_listener(INTERNET))
                if nic.ip is not None:
                    add("internet_to_vm", INTERNET, f"{vm.name} ({nic.ip.ip})", "internet",
                        target=str(nic.ip.ip), port=ECHO_PORT, expect_name=vm.name,
                        listens=vm.name)
            if model.guest_driver and nic.bond is None:
                checks.append(Check("nic_model", net.name, net.mode, vm.name,
                                    f"{nic.mac} {nic.model}", "pass", f"guest:{vm.name}",
                                    {"mac": nic.mac, "driver": model.guest_driver}))
        for pf in net.port_forwards:
            if ends.host_uplink_ip is None:
                continue
            at, host_side = servedon.probe_point(lab, pf, ends.host_uplink_ip, HOST)
            forward = dict(target=at, port=pf.host_port, expect_name=pf.vm,
                           forward=forward_of(lab, pf))
            if pf.proto == "udp":
                forward["proto"] = "udp"   # the UDP nonce exchange; the guest holds the port
            elif pf.guest_port == 22:
                forward["ssh"] = True      # proven by logging in and reading the guest's name
            label = f"{pf.vm}:{pf.guest_port} via {at}:{pf.host_port}"
            # a forward on a loopback address is the host's alone: from the Internet that
            # address is the Internet's own loopback, so no probe there could reach it
            internet = INTERNET if ends.internet_ip and not ipaddress.ip_address(at).is_loopback else None
            for origin in (host_side, internet):
                if origin:
                    checks.append(Check("port_forward", net.name, net.mode, origin, label,
                                        "pass", origin, dict(forward, timeout=3.0)))
    def positive(kind, network, source, target, runner, probe):
        return Check(kind, network, lab.network(network).mode, source, target, "pass", runner,
                     probe)

    def declared_cell(kind, network, source, target, runner, probe, expected):
        return Check(kind, network, lab.network(network).mode, source, target, expected, runner,
                     probe, declared=True)
    checks += link_cells(lab, ends, positive)
    checks += impairment_cells(lab, ends, positive, backend)
    checks += tunnel_cells(lab, positive)
    checks += encapsulation_cells(lab, positive, checks)
    checks = declared.merge(checks, declared.cells(lab, ends, declared_cell))
    link_controls(checks)
    harden_negatives(lab, checks)       # impaired paths: no fail that loss or delay can explain
    # a guest's hold or attempts are timed (a forward's; a refusal's, and the looks of the
    # guest it aims at): its clock is measured too (forwardcheck.skew), against the host's
    # listener on the management path; not where that is the guest's own loopback (a Vagrant
    # VirtualBox inventory through a forwarded port)
    if not ipaddress.ip_address(ends.mgmt_host_ip).is_loopback:
        clock = {"target": ends.mgmt_host_ip, "port": ends.host_listener_port}
        for c in checks:
            if c.probe.get("forward") or refusals.guest_aimed_at(c.probe):
                c.probe["clock"] = clock
    return checks


def forward_of(lab: Lab, pf) -> dict:
    """What the guest side of a forward needs (provisioner/forwardcheck.py): which VM holds
    which port on which NIC."""
    nic = next(n for n in lab.vm(pf.vm).nics if n.network == pf.network)
    # the hold's key: a forward's name is unique on its network only (two networks' unnamed
    # first forwards are both pf0), and one VM may hold forwards of several networks
    return {"vm": pf.vm, "guest_port": pf.guest_port, "proto": pf.proto, "mac": nic.mac,
            "name": f"{pf.network}:{pf.name}"}


def link_controls(cells: list[Check]) -> None:
    """A UDP probe that meets silence is a "fail" only when the listener is known to be up
    (vnet_probe.settle_silence): each negative UDP cell names, as "confirmed_by", the positive
    cells that probe the same "listener" (ids are positions in `cells`, as verify runs them)."""
    positives: dict[str, list[str]] = {}
    for i, c in enumerate(cells):
        if c.probe.get("proto") == "udp" and c.probe.get("listener") and c.expected == "pass":
            positives.setdefault(c.probe["listener"], []).append(str(i))
    for c in cells:
        if c.probe.get("proto") == "udp" and c.expected == "fail" and c.probe.get("listener"):
            c.probe["confirmed_by"] = positives.get(c.probe["listener"], [])


def hardware_cells(lab: Lab, ends: Endpoints, reason: str | dict[str, str] | None = None,
                   backend: Backend = Backend.LIBVIRT) -> list[Check]:
    """The cells of every NIC whose model needs hardware, observed "skipped": for a lab that
    was not booted because this host lacks the hardware. `reason` (what doctor found, for
    all NICs or per VM name) goes into each cell's detail; by default, what the model needs."""
    cells = build(lab, backend, ends)
    hardware = [(vm, nic) for vm in lab.vms for nic in vm.nics
                if nics.NIC_MODELS[nic.model].needs_hardware]
    owned: dict[int, tuple] = {}

    def claim(vm, nic, cell):
        owned.setdefault(id(cell), (vm, nic, cell))
    # A cell belongs first to the NIC that runs it (a guest probe bound to its MAC), then to
    # the NIC it targets (host/Internet probes to its address, port forwards to its VM).
    for vm, nic in hardware:
        for c in cells:
            if c.network == nic.network and c.runner == f"guest:{vm.name}" and \
                    nic.mac in (c.probe.get("bind_mac"), c.probe.get("mac")):
                claim(vm, nic, c)
    for vm, nic in hardware:
        ip = str(nic.ip.ip) if nic.ip is not None else None
        for c in cells:
            if c.network == nic.network and ((ip is not None and c.probe.get("target") == ip) or
                                             (c.kind == "port_forward" and
                                              c.target.split(":", 1)[0] == vm.name)):
                claim(vm, nic, c)
    for vm, nic in hardware:
        if not any(c.kind == "nic_model" and n is nic for _, n, c in owned.values()):
            model = nics.NIC_MODELS[nic.model]
            cell = Check("nic_model", nic.network, lab.network(nic.network).mode, vm.name,
                         f"{nic.mac} {nic.model}", "pass", f"guest:{vm.name}",
                         {"mac": nic.mac, "driver": model.guest_driver})
            owned[id(cell)] = (vm, nic, cell)
    result = []
    for vm, nic, cell in owned.values():
        why = (reason.get(vm.name) if isinstance(reason, dict) else reason) \
            or nics.NIC_MODELS[nic.model].needs_hardware
        cell.observed, cell.detail = SKIPPED, f"skipped: no hardware ({why})"
        result.append(cell)
    order = {id(c): i for i, c in enumerate(cells)}
    return sorted(result, key=lambda c: order.get(id(c), len(order)))


GREEN, RED, NOTHING_VERIFIED = "green", "red", "nothing verified"


def tally(cells: list[dict]) -> dict[str, int]:
    """How many of a result's cells (the JSON dicts) are ok, red and skipped."""
    skipped = sum(c["observed"] == SKIPPED for c in cells)
    ok = sum(bool(c["ok"]) and c["observed"] != SKIPPED for c in cells)
    return {"ok": ok, "red": len(cells) - ok - skipped, "skipped": skipped}


def verdict(cells: list[dict]) -> str:
    """green: every probed cell as expected, and at least one was probed; red: any cell
    not as expected; nothing verified: no cell at all, or every cell skipped."""
    counts = tally(cells)
    if counts["red"]:
        return RED
    return GREEN if counts["ok"] else NOTHING_VERIFIED


def booted_ok(cells: list[dict]) -> bool:
    """Whether a booted lab's result (the JSON cells) is green: every cell probed and as
    expected, at least one. A skipped cell there is a check the lab asked for and vnet could
    not make (a declared Internet check outside a sandbox): not proven, so not green."""
    return verdict(cells) == GREEN and not any(c["observed"] == SKIPPED for c in cells)


def result_ok(cells: list[Check], booted: bool = True) -> bool:
    """Whether a lab's cells add up to a kept promise. A skipped cell is not a failure only
    when the lab was never booted (no hardware); in a booted lab every cell must match."""
    return all(c.ok or (c.skipped and not booted) for c in cells)
