"""vnet's learning-switch OpenFlow controller for `controller: learning` networks (issue 12).

A lab process, like the port proxy: started by `vnet up` once the lab's Open vSwitch bridges
exist and before any guest boots, in the namespace where ovs-vswitchd runs (the sandbox's host
namespace, or the machine's), listening on a root-only unix socket, never on a TCP port another
local user could take first or connect to. OVS connects to it as `unix:PATH`, ovs-vsctl(8)
"Controller Connection Methods", only when PATH lies in its run directory (ovs-vswitchd refuses
other paths: "Not connecting to socket controller ... specify socket in permitted directory",
vswitchd/bridge.c), so the socket is `vnet-<lab>-<id>.ctl` there, recorded in the lab dir and
removed on stop. Recorded by PID in the lab's state
dir the moment it starts, stopped by `destroy`, by a failed `up` and by `sandbox down`.

It is built on os-ken (controller_files/learning_switch.py), an optional dependency
(`pip install 'vnet[openflow]'`): it brings eventlet, oslo.config and more, which only
OpenFlow labs with a controller need. Its packet-ins and the flows it installed are JSON lines in
the lab dir, which the report lists (events()).
"""
from __future__ import annotations

import hashlib
import json
import os
import stat
import sys
import time
from pathlib import Path
from typing import Callable

from . import procs
from ..errors import HypervisorError, VnetError
from .netns import netns_argv

SCRIPT = Path(__file__).resolve().with_name("controller_files") / "learning_switch.py"
PID, EVENTS, LOG, SOCKET = "controller.pid", "controller-events.jsonl", "controller.log", \
    "controller.json"
MACHINE_RUNDIR = "/var/run/openvswitch"    # the distribution's ovs_rundir() unless OVS_RUNDIR
CONNECT_TIMEOUT = 60.0


def learning_bridges(lab) -> list[str]:
    from ..lab.naming import bridge_name

    return [bridge_name(lab.name, n.name) for n in lab.networks
            if n.switch == "openvswitch" and n.controller == "learning"]


def available() -> bool:
    import importlib.util

    return importlib.util.find_spec("os_ken") is not None


def start(lab, target, lab_dir: Path, ovs, progress: Callable[[str], None]) -> int | None:
    """Run the controller for the lab's learning bridges (once) and point them at it; its PID."""
    bridges = learning_bridges(lab)
    if not bridges:
        return None
    if not available():
        raise VnetError(f"lab {lab.name} has a learning controller, which needs os-ken",
                        hint="pip install 'vnet[openflow]' (or pip install os-ken)")
    pid = procs.running(lab_dir / PID, str(lab_dir))
    sock = socket_path(ovs, lab.name, lab_dir)
    if pid is None:
        (lab_dir / SOCKET).write_text(json.dumps({"socket": str(sock)}) + "\n")
        argv = [sys.executable, "-I", str(SCRIPT), str(sock), str(lab_dir / EVENTS)]
        proc = procs.spawn(netns_argv(target.netns, argv) if target.netns else argv,
                           lab_dir / PID, str(lab_dir), log_path=str(lab_dir / LOG))
        pid = proc.pid
        progress(f"learning controller (os-ken) on unix:{sock}, pid {pid}")
    for br in bridges:
        ovs.vsctl("set-controller", br, controller_target(sock))
    _wait_connected(ovs, bridges, lab_dir)
    return pid


def socket_path(ovs, lab: str, lab_dir: Path) -> Path:
    """In the Open vSwitch's run dir (the only place it connects to); the id keeps labs of the
    same name under two state roots apart."""
    rundir = ovs.rundir or os.environ.get("OVS_RUNDIR") or MACHINE_RUNDIR
    return Path(rundir) / f"vnet-{lab}-{_lab_dir_id(lab_dir)}.ctl"


def _lab_dir_id(lab_dir: Path) -> str:
    return hashlib.sha256(str(lab_dir).encode()).hexdigest()[:8]


def _remove_socket(lab_dir: Path) -> None:
    """The socket the lab's record names, only if it is this lab's controller socket: a name
    socket_path gives this lab directory (vnet-<lab>-<its id>.ctl), and a socket itself (a
    symlink is not)."""
    try:
        sock = Path(json.loads((lab_dir / SOCKET).read_text())["socket"])
        is_socket = stat.S_ISSOCK(os.lstat(sock).st_mode)
    except (OSError, ValueError, KeyError, TypeError):
        return
    if sock.name.startswith("vnet-") and sock.name.endswith(f"-{_lab_dir_id(lab_dir)}.ctl") \
            and is_socket:
        sock.unlink()


def controller_target(sock: Path) -> str:
    """What the bridges are pointed at: the controller's unix socket (no port to race for)."""
    return f"unix:{sock}"


def _wait_connected(ovs, bridges: list[str], lab_dir: Path) -> None:
    deadline = time.monotonic() + CONNECT_TIMEOUT
    while True:
        states = [ovs.vsctl("--columns=is_connected", "find", "Controller",
                            f"target=\"{_target(ovs, br)}\"", check=False).stdout
                  for br in bridges]
        if all("true" in s for s in states):
            return
        if procs.running(lab_dir / PID, str(lab_dir)) is None:
            raise HypervisorError(f"the learning controller exited: {_tail(lab_dir / LOG)}")
        if time.monotonic() > deadline:
            raise HypervisorError(f"Open vSwitch did not connect to the learning controller "
                                  f"within {CONNECT_TIMEOUT:g}s: {_tail(lab_dir / LOG)}")
        time.sleep(0.5)


def _target(ovs, br: str) -> str:
    return ovs.vsctl("get-controller", br).stdout.strip()


def _tail(log: Path) -> str:
    try:
        lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "(no log)"
    return " | ".join(lines[-3:]) or "(empty log)"


def stop(lab_dir: Path, progress: Callable[[str], None]) -> int | None:
    """Stop the lab's controller if it still runs as recorded; its PID."""
    pid = procs.stop(lab_dir / PID, progress)
    _remove_socket(lab_dir)
    if pid:
        progress(f"stopped the learning controller (pid {pid})")
    return pid


def events(lab_dir: Path) -> dict | None:
    """{"packet_ins": N, "flows": [installed flows]} from the controller's events, or None."""
    path = lab_dir / EVENTS
    if not path.exists():
        return None
    found = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {"packet_ins": sum(e["event"] == "packet_in" for e in found),
            "flows": [{k: e[k] for k in ("dpid", "priority", "why", "match", "output")}
                      for e in found if e["event"] == "flow"]}
