"""`vnet capture LAB VM[:NIC]` (issue 18): watch one NIC of a running lab from the host side,
whatever the backend. The driver says where (Driver.capture_point); host/capture.py runs
tcpdump there, or the hypervisor traces the NIC itself (VirtualBox's nictrace)."""
from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..drivers.base import Driver
from ..errors import LabFileError, NotFound, Unsupported
from ..host import capture, state

SPEC_RE = re.compile(r"([^:]+)(?::(\d+))?")


@dataclass(frozen=True)
class Request:
    lab: str
    vm: str
    nic: int
    pcap: str                     # "-" streams to stdout
    bpf: str = ""
    count: int | None = None
    duration: float | None = None


def parse_spec(spec: str) -> tuple[str, int]:
    """VM[:NIC] -> (vm, nic index); NIC defaults to 0 (the lab file's first NIC)."""
    m = SPEC_RE.fullmatch(spec)
    if not m:
        raise LabFileError("VM[:NIC]", f"{spec!r} is not VM or VM:NIC (NIC: the index of the "
                           f"VM's NIC in the lab file, from 0)")
    return m.group(1), int(m.group(2) or 0)


def default_pcap(driver: Driver, lab: str, vm: str, nic: int) -> Path:
    """Without -w: the lab's own directory (state.lab_dir, checked), one file per NIC."""
    return capture.pcap_path(state.lab_dir(driver.target, lab) / f"capture-{vm}-{nic}.pcap")


def run(driver: Driver, req: Request, say: Callable[[str], None],
        stdout: int | None = None) -> dict:
    """Capture until --count frames, --duration seconds or Ctrl-C; returns what was written.
    Everything is checked (the NIC, the filter, the path) before anything starts."""
    point = driver.capture_point(req.lab, req.vm, req.nic)
    if point.interface is None:
        return _hypervisor_trace(driver, req, point, say)
    capture.check_filter(req.bpf)
    work_dir = state.lab_dir(driver.target, req.lab)    # the lab's: made by its `up`, not here
    if not work_dir.is_dir():
        raise NotFound(f"lab {req.lab} has no state directory ({work_dir})",
                       hint="vnet list shows the labs")
    cap = capture.start(point, req.pcap, work_dir, req.bpf, req.count,
                        stdout=stdout if req.pcap == "-" else None)
    try:
        say(f"capturing on {point.label}"
            + (f" in namespace {point.netns}" if point.netns else "")
            + f" -> {'stdout' if req.pcap == '-' else req.pcap}"
            + f" (listening after {cap.started_in * 1000:.0f} ms); Ctrl-C stops")
        cap.wait(req.duration)
    except KeyboardInterrupt:
        pass           # the usual way to end a capture: stop it and keep the file
    finally:
        summary = cap.stop()
    frames = summary["tcpdump"].get("captured")
    say(f"{frames if frames is not None else 'some'} frames captured"
        + (f", {summary['bytes']} bytes in {req.pcap}" if "bytes" in summary else ""))
    return summary


def _hypervisor_trace(driver: Driver, req: Request, point, say) -> dict:
    """VirtualBox writes the whole trace to a file itself: no filter, count or stream."""
    for flag, given in (("--filter", req.bpf), ("--count", req.count), ("-w -", req.pcap == "-")):
        if given:
            raise Unsupported(f"{flag} is not available for {point.label}: the hypervisor "
                              f"writes every frame to a file itself; filter when reading it "
                              f"(wireshark -Y, tcpdump -r FILE FILTER)")
    driver.nic_trace(req.lab, req.vm, req.nic, req.pcap, True)
    say(f"capturing on {point.label} -> {req.pcap}; Ctrl-C stops")
    began = time.monotonic()
    try:
        while req.duration is None or time.monotonic() - began < req.duration:
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        driver.nic_trace(req.lab, req.vm, req.nic, req.pcap, False)
    say(f"trace written to {req.pcap}")
    return {"pcap": req.pcap, "interface": None}
