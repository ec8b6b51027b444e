"""The tiny guest's own boot timeline, read from its serial console.

The initramfs init prints "VNET-T kernel <uptime>" when it starts (the kernel is done), the
root's init (guest/files/rootfs/usr/lib/vnet/init) "VNET-T init", "sshd" (port 22 listens),
"links" (every NIC is up), "addr <uptime> <mac>" per address (static, or the DHCP hook's) and
"ready" (just before VNET-READY). Times are the guest's seconds since its kernel started, so
they are free of the host's polling; the benchmark reports them per stage."""
from __future__ import annotations

import re
import statistics

STAMP_RE = re.compile(r"^VNET-T (\w+) (\d+(?:\.\d+)?)\b", re.M)
STAGES = ("kernel", "init", "sshd", "links", "address", "ready")


def timeline(console: str) -> dict[str, float]:
    """{stage: guest uptime in seconds} of one boot; "address" is the last address's time.
    A console with several boots (a reboot) keeps the last one."""
    found: dict[str, float] = {}
    for stage, uptime in STAMP_RE.findall(console):
        if stage == "kernel":           # a new boot starts over
            found = {}
        stage = "address" if stage == "addr" else stage
        value = float(uptime)
        found[stage] = max(value, found.get(stage, value)) if stage == "address" else value
    return {stage: found[stage] for stage in STAGES if stage in found}


def median_timeline(timelines: list[dict[str, float]]) -> dict[str, float]:
    """Per stage, the median over the boots that reached it (rounded to 10 ms)."""
    return {stage: round(statistics.median(values), 2) for stage in STAGES
            if (values := [t[stage] for t in timelines if stage in t])}
