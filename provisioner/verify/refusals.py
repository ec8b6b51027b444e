"""When a refusal proves a closed path.

A connect refused (a TCP reset, or an ICMP port unreachable) says only that something on the
way answered "nothing here". A firewall that rejects says it, and so does the target's own
stack when nothing listens on the port: then the path is open, and a negative cell confirmed
by that refusal would hide it. So a refusal counts as "fail" only where the target's port
listened while the refused attempt ran, else it is "error" (the verification principles: a
negative cell is confirmed only by evidence about the network).

Who says the port listened (checks.build and declared.cells name it in the probe, "listens"):
- "vnet:<listener>": vnet's own listener processes (the host's, the Internet's, another
  host's, a declared port's). Each holds its socket for its whole life and was ready before
  any probe, so one still running after every probe listened through them (verify/run.py
  checks each listener's records: `listeners_ran`).
- "<vm>": that guest's echo. Its kernel says it: each time the echo starts listening, the
  guest's console gets "VNET-LISTEN tcp/7 <boot id> <uptime> <inode>..." (the image's echod,
  cloud-init's vnet-ready), and the guest lists its listening sockets with their inodes, the
  wall times it looked between, its uptime and boot id (vnet_probe.listening) at the start and
  the end of its probe run, and once more after every guest's probes where another guest
  probes it expecting no connection (playbooks/verify.yml's last task). A socket the last look
  still shows (inodes are not reused while a socket lives) listened from its stamp of this
  boot, or from the first look, until the last look; the refused attempt must lie inside that
  span. Each look is mapped onto the host's clock with the clock its own run measured, the
  prober's attempt with the prober's (forwardcheck.skew), a stamp's uptime onto the guest's
  wall clock by the last look's pair of the two. A socket takes the target's connections when
  bound to its address, to 0.0.0.0, or to :: where IPv6 sockets take IPv4 too
  (net.ipv6.bindv6only=0; a socket's own IPV6_V6ONLY is not in /proc, and vnet's echoes never
  set it).

A host-side prober's attempt runs beside the target's own run: where it ended after the
guest's last look, the guest lists its sockets once more when every host-side probe has
ended (verify/latelook.py).

Known gaps, each an `error`, never a hidden `fail`: a guest without the image's precompiled
probe (a cloud image) gets no such late look; a guest whose console vnet cannot read (a
remote host's that SSH cannot reach) has no stamps, so a refusal before its first look proves
nothing; a guest whose clock vnet cannot measure (a VirtualBox box through Vagrant, reached
over a forwarded loopback port) is allowed forwardcheck.CLOCK_SKEW_MAX of skew, so a refusal
must come that much before its last look.
"""
from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Callable

from . import forwardcheck

VNET = "vnet:"
LISTEN_RE = re.compile(r"^VNET-LISTEN tcp/(\d+) ([0-9a-f-]+) ([\d.]+) ([\d ]*)$", re.M)
UPTIME_STEP = 0.01      # s: /proc/uptime's resolution (a stamp's uptime is rounded down)


@dataclass(frozen=True)
class Evidence:
    """What vouches for the targets' ports in one run: `stamps`, {vm: listen_stamps(console)};
    `listeners_ran(name)`, whether vnet's listener `name` ran through every probe. The default
    vouches for nothing."""
    stamps: dict[str, dict[str, dict[str, dict[int, float]]]] = field(default_factory=dict)
    listeners_ran: Callable[[str], bool] = lambda name: False


def vnet_listener(name: str) -> str:
    return VNET + name


def guest_aimed_at(probe: dict) -> str | None:
    """The VM whose echo the probe aims at (its "listens"), or None: vnet's own listener, or
    nothing named."""
    at = probe.get("listens")
    return at if at and not at.startswith(VNET) else None


def listen_stamps(console: str) -> dict[str, dict[str, dict[int, float]]]:
    """{boot id: {"tcp/7": {inode: uptime}}}: the sockets the console stamped as listening,
    per boot, each with the uptime of its first stamp."""
    found: dict[str, dict[str, dict[int, float]]] = {}
    for port, boot, up, inodes in LISTEN_RE.findall(console):
        for inode in map(int, inodes.split()):
            found.setdefault(boot, {}).setdefault(f"tcp/{port}", {}).setdefault(inode, float(up))
    return found


def watched(cells) -> dict[str, dict]:
    """{vm: {"ports": ["tcp/7", ...], "after": bool}}: the ports each guest lists for the
    refusals of these cells; "after": another guest probes it expecting no connection, so it
    lists them once more when every guest's probes are done (playbooks/verify.yml's last
    task): a guest's own run may end before another's attempt does."""
    wanted: dict[str, dict] = {}
    for c in cells:
        at = guest_aimed_at(c.probe)
        if at and not c.probe.get("arp_claim"):   # an ARP claim has no port to refuse
            mine = wanted.setdefault(at, {"ports": set(), "after": False})
            mine["ports"].add(port_key(c.probe))
            mine["after"] |= c.runner.startswith("guest:") and c.expected == "fail"
    return {vm: dict(w, ports=sorted(w["ports"])) for vm, w in wanted.items()}


