"""When a refusal proves a closed path.

A connect refused (a TCP reset, or an ICMP port unreachable) says only that something on the
way answered "nothing here". A firewall that rejects says it, and so does the target's own
stack when nothing listens on the port: then the path is open, and a negative cell confirmed
by that refusal would hide a leak. So a refusal counts as "fail" only where the target's port
listened all along, else it is "error" (the verification principles: a negative cell is
confirmed only by evidence about the network).

Who says the port listened:
- vnet's own listeners (the host's, the Internet's, another host's): each holds its socket for
  its whole life and was ready before any probe, so one still running after the probes
  listened through them (verify/run.py checks, `vnet_listeners_ran`);
- a guest's echo: the guest lists its listening sockets ("listening", vnet_probe.listening) at
  the start and the end of its run, and its console says which socket listened when it booted
  ("VNET-LISTEN tcp/7 <inode>", the image's init and cloud-init's vnet-ready). The same socket
  (inode) at boot and at the end listened from before the first probe to after the last one;
  the same one at the run's start and end only through the guest's own run, which the detail
  says. A socket bound to the target's address, to 0.0.0.0, or to :: (where IPv6 sockets take
  IPv4 too, net.ipv6.bindv6only=0) takes that target's connections.

checks.build marks which cells aim at which listener (probe "listens": {"at": "vnet" | vm}).
"""
from __future__ import annotations

import re

VNET = "vnet"
BOOT_LISTEN_RE = re.compile(r"^VNET-LISTEN (tcp|udp)/(\d+) ([\d ]+)$", re.M)


def boot_sockets(console: str) -> dict[str, set[int]]:
    """{"tcp/7": {inode, ...}} from the last VNET-LISTEN line per port on a guest's console."""
    found: dict[str, set[int]] = {}
    for proto, port, inodes in BOOT_LISTEN_RE.findall(console):
        found[f"{proto}/{port}"] = {int(i) for i in inodes.split()}
    return found


def watched(cells) -> dict[str, list[str]]:
    """{vm: ["tcp/7", ...]}: the ports each guest lists for the refusals of these cells."""
    wanted: dict[str, set[str]] = {}
    for c in cells:
        at = (c.probe.get("listens") or {}).get("at")
        if at and at != VNET:
            wanted.setdefault(at, set()).add(port_key(c.probe))
    return {vm: sorted(keys) for vm, keys in wanted.items()}


def port_key(probe: dict) -> str:
    return f"{probe.get('proto') or 'tcp'}/{int(probe['port'])}"


def takes(bound: str, address: str, v6only: int) -> bool:
    """Whether a socket bound to `bound` takes connections to the IPv4 `address`."""
    return bound in (address, "0.0.0.0", f"::ffff:{address}") or (bound == "::" and not v6only)


def guest_listened(report: dict | None, boot: set[int], probe: dict) -> tuple[str, str]:
    """("always" | "run" | "no", why) for the port `probe` aims at, from the guest's lists
    (vnet_probe.listening) and the sockets its console named at boot."""
    key, address = port_key(probe), probe["target"]
    if not report:
        return "no", "the guest did not list its listening sockets"
    v6only = report.get("v6only", 1)

    def inodes(snapshot) -> set[int]:
        return {inode for bound, inode in (snapshot or {}).get(key, [])
                if takes(bound, address, v6only)}
    first, last = inodes(report.get("first")), inodes(report.get("last"))
    if last & boot:
        return "always", f"the socket that listened on {key} at boot still did at the run's end"
    if first & last:
        return "run", f"one socket listened on {key} from the start to the end of the guest's run"
    if not last:
        return "no", f"nothing listened on {key} for {address} at the end of the guest's run"
    return "no", f"the socket on {key} changed during the run (it was restarted)"


def settle(result: dict, probe: dict, guests: dict[str, dict], boots: dict[str, dict],
           vnet_listeners_ran: bool) -> dict:
    """A refused probe's result, kept as "fail" where its target listened all along (with what
    showed it), else turned into "error"."""
    listens = probe.get("listens")
    if not result.get("refused") or not listens:
        return result
    at = listens["at"]
    if at == VNET:
        held, why = ("always", "vnet's listener ran through every probe") if vnet_listeners_ran \
            else ("no", "a vnet listener ended before the probes did")
        who = "the listener"
    else:
        boot = boots.get(at, {}).get(port_key(probe), set())
        held, why = guest_listened((guests.get(at) or {}).get("listening"), boot, probe)
        who = at
    if held == "no":
        return dict(result, observed="error",
                    detail=f"{result['detail']}, but {why}: the refusal may be {who}'s own "
                           "answer for an idle port, with the path open")
    span = "" if held == "always" else " (probes before it are not covered)"
    return dict(result, detail=f"{result['detail']} on the way: {why}{span}, so the refusal "
                               f"was not {who}'s own")
