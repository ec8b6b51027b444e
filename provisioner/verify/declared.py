"""Declared cells (`checks:` in a lab file, lab/declared.py) as probes, on any network mode.

A declared cell is probed like the mode table's cells, from the NIC under test, with a fresh
nonce and the same three outcomes; it is marked `declared` in the result. It replaces a mode-
table cell that probes the very same thing (same source, target address, port and protocol,
e.g. VM<->VM on the echo port): with an OpenFlow table that is the point.

Who answers at the far end:
- a VM on TCP 7: the image's nonce echo service;
- a VM on any other port: vnet's temporary nonce listener on that NIC, held by the target's own
  probe-module run for its duration (playbooks/library/vnet_probe.py, ForwardHold, as for port
  forwards); a port a service already holds is watched with a raw socket instead, and the cell
  passes when the prober's nonce arrived there ("service present");
- the host or the Internet: one more vnet listener on that port in its namespace.

A held listener comes up when Ansible reaches the target, not before, so a probe from a guest
to a held port repeats with fresh nonces (each tagged with the prober's name) until it passes
or HOLD_WINDOW ends, and a probe from the host repeats until the guests' run ends
(verify/forwardcheck.py). The hold stays up until every prober's nonce arrived (those expected
to fail included) or for vnet_probe's FORWARD_LIFETIME, which is longer than the window. An
`expect: fail` cell on a held port is therefore probed for the whole window, and a refusal
counts as `fail` only when the hold report shows the listener up during one of the attempts
(forwardcheck.conclude); without that proof the cell is `error`. A refusal from the echo or a
vnet listener counts the same way, only while that socket listened (verify/refusals.py, which
the mode table's cells share). UDP silence is `fail` only when a passing declared check of the
same listener confirms it is up (checks.link_controls), as for every UDP cell.
"""
from __future__ import annotations

import time
from pathlib import Path

from ..lab.defaults import ECHO_PORT
from ..lab.model import DeclaredCheck, Lab
from . import refusals, servedon
from .linkcells import probed_nics

HOST, INTERNET = "host", "internet"
# seconds a guest keeps probing a held port (< FORWARD_LIFETIME, 25): 15, and room for the
# hold window's shrinking by the clocks' skew on both sides (forwardcheck.CLOCK_SKEW_MAX)
HOLD_WINDOW = 18.0
KIND = {(False, False): "vm_to_vm", (False, True): "vm_to_host", (True, False): "host_to_vm"}


def _nic(lab: Lab, vm: str, network: str):
    return next(nic for owner, nic in probed_nics(lab, network) if owner.name == vm)


def _kind(check: DeclaredCheck) -> str:
    if INTERNET in (check.source, check.target):
        return "vm_to_internet" if check.target == INTERNET else "internet_to_vm"
    return KIND[(check.source == HOST, check.target == HOST)]


def own_address(vm, nic, peer, peer_nic, net) -> dict:
    """When the peer's address is the prober's own (nat: every VM is 10.0.2.15 on its own
    private NAT), no IP probe leaves the prober (an answer from itself proved nothing: such a
    cell could not go red). The probe asks the NIC's segment who holds the address instead
    (vnet_probe's "arp_claim"): the peer's MAC answering is a shared segment; silence counts
    only while the network's gateway answers on the same NIC."""
    if nic.ip is None or nic.ip.ip != peer_nic.ip.ip or net.host_ip is None:
        return {}
    return {"arp_claim": {"address": str(nic.ip.ip), "peer": peer.name,
                          "peer_mac": peer_nic.mac, "control": str(net.host_ip),
                          "note": f"{nic.ip.ip} is {vm.name}'s own address on its private "
                                  f"{nic.ip.network}"}}


def hold_id(check: DeclaredCheck) -> str:
    """One hold per VM, network and port: the same port checked on two networks of a VM is
    two holds, each on its own NIC, so one NIC's hold never vouches for the other's refusal."""
    return f"declared:{check.network}:{check.proto}/{check.port}"   # no lab name has a ':'


def cells(lab: Lab, ends, make) -> list:
    """One cell per declared check; make(kind, network, source, label, runner, probe,
    expected) builds the Check."""
    found = []
    for check in lab.checks:
        net = lab.network(check.network)
        if INTERNET in (check.source, check.target) and ends.internet_ip is None:
            found.append(_unprobed(make, check, "not in a sandbox: there is no Internet to "
                                                "probe from or to"))
            continue
        elsewhere = _host_side_elsewhere(lab, check, net)
        if elsewhere:
            found.append(_unprobed(make, check, f"the host side of network {net.name} is on "
                                                f"{elsewhere}, where vnet runs no declared "
                                                "listener or prober"))
            continue
        prober = None if check.source in (HOST, INTERNET) else _nic(lab, check.source,
                                                                    check.network)
        probe: dict = {"port": check.port, "timeout": 3.0}
        if check.proto == "udp":
            probe["proto"] = "udp"
        if check.target in (HOST, INTERNET):
            if check.target == INTERNET:
                address = ends.internet_ip
            else:
                address = str(net.host_ip) if net.host_ip else ends.mgmt_host_ip
            # a refusal is a closed path only while this listener ran (verify/refusals.py)
            probe.update(target=address, expect_name=check.target,
                         declared_listener=check.target,
                         listens=refusals.vnet_listener(listener_tag(check.target, check.port)))
        else:
            nic = _nic(lab, check.target, check.network)
            address = str(nic.ip.ip)
            probe.update(target=address, expect_name=check.target)
            if prober is not None and nic.ip.ip == prober.ip.ip:
                # nat: every VM is 10.0.2.15, so no IP probe leaves the prober: the segment
                # is asked who holds the address (layer 2; the port cannot matter there)
                probe.update(own_address(lab.vm(check.source), prober, lab.vm(check.target),
                                         nic, net))
            elif (check.proto, check.port) != ("tcp", ECHO_PORT):
                probe["forward"] = {"vm": check.target, "guest_port": check.port,
                                    "proto": check.proto, "mac": nic.mac,
                                    "name": hold_id(check)}
            else:                  # the image's echo: its socket vouches for a refusal
                probe["listens"] = check.target
        if check.proto == "udp":
            probe["listener"] = f"{check.target}:{address}:udp/{check.port}"
        if prober is None:
            runner = check.source
        else:
            runner = f"guest:{check.source}"
            probe["bind_mac"] = prober.mac
            if "forward" in probe:
                probe.update(until=HOLD_WINDOW, nonce_prefix=check.source)
        label = f"{check.target} ({address}) {check.proto}/{check.port}"
        found.append(make(_kind(check), check.network, check.source, label, runner, probe,
                          check.expect))
    return found


