"""The cells of bonds and router VMs (issue 17), as data like the rest of checks.py.

- A bond is probed like a NIC: its cells are bound to the bond (its MAC; the guest's members
  share it, and vnet_probe picks the interface that is no bond's member), its members get none.
- `route`: a VM reaches a VM on a subnet behind a router VM, bound to the NIC that shares a
  network with the router (expected pass: vnet added the route and the router forwards).
- `bond_failover` (active-backup bonds): in a second task of the playbook (after every guest's
  other probes, so a cut disturbs no other cell: one more Python start on a bonded VM only),
  vnet_probe probes over the bond, asks for the cut on the console (VNET-CUT), vnet
  (LinkCutter, verify/run.py) cuts the active member's link through the driver, the guest
  probes until the new active member answers, and vnet restores the link after Ansible.
"""
from __future__ import annotations

import re
import threading
import time
from dataclasses import replace
from pathlib import Path

from ..lab import links
from ..lab.defaults import ECHO_PORT
from ..lab.model import Lab, Nic
from . import servedon

CUT_RE = re.compile(r"VNET-CUT (\S+) (\S+) (\S+)")
FAILOVER_WAIT = 30.0        # how long the guest waits for vnet's cut
OUTAGE_MAX = 10.0           # how long after the cut a probe must pass again


def probed_nics(lab: Lab, network: str) -> list:
    """lab.nics_on(network), with each bond standing for its members: the first member's NIC
    with the bond's address (its MAC is the bond's)."""
    result = []
    for vm, nic in lab.nics_on(network):
        if nic.bond is None:
            result.append((vm, nic))
            continue
        bond = next(b for b in vm.bonds if b.name == nic.bond)
        if nic.mac == bond.mac:
            result.append((vm, replace(nic, ip=bond.ip)))
    return result


def _via_nic(lab: Lab, vm, route) -> Nic | None:
    """The NIC (or bond) of `vm` on the subnet of the route's next hop."""
    for net in lab.networks:
        if net.subnet is not None and route.via in net.subnet:
            for owner, nic in probed_nics(lab, net.name):
                if owner is vm:
                    return nic
    return None


def link_cells(lab: Lab, ends, make) -> list:
    """The route and bond_failover cells; make(kind, network, source, target, runner, probe)
    builds one Check with expected "pass"."""
    cells = []
    for vm in lab.vms:
        for route, peer, peer_net, ip in links.routed_peers(lab, vm):
            nic = _via_nic(lab, vm, route)
            if nic is None:
                continue
            cells.append(make("route", nic.network, vm.name,
                              f"{peer.name} ({ip.ip}) via {route.router} ({route.via})",
                              f"guest:{vm.name}",
                              dict(target=str(ip.ip), port=ECHO_PORT, expect_name=peer.name,
                                   bind_mac=nic.mac, timeout=3.0)))
        for bond in vm.bonds:
            if bond.mode != "active-backup":
                continue       # the other modes have no active member to fail over from
            far = _failover_target(lab, vm, bond, ends)
            if far is None:
                continue
            target, port, name = far
            who = "host" if name.startswith("host") else name    # host.hv2 answers as a host
            cells.append(make("bond_failover", bond.network, vm.name,
                              f"{who} ({target}) over {bond.name}", f"guest:{vm.name}",
                              dict(target=target, port=port, expect_name=name,
                                   bind_mac=bond.mac, timeout=1.0, answer_timeout=3.0,
                                   failover={"bond": bond.name, "wait": FAILOVER_WAIT,
                                             "outage_max": OUTAGE_MAX})))
    return cells


def _failover_target(lab: Lab, vm, bond, ends):
    """Who answers the failover probes: the host on the bond's network, else a peer VM."""
    net = lab.network(bond.network)
    if net.host_ip is not None:
        return str(net.host_ip), ends.host_listener_port, servedon.host_answer(lab, vm, net)
    for peer, nic in probed_nics(lab, bond.network):
        if peer is not vm and nic.ip is not None:
            return str(nic.ip.ip), ECHO_PORT, peer.name
    return None


HOST_PROBES_MAX = 15.0      # a plain host-side probe ends by then (3 s connect + 10 s answer)