def port_key(probe: dict) -> str:
    return f"{probe.get('proto') or 'tcp'}/{int(probe['port'])}"


def takes(bound: str, address: str, v6only: int) -> bool:
    """Whether a socket bound to `bound` takes connections to the IPv4 `address`."""
    return bound in (address, "0.0.0.0", f"::ffff:{address}") or (bound == "::" and not v6only)


def after_last_look(report: dict | None, attempt: list[float] | None, target: dict | None,
                    prober: dict | None = forwardcheck.HOST_CLOCK) -> bool:
    """A refused attempt ([start, end], the prober's wall clock) that ended after the target's
    last look at its sockets, both mapped onto the host's clock (the look's own clock first,
    the target's as measured else): no look vouches for it (verify/latelook.py takes another)."""
    last = (report or {}).get("last")
    if not last or not attempt:
        return False
    mine, theirs, margin = forwardcheck.skew((prober, last.get("clock") or target))
    return attempt[1] + mine + margin + UPTIME_STEP > last["from"] + theirs


def guest_listened(report: dict | None, stamps: dict[str, dict[str, dict[int, float]]],
                   probe: dict, attempt: list[float], prober: dict | None,
                   target: dict | None) -> tuple[bool, str]:
    """(listened through the attempt, what shows it) for the guest port `probe` aims at.
    stamps: listen_stamps of its console; attempt: the prober's [start, end] wall time;
    prober, target: their clocks (a look's own clock first, the target's as measured else)."""
    key, address = port_key(probe), probe["target"]
    report = report or {}
    first, last = report.get("first"), report.get("last")
    if not first or not last:
        return False, "the guest did not list its listening sockets"
    v6only = report.get("v6only", 1)

    def inodes(look) -> set[int]:
        return {inode for bound, inode in look.get(key, []) if takes(bound, address, v6only)}

    def on_host(look) -> tuple[float, float, float]:     # prober's offset, look's, margin
        mine, theirs, margin = forwardcheck.skew((prober, look.get("clock") or target))
        return mine, theirs, margin + UPTIME_STEP
    held = inodes(last)
    if not held:
        return False, f"nothing listened on {key} for {address} when the guest last looked"
    mine, theirs, margin = on_host(last)
    if after_last_look(report, attempt, target, prober):
        return False, f"the attempt ended after the guest's last look at {key} (clocks " \
                      f"{margin:.2f} s apart at most)"
    # how long before the attempt (host clock) a socket of the last look already listened,
    # by what shows it: a stamp of this boot, or the first look
    stamped = stamps.get(last.get("boot", ""), {}).get(key, {})
    before = [(attempt[0] + mine - (last["from"] - (last["uptime"] - stamped[i]) + theirs)
               - margin, "was stamped listening on the console") for i in held if i in stamped]
    if held & inodes(first):
        f_mine, f_theirs, f_margin = on_host(first)
        before.append((attempt[0] + f_mine - (first["to"] + f_theirs) - f_margin,
                       "was in the guest's first look"))
    if before and max(before)[0] >= 0:
        return True, f"the socket on {key} {max(before)[1]}, before the attempt, and still " \
                     "listened after it"
    return False, f"no socket on {key} is seen listening from before the attempt"


def settle(result: dict, probe: dict, prober: str, guests: dict[str, dict],
           evidence: Evidence) -> dict:
    """A refused probe's result, kept as "fail" where its target listened through the refused
    attempt (with what showed it), else turned into "error". prober: the cell's runner;
    guests: the guests' module results."""
    at = probe.get("listens")
    if not result.get("refused") or not at:
        return result
    if ipaddress.ip_address(probe["target"]).is_loopback:
        held, why, who = False, "the target is the prober's own loopback", "the prober"
    elif at.startswith(VNET):
        who = "the listener"
        held = evidence.listeners_ran(at[len(VNET):])
        why = "vnet's listener ran through every probe" if held else \
            "vnet's listener was not running after the probes"
    else:
        who = at
        origin = prober.split(":", 1)[1] if prober.startswith("guest:") else None
        held, why = guest_listened(
            (guests.get(at) or {}).get("listening"), evidence.stamps.get(at, {}), probe,
            result.get("at") or [0.0, float("inf")],
            (guests.get(origin) or {}).get("clock") if origin else forwardcheck.HOST_CLOCK,
            (guests.get(at) or {}).get("clock"))
    if not held:
        return dict(result, observed="error",
                    detail=f"{result['detail']}, but {why}: the refusal may be {who}'s own "
                           "answer for an idle port, with the path open")
    return dict(result, detail=f"{result['detail']} on the way: {why}, so the refusal was not "
                               f"{who}'s own")