def _host_side_elsewhere(lab: Lab, check: DeclaredCheck, net) -> str | None:
    """The host (not the first) a declared check's host end lives on, or None. The declared
    listeners and probers run on the first host only: a check whose host end is another host
    is skipped (so the lab is not verified) rather than probed at the wrong host."""
    if not lab.hosts:
        return None
    first = lab.hosts[0].name
    if check.target == HOST and check.source not in (HOST, INTERNET):
        reached = servedon.reached_host(lab, lab.vm(check.source), net)
        return reached if reached != first else None
    if check.source == HOST:
        runner = servedon.network_runner(lab, net.name, HOST)
        return runner[len(servedon.HOST_AT):] if runner != HOST else None
    return None


def _unprobed(make, check: DeclaredCheck, why: str):
    cell = make(_kind(check), check.network, check.source, f"{check.target} "
                f"{check.proto}/{check.port}", "none", {}, check.expect)
    cell.observed, cell.detail = "skipped", f"skipped: {why}"
    return cell


def merge(table: list, declared: list) -> list:
    """The mode table's cells without those a declared cell probes too, then the declared."""
    def same(a, b) -> bool:
        return (a.kind, a.network, a.source, a.probe.get("target"), a.probe.get("port"),
                a.probe.get("proto", "tcp")) == (b.kind, b.network, b.source,
                                                 b.probe.get("target"), b.probe.get("port"),
                                                 b.probe.get("proto", "tcp"))
    return [c for c in table if not any(same(c, d) for d in declared)] + declared


def holds(cells: list) -> dict[str, list[dict]]:
    """vm -> the declared ports it holds open (forwardcheck.guest_holds' shape). A hold waits
    for the nonces of every prober, those expected to fail too: closed as soon as the passing
    ones got through, it would refuse a later attempt of a blocked prober, and "refused" is a
    fail that the flow table did not cause."""
    found: dict[str, dict[str, dict]] = {}
    for cell in cells:
        fwd = cell.probe.get("forward")
        if not cell.declared or not fwd:
            continue
        hold = found.setdefault(fwd["vm"], {}).setdefault(fwd["name"], {
            "id": fwd["name"], "port": fwd["guest_port"], "proto": fwd["proto"],
            "mac": fwd["mac"], "origins": [], "clock": cell.probe.get("clock")})
        origin = cell.runner.split(":", 1)[-1]
        if origin not in hold["origins"]:
            hold["origins"].append(origin)
    return {vm: list(by_id.values()) for vm, by_id in found.items()}


def listener_ports(cells: list) -> dict[str, set[int]]:
    """{"host"|"internet": ports} where a declared cell needs one more vnet listener."""
    ports: dict[str, set[int]] = {}
    for cell in cells:
        where = cell.probe.get("declared_listener") if cell.declared else None
        if where:
            ports.setdefault(where, set()).add(cell.probe["port"])
    return ports


def listener_tag(where: str, port: int) -> str:
    """The name of vnet's listener on a declared port (its records: listener-<tag>-<k>.pid)."""
    return f"declared-{where}-{port}"


def start_listeners(cells: list, places: dict[str, tuple[str | None, list[str]]],
                    lab_dir: Path, records: list[Path], spawn) -> None:
    """The host's and the Internet's listeners on declared ports. places: {"host"|"internet":
    (netns, addresses)}; spawn(netns, port, name, address, log, record) starts one and returns
    its process. A port that stays busy turns its cells to error, not the whole run."""
    for where, ports in listener_ports(cells).items():
        if where not in places:
            continue
        netns, addresses = places[where]
        for port in sorted(ports):
            for k, address in enumerate(addresses):
                tag = f"{listener_tag(where, port)}-{k}"
                log, record = lab_dir / f"listener-{tag}.log", lab_dir / f"listener-{tag}.pid"
                log.unlink(missing_ok=True)
                records.append(record)
                proc = spawn(netns, port, where, address, log, record)
                problem = _wait_ready(proc, log, where)
                if problem:
                    for cell in cells:
                        if cell.declared and cell.probe.get("declared_listener") == where \
                                and cell.probe["port"] == port:
                            cell.runner, cell.observed = "none", "error"
                            cell.detail = f"no vnet listener on {where} port {port}: {problem}"


def _wait_ready(proc, log: Path, name: str) -> str | None:
    deadline = time.monotonic() + 10
    ready = f"vnet-listener {name} ready"
    while ready not in (log.read_text() if log.exists() else ""):
        if time.monotonic() > deadline or proc.poll() is not None:
            text = log.read_text().strip() if log.exists() else ""
            return (text.splitlines() or ["it did not start"])[-1][:120]
        time.sleep(0.02)
    return None