def host_probes_done(threads: list, limit: float = HOST_PROBES_MAX):
    """LinkCutter's gate: the host-side probe threads have ended, or `limit` seconds passed
    (their port-forward probes run until the guests' run ends, and a failover is short)."""
    began = time.monotonic()
    return lambda: not any(t.is_alive() for t in threads) or time.monotonic() - began > limit


class LinkCutter:
    """Watches the consoles of the VMs with bond_failover cells for the guest's VNET-CUT line
    and cuts that member's link through the driver; `stop` restores every cut link. What it
    did is added to the cells' detail by `annotate`."""
    poll = 0.05

    def __init__(self, lab: Lab, cells: list, set_link, serial_log, ready=lambda: True):
        self.lab, self.set_link, self.ready = lab, set_link, ready   # ready: host probes done
        self.vms = sorted({c.source for c in cells if c.kind == "bond_failover"})
        self.logs = {vm: Path(serial_log(vm)) for vm in self.vms}
        self.offsets = {vm: _size(p) for vm, p in self.logs.items()}   # older lines: not ours
        self.cuts: dict[tuple[str, str], dict] = {}     # (vm, bond) -> what was cut
        self.errors: list[str] = []
        self.held = 0                                   # polls a request waited for the host
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)

    def start(self) -> "LinkCutter":
        if self.vms:
            self.thread.start()
        return self

    def _watch(self) -> None:
        while not self.done.wait(self.poll):
            try:
                requests = {vm: self._requests(vm) for vm in self.logs}
                if any(requests.values()) and not self.ready():
                    self.held += 1          # the host's probes still run: no cut yet
                    continue
                for vm, found in requests.items():
                    for bond, mac, token in found:
                        if (vm, bond) not in self.cuts:
                            self._cut(vm, bond, mac.lower(), token)
            except Exception as exc:     # the watcher must keep watching; said in the cell
                self.errors.append(repr(exc))

    def _requests(self, vm: str) -> list[tuple[str, str, str]]:
        try:
            with open(self.logs[vm], "rb") as f:
                f.seek(self.offsets[vm])
                return CUT_RE.findall(f.read().decode(errors="replace"))
        except OSError:
            return []

    def _cut(self, vm: str, bond: str, mac: str, token: str) -> None:
        nics = self.lab.vm(vm).nics
        index = next((i for i, n in enumerate(nics) if n.mac == mac), None)
        cut: dict = {"mac": mac, "index": index, "token": token, "restored": False,
                     "seen": time.monotonic()}
        self.cuts[(vm, bond)] = cut
        if index is None:
            cut["error"] = f"{vm} asked to cut {mac}, which is none of its NICs"
            return
        try:
            self.set_link(vm, index, False)
            cut["at"] = time.time()
        except Exception as exc:     # reported in the cell; the guest then sees no cut
            cut["error"] = str(exc)

    def stop(self) -> None:
        self.done.set()
        if self.thread.is_alive():
            self.thread.join()
        for (vm, _), cut in self.cuts.items():
            if "at" in cut:
                try:
                    self.set_link(vm, cut["index"], True)
                    cut["restored"] = True
                except Exception as exc:
                    cut["error"] = f"restoring the link failed: {exc}"

    def annotate(self, cells: list) -> None:
        for c in cells:
            if c.kind != "bond_failover":
                continue
            bond = c.probe["failover"]["bond"]
            cut = self.cuts.get((c.source, bond))
            if cut is None:
                asked = any(b == bond for b, _, _ in self._requests(c.source))
                why = f"vnet's watcher failed: {self.errors[-1]}" if self.errors else \
                    f"it waited {self.held * self.poll:.1f}s for the host-side probes"
                c.detail += (f"; the console has the guest's VNET-CUT request, but vnet cut "
                             f"nothing ({why})") if asked \
                    else "; vnet saw no VNET-CUT request on the console and cut nothing"
            elif "error" in cut:
                c.detail += f"; vnet could not cut NIC {cut['index']} ({cut['mac']}): " \
                            f"{cut['error']}"
                c.observed = "error" if c.observed == "pass" else c.observed
            else:
                c.detail += f"; vnet cut the link of NIC {cut['index']} ({cut['mac']}) through " \
                            f"the driver and {'restored' if cut['restored'] else 'left'} it"


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
