"""Port forwards are proven with or without a service on the guest port.

The guest side (playbooks/library/vnet_probe.py, ForwardHold) is held by the same single module
run that does the guest's own probes, so it costs no extra Python start on a slow guest: a free
guest port gets a temporary nonce listener on the forward's NIC for the duration of that run; a
port a service already holds is watched by a raw socket that records the nonces arriving there.

The host side (this module; it runs in the host's and the Internet's namespaces, beside the
other host-side probes) keeps probing each forward, with nonces tagged by origin, until the
guests' run has ended: the listeners come up only once Ansible has reached the guest, and the
guest closes a forward as soon as every origin's nonce arrived there. A cell is then:
- pass: the VM the lab names answered this origin's fresh nonce (vnet's temporary listener, or a
  service that speaks vnet's protocol), or the guest saw this origin's nonce arrive at the
  forwarded port while a service held it ("service present");
- SSH forwards (guest port 22): pass only when a login through the forward with the lab's key
  reads the guest's own hostname, so a forward to the wrong VM is red;
- otherwise the last attempt's outcome (fail: nothing connected; error: the wrong endpoint).
"""
from __future__ import annotations

import secrets
import threading
import time
from pathlib import Path
from typing import Callable

from ..host import runner
from ..resources import playbook_code

# between attempts while the guests' run lasts: a hold ends once each origin's nonce came, so
# this is the wait after it opens (0.4 -> 0.15: a 2-VM natnetwork lab 5% sooner, alternated)
RETRY = 0.15
SSH_TIMEOUT = 20.0


def guest_holds(cells: list) -> dict[str, list[dict]]:
    """vm -> the forwards it must hold open: every forward cell's guest side, once, except SSH
    (dropbear is the service there and the login itself proves the VM). A forward's origins
    are the runners of its cells (host, internet, or host.HOST where another host serves it):
    the hold waits for a nonce from each."""
    holds: dict[str, dict[str, dict]] = {}
    for cell in cells:
        fwd = cell.probe.get("forward")
        if cell.kind != "port_forward" or not fwd or cell.probe.get("ssh"):
            continue
        held = holds.setdefault(fwd["vm"], {}).setdefault(fwd["name"], {
            "id": fwd["name"], "port": fwd["guest_port"], "proto": fwd["proto"],
            "mac": fwd["mac"], "origins": [], "clock": cell.probe.get("clock")})
        if cell.runner not in held["origins"]:
            held["origins"].append(cell.runner)
    return {vm: list(by_name.values()) for vm, by_name in holds.items()}


def side_probes(module, specs: list[dict], origin: str, stop: Path,
                login: Callable[[dict, Path], dict] | None = None) -> dict:
    """All probes of one host-side origin (run in its namespace): the forwards, until the
    guests' run ends, beside the others (module: vnet_probe; login: ssh_login, or a fake)."""
    forwards = [s for s in specs if s.get("forward")]
    results: dict = {}
    thread = threading.Thread(target=lambda: results.update(
        probe_all(forwards, origin, stop, module.probe, login)))
    thread.start()
    results.update(module.run_all([s for s in specs if not s.get("forward")]))
    thread.join()
    return results


def with_login(spec: dict, hosts: dict[str, dict]) -> dict:
    """An SSH forward's probe logs in with the key and user Ansible uses for its VM."""
    if spec.get("ssh"):
        host = hosts.get(spec["forward"]["vm"], {})
        spec.update(key=host.get("ansible_ssh_private_key_file", ""),
                    user=host.get("ansible_user", "root"))
    return spec


