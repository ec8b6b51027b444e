"""The `encapsulation` cell (issue 17): what a tunnel puts on the wire, seen from the host.

One cell per tunnel, on the `tunnel` cell's probe from the first endpoint to the other's overlay
address (verify/tunnelcells.py: bound to the tunnel's device, answered by the peer's echo
service): vnet presets that probe's nonce and, while the guests probe, captures on the host
side of the first endpoint's underlay network (its bridge; in a
sandbox, inside the sandbox host's namespace: host/capture.py through the driver's
network_capture_point). After the guests' run, verify/wire.py judges the pcap: the tunnel's
frames with its VNI / GRE protocol and key / ESP SPI / WireGuard port are there, carrying
traffic both ways between the two ends' underlay addresses, and the nonce is inside them
(vxlan, nvgre, gretap, gre: proof the capture saw this probe) or in no frame at all (ipsec,
wireguard: encrypted; there, traffic both ways shows the tunnel carried an exchange while the
probe ran, which another cell's probe through the same tunnel would show as well). The pcap
stays beside the report (or in the lab's state directory), named in the cell's detail and its
JSON ("pcap"), ready for Wireshark.

The cell is ok when that probe passed and the capture agrees; a passing probe whose frames do
not show the promise (the nonce in cleartext, a wrong VNI) is "error": the connection worked,
but not the way the lab said. Riding on the tunnel cell's probe (runner "capture": no probe of
its own) adds no connection to the peer's echo service, which serves every probe of a run.
"""
from __future__ import annotations

import secrets
import time
from pathlib import Path
from typing import Callable

from ..errors import Unsupported, VnetError
from ..host import capture, state
from ..lab.model import Backend, Lab
from . import wire

KIND = "encapsulation"
RUNNER = "capture"           # judged by vnet from the capture: no probe runs for it


def encapsulation_cells(lab: Lab, make: Callable[..., object], cells: list) -> list:
    """make(kind, network, source, target, runner, probe) -> a Check expecting "pass"; `cells`:
    those built so far, whose tunnel cell from each tunnel's first end gets the nonce."""
    made = []
    for tunnel in lab.tunnels:
        near = tunnel.endpoints[0]
        carrier = _carrier(cells, tunnel.name, near.vm)
        if carrier is None:
            continue
        carrier.probe["nonce"] = f"encap-{secrets.token_hex(8)}"   # fresh per verify
        made.append(make(KIND, near.network, near.vm,
                         f"{carrier.probe['expect_name']} ({carrier.probe['target']}) via "
                         f"{tunnel.name} ({tunnel.type})", RUNNER,
                         dict(nonce=carrier.probe["nonce"], tunnel=tunnel.name,
                              encap={"tunnel": tunnel.name, "type": tunnel.type,
                                     "id": tunnel.id, "network": near.network,
                                     "ends": [str(e.underlay_ip) for e in tunnel.endpoints]})))
    return made


def _carrier(cells: list, tunnel: str, vm: str):
    """The tunnel cell whose probe the encapsulation cell rides on."""
    return next((c for c in cells if c.kind == "tunnel" and c.source == vm
                 and c.probe.get("tunnel") == tunnel), None)


def expectation(lab: Lab, lab_dir: Path, probe: dict) -> wire.Expectation:
    """What the wire must show for one cell: the lab's own SPIs and WireGuard port come from
    its state directory (host/tunnelkeys.py), never from the lab file."""
    from ..host.tunnelkeys import tunnel_secrets

    encap = probe["encap"]
    keys = tunnel_secrets(lab_dir).get(encap["tunnel"], {})
    ends = encap.get("ends")
    return wire.Expectation(encap["type"], probe["nonce"].encode(), id=encap["id"],
                            spis=tuple(keys.get("spi", ())), port=keys.get("port"),
                            ends=(ends[0], ends[1]) if ends else None)


