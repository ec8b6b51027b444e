"""Open vSwitch for OpenFlow networks (issue 12): where its database lives, which datapath its
bridges use, and, in a vnet sandbox, its two daemons.

In a sandbox, ovsdb-server and ovs-vswitchd run in the sandbox's host namespace with private
run, database and log directories under the sandbox's state dir (never /run: the sandbox's
libvirtd mounts a tmpfs there). They start with the sandbox, before its libvirtd, for two
reasons: libvirtd runs `ovs-vsctl` itself to plug a guest's tap into the bridge and finds the
private database only through OVS_RUNDIR in the environment it was started with; and labs of one
sandbox come and go concurrently, so a daemon started by the first lab that needs it would need
its own reference counting. They are recorded by PID (host/procs.py) and `sandbox down` stops
them with the sandbox's other processes. Outside a sandbox vnet uses the machine's running Open
vSwitch (its default run directory) and never starts or restarts it.

Datapath: the kernel datapath needs the kernel's openvswitch module; without it (the machine vnet
is developed on has none) bridges use the userspace datapath, `datapath_type=netdev`. On that
datapath TCP fails while ping works unless checksums are filled in: the tap and veth ends leave
them to an offload the userspace datapath does not do, which
`other_config:userspace-tso-enable=true` (set before ovs-vswitchd starts) handles.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from . import procs, runner
from ..errors import HypervisorError

SCHEMA = Path("/usr/share/openvswitch/vswitch.ovsschema")
KERNEL_MODULE = Path("/sys/module/openvswitch")
DAEMONS = ("ovsdb-server", "ovs-vswitchd")
PID_FILES = ("ovsdb.pid", "vswitchd.pid")        # vnet's records, in the sandbox's state dir
START_TIMEOUT = 20.0


@dataclass(frozen=True)
class Ovs:
    """How vnet's OVS clients reach one Open vSwitch: a private run dir, or the machine's."""
    rundir: str | None = None           # None: the machine's own Open vSwitch

    @property
    def env(self) -> dict[str, str]:
        """For ovs-vsctl/ovs-ofctl (and the sandbox's libvirtd): they find the sockets here."""
        if self.rundir is None:
            return {}
        base = str(Path(self.rundir).parent)
        return {"OVS_RUNDIR": self.rundir, "OVS_DBDIR": f"{base}/db", "OVS_LOGDIR": f"{base}/log"}

    def answers(self) -> bool:
        """An Open vSwitch database answers here (its clients are installed and it runs)."""
        if runner.which("ovs-vsctl") is None:
            return False
        return self.vsctl("--timeout=5", "--no-wait", "show", check=False).returncode == 0

    def vsctl(self, *args: str, check: bool = True) -> runner.Result:
        return runner.run(["ovs-vsctl", "--timeout=20", *args], env=self.env, check=check,
                          timeout=30)

    def ofctl(self, *args: str, check: bool = True, input: str | None = None) -> runner.Result:
        return runner.run(["ovs-ofctl", *args], env=self.env, check=check, input=input,
                          timeout=30)

    def appctl(self, *args: str, check: bool = True) -> runner.Result:
        """ovs-vswitchd's control socket (ofproto/trace): ours sits at a fixed path."""
        where = ["-t", f"{self.rundir}/ovs-vswitchd.ctl"] if self.rundir else []
        return runner.run(["ovs-appctl", *where, *args], env=self.env, check=check, timeout=30)


def datapath(exists: Callable[[str], bool] = os.path.isdir) -> tuple[str, str]:
    """(datapath_type, why) for the bridges vnet makes on this machine (`exists`: how to look
    at /sys, so vnet doctor's fake hosts can answer)."""
    if exists(str(KERNEL_MODULE)):
        return "system", "the kernel has the openvswitch module: the kernel datapath"
    return "netdev", ("this kernel has no openvswitch module, so bridges use the userspace "
                      "datapath (datapath_type=netdev, with userspace-tso-enable so TCP "
                      "checksums are filled in)")


def installed() -> bool:
    return all(runner.which(d) for d in (*DAEMONS, "ovs-vsctl", "ovs-ofctl", "ovsdb-tool")) \
        and SCHEMA.is_file()


# ---------------------------------------------------------------- in a sandbox

def sandbox_ovs(state_dir: Path) -> Ovs:
    return Ovs(rundir=str(state_dir / "ovs" / "run"))


def start(state_dir: Path, netns: str, progress: Callable[[str], None]) -> Ovs | None:
    """ovsdb-server and ovs-vswitchd for one sandbox, in its host namespace; None (and a line
    saying why) when Open vSwitch is not installed: the sandbox then has no OpenFlow networks."""
    from .netns import netns_argv

    if not installed():
        progress("Open vSwitch is not installed: this sandbox has no openvswitch networks "
                 "(apt-get install openvswitch-switch)")
        return None
    ovs = sandbox_ovs(state_dir)
    run, base = Path(ovs.rundir), Path(ovs.rundir).parent
    for d in (run, base / "db", base / "log"):
        d.mkdir(parents=True, exist_ok=True)
    db = base / "db" / "conf.db"
    if not db.exists():
        runner.run(["ovsdb-tool", "create", str(db), str(SCHEMA)])
    sock = run / "db.sock"
    argv = ["ovsdb-server", str(db), f"--remote=punix:{sock}", f"--unixctl={run}/ovsdb.ctl",
            f"--pidfile={run}/ovsdb-server.pid", f"--log-file={base}/log/ovsdb-server.log"]
    # the daemons too: ovs-vswitchd puts each bridge's OpenFlow socket (BR.mgmt) in OVS_RUNDIR
    proc = procs.spawn(netns_argv(netns, argv), state_dir / PID_FILES[0], str(state_dir),
                       log_path=str(base / "log" / "ovsdb-server.out"), env=ovs.env)
    _wait(lambda: sock.exists() and ovs.vsctl("--no-wait", "init", check=False).returncode == 0,
          "ovsdb-server", proc)
    # before ovs-vswitchd starts: it reads this once (see the module docstring)
    ovs.vsctl("--no-wait", "set", "Open_vSwitch", ".", "other_config:userspace-tso-enable=true")
    argv = ["ovs-vswitchd", f"unix:{sock}", f"--unixctl={run}/ovs-vswitchd.ctl",
            f"--pidfile={run}/ovs-vswitchd.pid", f"--log-file={base}/log/ovs-vswitchd.log"]
    proc = procs.spawn(netns_argv(netns, argv), state_dir / PID_FILES[1], str(state_dir),
                       log_path=str(base / "log" / "ovs-vswitchd.out"), env=ovs.env)
    # a change that waits for ovs-vswitchd (no --no-wait) answers once it is up
    _wait(lambda: ovs.vsctl("--timeout=2", "set", "Open_vSwitch", ".",
                            "external_ids:vnet-sandbox=1", check=False).returncode == 0,
          "ovs-vswitchd", proc)
    progress(f"Open vSwitch is up in {netns} ({datapath()[0]} datapath)")
    return ovs


def _wait(check: Callable[[], bool], what: str, proc) -> None:
    deadline, delay = time.monotonic() + START_TIMEOUT, 0.05
    while not check():
        if proc.poll() is not None:
            raise HypervisorError(f"{what} exited with status {proc.returncode}")
        if time.monotonic() > deadline:
            raise HypervisorError(f"{what} did not answer within {START_TIMEOUT:g}s")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.5)


def running(state_dir: Path) -> dict[str, int | None]:
    """{daemon: pid or None} of a sandbox's Open vSwitch."""
    return {d: procs.running(state_dir / f, str(state_dir))
            for d, f in zip(DAEMONS, PID_FILES)}


def env_for_libvirtd(state_dir: Path) -> dict[str, str]:
    """What the sandbox's libvirtd inherits so its own ovs-vsctl calls reach our database."""
    return sandbox_ovs(state_dir).env if os.path.isdir(sandbox_ovs(state_dir).rundir) else {}
