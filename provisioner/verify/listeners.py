"""vnet's own listeners for one verify run: the host's (on the addresses the probes target)
and, in a sandbox, the Internet's. Each is the probe module's serve() (playbooks/library/
vnet_probe.py) in a process of its own, recorded so the caller stops it even when a later one
fails to start."""
from __future__ import annotations

import socket
import sys
import time
from pathlib import Path
from typing import Callable

from . import checks as checklib
from ..errors import VnetError
from ..host import procs
from ..host.netns import netns_argv
from ..host.state import Target
from ..resources import data_dir

# Runs the probe module's listener on one address: it is loaded by path (runpy), so nothing
# is imported from the caller's directory, and serve() gets the address to bind.
LISTENER_BOOT = ("import runpy, sys; runpy.run_path(sys.argv[1])['serve']"
                 "(int(sys.argv[2]), sys.argv[3], host=sys.argv[4])")


def listener_argv(script: str, port: int, name: str, address: str) -> list[str]:
    return [sys.executable, "-I", "-c", LISTENER_BOOT, script, str(port), name, address]


def listener_addresses(target: Target, cells, port: int) -> list[str]:
    """Where the host-side listener binds. In a sandbox its host namespace is vnet's own: every
    address. Outside, only loopback (QEMU's and VirtualBox's NAT map the guests' 10.0.2.2 to it)
    and the host's own addresses on the lab's networks that the probes target: never the
    machine's other interfaces."""
    if target.netns:
        return ["0.0.0.0"]
    wanted = {c.probe["target"] for c in cells
              if c.kind == "vm_to_host" and c.probe.get("port") == port}
    # a timed hold or attempt measures the guest's clock there (checks.build)
    wanted |= {c.probe["clock"]["target"] for c in cells if c.probe.get("clock")}
    # an impairment cell's baseline runs over the management path (verify/impairment.py)
    wanted |= {c.probe["impair"]["baseline"]["target"] for c in cells
               if c.kind == "impairment" and (c.probe["impair"].get("baseline") or {}).get("target")}
    return ["127.0.0.1", *sorted(a for a in wanted if a != "127.0.0.1" and _bindable(a))]


def _bindable(address: str) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((address, 0))
            return True
        except OSError:      # not an address of this host (a NAT's gateway, say)
            return False


def start_listeners(target: Target, sb, port: int, lab_dir: Path, records: list[Path],
                    host_addresses: list[str], host_name: str = checklib.HOST) -> None:
    """vnet's listeners (the host's, answering as `host_name`, and the Internet's in a
    sandbox); each one's record is appended to `records` the moment it is spawned, for the
    caller to stop."""
    script = str(data_dir("playbooks") / "library" / "vnet_probe.py")
    places = [(target.netns, host_name, a) for a in host_addresses]
    places += [(sb.inet_netns, checklib.INTERNET, "0.0.0.0")] if sb else []
    for i, (netns, name, address) in enumerate(places):
        argv = listener_argv(script, port, name, address)
        log = lab_dir / f"listener-{name}-{i}.log"
        log.unlink(missing_ok=True)
        records.append(lab_dir / f"listener-{name}-{i}.pid")
        proc = procs.spawn(netns_argv(netns, argv) if netns else argv, records[-1], script,
                           log_path=str(log), cwd="/")
        deadline = time.monotonic() + 10
        ready = f"vnet-listener {name} ready"    # not just "ready": "already in use" has it
        while ready not in (log.read_text() if log.exists() else ""):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise VnetError(f"vnet's {name} listener on {address} did not start: "
                                f"{log.read_text()[-200:] if log.exists() else ''}")
            time.sleep(0.02)


def start_declared(target: Target, sb, cells, lab_dir: Path, records: list[Path],
                   port: int) -> None:
    """vnet listeners on the host's and the Internet's declared ports (verify/declared.py):
    where the main host listener binds, and every address of the sandbox's Internet."""
    from . import declared

    script = str(data_dir("playbooks") / "library" / "vnet_probe.py")
    places = {checklib.HOST: (target.netns, listener_addresses(target, cells, port))}
    if sb:
        places[checklib.INTERNET] = (sb.inet_netns, ["0.0.0.0"])

    def spawn(netns, declared_port, name, address, log, record):
        argv = listener_argv(script, declared_port, name, address)
        return procs.spawn(netns_argv(netns, argv) if netns else argv, record, script,
                           log_path=str(log), cwd="/")
    declared.start_listeners(cells, places, lab_dir, records, spawn)


def ran_through(records: list[Path]) -> Callable[[str], bool]:
    """name -> whether every process of vnet's listener `name` still runs (read now, after the
    probes: started and ready before them, a listener holds its socket for its whole life).
    Records are named listener-<name>-<k>.pid (start_listeners, declared.start_listeners)."""
    running: dict[str, bool] = {}
    for record in records:
        name = record.stem.removeprefix("listener-").rsplit("-", 1)[0]
        running[name] = running.get(name, True) and procs.running(record) is not None
    return lambda name: running.get(name, False)