class Captures:
    """One host-side capture per underlay network that an encapsulation cell needs, running
    while the guests probe. start() never raises: a capture that cannot start is said in its
    cells (error), and the rest of the verification goes on."""

    def __init__(self, lab: Lab, target: state.Target, backend: Backend, cells: list,
                 pcap_dir: Path, work_dir: Path):
        self.lab, self.target, self.backend = lab, target, backend
        self.cells = [c for c in cells if c.kind == KIND]
        self.all = cells
        self.pcap_dir, self.work_dir = Path(pcap_dir), Path(work_dir)
        self.running: dict[str, capture.Capture] = {}      # network -> its capture
        self.problems: dict[str, str] = {}                  # network -> why no capture
        self.summaries: dict[str, dict] = {}
        self.traces: dict[str, tuple[str, int, str]] = {}   # network -> hypervisor's NIC trace

    def pcap_for(self, network: str) -> Path:
        return capture.pcap_path(self.pcap_dir / f"{self.lab.name}-{network}-underlay.pcap")

    def start(self, progress: Callable[[str], None]) -> "Captures":
        from ..drivers.base import driver_class

        self.driver = driver_class(self.backend)(self.target)
        for network in sorted({c.network for c in self.cells}):
            try:
                self.pcap_dir.mkdir(parents=True, exist_ok=True)
                label = self._start(network, self.pcap_for(network))   # replaced at its stop
                progress(f"capturing the underlay {label} for the encapsulation cells")
            except VnetError as exc:
                self.problems[network] = exc.message
        return self

    def _start(self, network: str, pcap: Path) -> str:
        """tcpdump on the network's bridge; where the backend has none to offer (VirtualBox),
        the near end's NIC on that network: its tap, or the hypervisor's own trace of it."""
        try:
            point = self.driver.network_capture_point(self.lab.name, network)
        except Unsupported as exc:
            vm, nic = self._near_nic(network)
            try:
                point = self.driver.capture_point(self.lab.name, vm, nic)
            except Unsupported:
                raise exc from None          # the network's reason says more
            if point.interface is None:
                self.driver.nic_trace(self.lab.name, vm, nic, str(pcap), True)
                self.traces[network] = (vm, nic, str(pcap))
                return point.label
        cap = self.running[network] = capture.start(point, pcap, self.work_dir)
        return f"{point.label} (listening after {cap.started_in * 1000:.0f} ms)"

    def _near_nic(self, network: str) -> tuple[str, int]:
        vm = next(c.source for c in self.cells if c.network == network)
        return vm, next(i for i, n in enumerate(self.lab.vm(vm).nics) if n.network == network)

    def stop(self) -> None:
        if self.running or self.traces:
            time.sleep(0.2)      # frames of the last answer still on their way through the bridge
        for network, cap in self.running.items():
            try:
                self.summaries[network] = cap.stop()
            except VnetError as exc:
                self.problems.setdefault(network, exc.message)
        for network, (vm, nic, pcap) in self.traces.items():
            try:
                self.driver.nic_trace(self.lab.name, vm, nic, pcap, False)
                self.summaries[network] = {"pcap": pcap}
            except VnetError as exc:
                self.problems.setdefault(network, exc.message)

    def judge(self) -> None:
        """Each encapsulation cell's outcome: its tunnel probe's, then what the capture shows."""
        lab_dir = state.lab_dir(self.target, self.lab.name)
        for cell in self.cells:
            carrier = _carrier(self.all, cell.probe["tunnel"], cell.source)
            cell.observed = carrier.observed if carrier else "error"
            cell.detail = f"the tunnel probe: {carrier.detail if carrier else 'missing'}"
            network = cell.network
            if network in self.problems:
                cell.observed = "error"
                cell.detail = f"{cell.detail}; no capture on the underlay {network}: " \
                              f"{self.problems[network]}"
                continue
            pcap = self.summaries.get(network, {}).get("pcap")
            if pcap is None:             # a passing probe alone proves nothing of the wire
                cell.observed = "error"
                cell.detail = f"{cell.detail}; no pcap of the underlay {network}: the capture " \
                              "left nothing to judge"
                continue
            ok, seen = wire.check(pcap, expectation(self.lab, lab_dir, cell.probe))
            cell.evidence["pcap"] = pcap
            cell.detail = f"{cell.detail}; on the underlay {network}: {seen}; pcap {pcap}"
            if cell.observed == "pass" and not ok:
                cell.observed = "error"


def while_capturing(run: Callable[[], None], lab: Lab, target: state.Target, inventory,
                    cells: list, pcap_dir: Path | None, progress: Callable[[str], None]) -> None:
    """run() (the guests' probes, which record every cell) with the underlays captured, then
    the encapsulation cells judged. inventory: verify.run.Inventory (backend, work_dir)."""
    caps = Captures(lab, target, inventory.backend, cells, pcap_dir or inventory.work_dir,
                    inventory.work_dir)
    if not caps.cells:
        return run()
    try:          # a Ctrl-C while the second capture starts still stops the first
        caps.start(progress)
        run()
    finally:
        caps.stop()
    caps.judge()
