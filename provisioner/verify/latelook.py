"""A guest's listening sockets listed once more, after the host-side probes ended.

A refusal counts only if the target's port listened while the refused attempt ran
(refusals.py), and a guest lists its sockets at the start and the end of its own probe run.
A host-side prober (the host's, the Internet's, another host's) runs beside that run, not
inside it: on a loaded machine its refused attempt can end after the guest's last look, and
the cell was then an `error` ("the attempt ended after the guest's last look"), although
nothing was wrong. So once every host-side probe has ended, each guest such an attempt aimed
at lists its sockets again, through the warm copy its run left (one SSH call, no new Python),
and that later look is the one the refusals are judged by. Only where it is needed: the common
case, attempts that ended before the guest's run did, costs nothing.

A guest without the image's precompiled probe (a cloud image) gets no late look: its cells
stay `error`, never a hidden `fail`.
"""
from __future__ import annotations

import json
from typing import Callable

from ..errors import VnetError
from ..guest import bakedprobe
from ..host import runner
from ..host.netns import netns_argv
from ..host.ssh import guest_argv
from . import refusals

LATE_LOOK_TIMEOUT = 30.0       # s: one SSH connection and a warm run (a loaded TCG guest)


def wanted(cells: list, guests: dict[str, dict], sides: dict[str, dict]) -> dict[str, list[str]]:
    """{vm: ports}: the guests a host-side refused attempt aimed at, where that attempt ended
    after the guest's last look (refusals.after_last_look)."""
    found: dict[str, set[str]] = {}
    for i, cell in enumerate(cells):
        at = refusals.guest_aimed_at(cell.probe)
        result = sides.get(f"{cell.runner}:{i}")
        if at is None or cell.runner.startswith("guest:") or not result \
                or not result.get("refused"):
            continue
        report = (guests.get(at) or {}).get("listening")
        if refusals.after_last_look(report, result.get("at"), (guests.get(at) or {}).get("clock")):
            found.setdefault(at, set()).add(refusals.port_key(cell.probe))
    return {vm: sorted(ports) for vm, ports in found.items()}


def look_again(vm: str, host: dict, netns: str | None, watch: dict,
               run: Callable[..., runner.Result] = runner.run) -> dict | None:
    """The guest's sockets on `watch["ports"]` listed now, with its clock measured against
    `watch["clock"]`, by the image's precompiled probe (its warm copy when one runs): the
    module's "last" look, or None when the guest cannot say (no baked probe, no answer)."""
    key, address = host.get("ansible_ssh_private_key_file"), host.get("ansible_host")
    if not key or not address:
        return None
    source = bakedprobe.probe_source()
    command = bakedprobe.command(bakedprobe.baked_path(source), "/usr/bin/python3")
    argv = guest_argv(key, address, command, host.get("ansible_user", "root"),
                      host.get("ansible_port"))
    try:
        done = run(netns_argv(netns, argv) if netns else argv, check=False,
                   timeout=LATE_LOOK_TIMEOUT, input=json.dumps({"probes": [], "listening": watch}))
        out = json.loads(done.stdout)
    except (VnetError, ValueError):
        return None          # MISSING (no baked probe), or no answer: the cells stay `error`
    look = (out.get("listening") or {}).get("last") if isinstance(out, dict) else None
    return look if isinstance(look, dict) else None