def probe_all(specs: list[dict], origin: str, stop: Path, probe: Callable[[dict], dict],
              login: Callable[[dict, Path], dict] | None = None) -> dict[str, dict]:
    """Probe every forward from `origin` until `stop` exists (the guests' run has ended);
    runs inside the origin's namespace. -> {id: result with the nonces sent}."""
    results: dict[str, dict] = {}

    def one(spec):
        results[spec["id"]] = ((login or ssh_login)(spec, stop) if spec.get("ssh")
                               else _nonce_until(spec, origin, stop, probe))
    threads = [threading.Thread(target=one, args=(s,)) for s in specs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def _nonce_until(spec: dict, origin: str, stop: Path, probe) -> dict:
    telling = playbook_code("library", "vnet_probe").telling     # the guests' rule, shared
    best, nonces, attempts = None, [], []
    while True:
        last = stop.exists()
        nonce = f"{origin}-{secrets.token_hex(8)}"
        nonces.append(nonce)
        began = time.time()
        # the first pass, else the first error (a leak a later refusal must not hide), else
        # the latest fail (vnet_probe.telling)
        best = telling(best, probe(dict(spec, nonce=nonce)))
        attempts.append([began, time.time()])          # conclude(): was the hold up then?
        # Probing goes on after a pass: a service that speaks vnet's protocol (the echo
        # service on 7) can pass before the guest's watcher of that port starts, and the hold
        # ends only once a nonce of each origin arrived while it watched (tried: stopping at
        # the first pass left the holds waiting FORWARD_LIFETIME, 25 s).
        if last:
            break
        time.sleep(RETRY)
    return dict(best, nonces=nonces, attempts=attempts)


def ssh_login(spec: dict, stop: Path) -> dict:
    """Log in through the forward with the lab's key and read the guest's hostname."""
    argv = ["ssh", "-i", spec["key"], "-p", str(spec["port"]), "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=5", "-o", "ControlMaster=no",
            "-o", "ControlPath=none", f"{spec.get('user', 'root')}@{spec['target']}",
            "cat /proc/sys/kernel/hostname"]
    while True:
        last = stop.exists()
        try:
            out = runner.run(argv, check=False, timeout=SSH_TIMEOUT)
            result = ssh_outcome(out.returncode, out.stdout, out.stderr, spec["expect_name"])
        except Exception as exc:  # noqa: BLE001 - a probe reports, never crashes the others
            result = {"observed": "error", "detail": f"ssh: {exc}"}
        if result["observed"] == "pass" or last:
            return result
        time.sleep(RETRY)


def ssh_outcome(rc: int, stdout: str, stderr: str, expect: str) -> dict:
    name = stdout.strip()
    if rc == 0 and name == expect:
        return {"observed": "pass", "detail": f"logged in through the forward with the lab's "
                                              f"key: hostname {name}"}
    if rc == 0:
        return {"observed": "error", "detail": f"wrong VM: logged in to {name!r}, not {expect}"}
    why = stderr.strip().splitlines()[-1] if stderr.strip() else f"ssh exit {rc}"
    low = why.lower()
    if any(k in low for k in ("connection refused", "timed out", "no route", "unreachable")):
        return {"observed": "fail", "detail": f"ssh: {why}"}
    return {"observed": "error", "detail": f"connected, but no login with the lab's key: {why}"}


def conclude(host: dict, guest: dict | None, origin: str, vm: str,
             clocks: tuple[dict | None, dict | None] = (None, None)) -> tuple[str, str]:
    """One forward cell's (observed, detail) from the prober's attempts (`host`: a host-side
    origin's, or a guest's) and what the guest `vm` saw at the held port (None: the guest gave
    no report). clocks: the prober's and the holder's, against the host's (vnet_probe's
    clock_offset; HOST_CLOCK for a host-side prober; None: not measured)."""
    if host.get("nonces") is None:                        # SSH: no hold involved
        return host["observed"], host["detail"]
    mine = set(host["nonces"])
    arrived = [n for n in (guest or {}).get("nonces", []) if n in mine]
    # a nonce of this prober at the hold proves it listened during an attempt, with no clock
    if host["observed"] == "fail" and (guest is None or guest.get("mode") != "service") \
            and not arrived and not held_during_an_attempt(host, guest, clocks):
        # a refusal with nothing listening says nothing about the path (a flow table...)
        seen = "no hold report" if guest is None else _held_when(guest, clocks)
        return "error", f"{host['detail']}; but {vm}'s temporary listener was not proven up " \
                        f"during the attempts ({seen})"
    if guest is None:
        return host["observed"], host["detail"]
    if guest.get("mode") == "service":
        if host["observed"] == "pass" or arrived:
            how = host["detail"] if host["observed"] == "pass" else \
                f"{origin}'s nonce arrived at {vm}"
            return "pass", f"{guest['detail']}: {how}"       # "service present on ..."
        return host["observed"], f"service present on {vm}, but no nonce from {origin} " \
                                 f"arrived there: {host['detail']}"
    if guest.get("mode") == "listener":
        if arrived and host["observed"] != "pass":     # the probe got there; its answer did not
            return "error", f"{origin}'s nonce arrived at {vm} ({guest['detail']}), but no " \
                            f"answer came back: a one-way path, not isolation ({host['detail']})"
        return host["observed"], f"{host['detail']} ({guest['detail']})"
    return host["observed"], f"{host['detail']} (guest: {guest.get('detail', 'no hold')})"


# The clock of a prober in the host's or the Internet's namespace: the host's own.
HOST_CLOCK = {"offset": 0.0, "error": 0.0}
# Seconds two lab machines' wall clocks may differ when a guest's clock was not measured: a
# guest's clock starts from the RTC's whole seconds (measured: two guests 0.82 and 0.96 s
# behind the host), plus room for its drift over a lab's life.
CLOCK_SKEW_MAX = 1.5
CLOCK_FLOOR = 0.001     # s: the times' printed resolution, and the host's reading of its clock


def skew(clocks: tuple[dict | None, dict | None]) -> tuple[float, float, float]:
    """(prober's offset, holder's offset, margin): what maps each side's wall times onto the
    host's clock, and how far the two may still disagree after that. A measured clock gives
    its offset and its error; an unmeasured one no offset and CLOCK_SKEW_MAX. Two unmeasured
    guests keep CLOCK_SKEW_MAX between them (both start from the RTC's whole seconds); with one
    side measured, that side's offset still applies (dropped, a guest measured 3 s off let a
    refusal from before the listener's start count: a review's find)."""
    prober, holder = clocks
    if prober is None and holder is None:
        return 0.0, 0.0, CLOCK_SKEW_MAX
    def side(clock):
        return (0.0, CLOCK_SKEW_MAX) if clock is None else (clock["offset"], clock["error"])
    (mine, my_error), (theirs, their_error) = side(prober), side(holder)
    return mine, theirs, my_error + their_error + CLOCK_FLOOR


def held_during_an_attempt(host: dict, guest: dict | None,
                           clocks: tuple[dict | None, dict | None] = (None, None)) -> bool:
    """Some attempt of the prober ran, start to end, while the hold listened. The times are
    two machines' wall clocks: each is mapped onto the host's clock with its measured offset,
    and the attempt must lie inside the hold's window shrunk by the margin that is left (skew)
    on both sides. A held port's probes repeat (a host's until the guests' run ends, a guest's
    for declared.HOLD_WINDOW) and the hold of a port no nonce reaches stays its lifetime, so
    a closed path is still proven; an attempt near the window's edges proves nothing."""
    if not guest or guest.get("opened") is None or guest.get("closed") is None:
        return False
    mine, theirs, margin = skew(clocks)
    opened, closed = guest["opened"] + theirs, guest["closed"] + theirs
    return any(opened + margin <= start + mine and end + mine + margin <= closed
               for start, end in host.get("attempts") or [])


def _held_when(guest: dict, clocks: tuple[dict | None, dict | None]) -> str:
    if guest.get("opened") is None:
        return f"hold: {guest.get('detail') or guest.get('mode', 'none')}"
    margin = skew(clocks)[2]
    how = f"clocks measured, to {margin:.3f} s" if margin < CLOCK_SKEW_MAX else \
        f"a clock not measured: {margin:.3f} s allowed"
    return f"no attempt fell between its opening and its closing ({how})"
