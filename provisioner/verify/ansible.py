"""The guests' side of a verify run: one ansible-runner run of playbooks/verify.yml over every
guest, each guest running its own cells through the probe module (playbooks/library/
vnet_probe.py) and returning {"probes", "drivers", "forwards"}."""
from __future__ import annotations

import os
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Callable

from ..host.netns import run_in_netns
from ..host.ssh import close_masters, control_dir, open_masters, stop_masters
from ..host.paths import state_root
from ..host.state import Target, lab_dir
from ..lab.model import Lab
from ..resources import data_dir
from . import earlyrun, refusals, tunnelcells

PYTHON_IN_GUEST = "/usr/bin/python3"
ANSIBLE_TIMEOUT = 180      # a whole run; one probe module call takes a few seconds
PROBE_TASK = "Probe every cell from this guest"     # playbooks/verify.yml: the timed task
# What the guests' cells are made of (playbooks/action_plugins/vnet_gate.py keeps the same list)
CELL_VARS = ("vnet_probes", "vnet_nic_macs", "vnet_forwards", "vnet_failovers",
             "vnet_tunnels_file", "vnet_listening")


def run_guests(lab: Lab, target: Target, cells, inventory, progress,
               holds: dict[str, list[dict]] | None = None,
               stop: Path | None = None,
               playbook: Callable[[str, str, dict, dict], dict] | None = None) -> dict[str, dict]:
    """One ansible-runner run over all guests; returns {vm: module result}. `inventory`: the
    run's verify.run.Inventory; `holds`: the forwards each guest holds open meanwhile
    (forwardcheck.guest_holds); `stop`: the file that tells the host-side forward probes that
    the guests' run has ended; `playbook`: what runs it (run_playbook; a test passes a fake)."""
    hosts = {}
    tunnel_files = tunnelcells.write_guest_files(lab, inventory.work_dir)
    watched = refusals.watched(cells)
    # a guest that lists its sockets has its clock measured too: the lists are timed
    clock = next((c.probe["clock"] for c in cells if c.probe.get("clock")), None)
    for vm in lab.vms:
        mine = [(i, c) for i, c in enumerate(cells) if c.runner == f"guest:{vm.name}"]
        hosts[vm.name] = {
            **inventory.hosts.get(vm.name, {}),
            "vnet_probes": [dict(c.probe, id=str(i)) for i, c in mine
                            if c.kind != "nic_model" and not c.probe.get("failover")],
            "vnet_nic_macs": [c.probe["mac"] for _, c in mine if c.kind == "nic_model"],
            "vnet_forwards": (holds or {}).get(vm.name, []),
            # the ports whose refusals this guest's sockets vouch for (verify/refusals.py)
            "vnet_listening": dict(watched[vm.name], clock=clock) if vm.name in watched else {},
            # a second task, after every guest's probes: a cut link must disturb no other cell
            "vnet_failovers": [dict(c.probe, id=str(i)) for i, c in mine
                               if c.probe.get("failover")],
            **({"vnet_tunnels_file": tunnel_files[vm.name]} if vm.name in tunnel_files else {}),
        }
    early = earlyrun.take(early_key(target, lab.name))
    if early is not None and (playbook or run_playbook) is not run_playbook:
        early.call_off()          # a test's fake playbook runs instead
        early = None
    if early is not None:         # started while the guests booted: hand it their cells
        progress(f"handing {len(hosts)} guest(s) to the Ansible run started during the boot")
        results = early.hand_over({vm: {k: v for k, v in h.items() if k in CELL_VARS}
                                   for vm, h in hosts.items()})
    else:
        progress(f"running Ansible on {len(hosts)} guest(s)")
        env = ansible_env(target, lab.name, len(hosts))
        if unneeded := unneeded_tasks(hosts):
            env["ANSIBLE_SKIP_TAGS"] = unneeded        # --skip-tags
        args = (stop, playbook or run_playbook, str(inventory.work_dir / "ansible"),
                playbook_path(), inventory_data(hosts), env)
        results = run_in_netns(target.netns, run_playbook_then_stop, *args) if target.netns \
            else run_playbook_then_stop(*args)
    failed = [vm for vm in hosts if vm not in results]
    if failed:
        progress(f"Ansible reached no result on {', '.join(failed)}; "
                 f"see {inventory.work_dir / 'ansible'}/artifacts")
    return results


def unneeded_tasks(hosts: dict[str, dict]) -> str:
    """The tags of verify.yml's tasks no guest needs, for --skip-tags (ANSIBLE_SKIP_TAGS): a
    skipped task still costs the controller a round over every host."""
    needed = {"tunnels": any("vnet_tunnels_file" in h for h in hosts.values()),
              "failovers": any(h.get("vnet_failovers") for h in hosts.values()),
              "listing": any((h.get("vnet_listening") or {}).get("after")
                             for h in hosts.values())}
    return ",".join(tag for tag, wanted in needed.items() if not wanted)


def start_early(lab_name: str, target: Target, inventory) -> None:
    """Start the lab's run now, while its guests boot (verify/earlyrun.py): its first task
    waits until run_guests hands each guest its cells. inventory: verify.run.Inventory."""
    gate = inventory.work_dir / "ansible" / "gate"
    hosts = {vm: {**h, "vnet_gate_dir": str(gate)} for vm, h in inventory.hosts.items()}
    # the host-side forward probes stop on this file (verify/run.py), as after any run
    args = (inventory.work_dir / "forwards.stop", run_playbook,
            str(inventory.work_dir / "ansible"), playbook_path(), inventory_data(hosts),
            ansible_env(target, lab_name, len(hosts)))
    timeout = earlyrun.GATE_TIMEOUT + ANSIBLE_TIMEOUT       # the boot counts in it

    def run() -> dict:
        return run_in_netns(target.netns, run_playbook_then_stop, *args, timeout=timeout,
                            masters=False) if target.netns \
            else run_playbook_then_stop(*args, timeout=timeout, masters=False)
    earlyrun.start(early_key(target, lab_name), gate, run)


def cancel_early(target: Target, lab_name: str) -> None:
    earlyrun.cancel(early_key(target, lab_name))


def early_key(target: Target, lab_name: str) -> str:
    return str(lab_dir(target, lab_name))


def playbook_path() -> str:
    return str(data_dir("playbooks") / "verify.yml")


def inventory_data(hosts: dict[str, dict]) -> dict:
    return {"all": {"hosts": hosts, "vars": {"ansible_python_interpreter": PYTHON_IN_GUEST}}}


def ansible_env(target: Target, lab_name: str, host_count: int) -> dict[str, str]:
    return {"ANSIBLE_HOST_KEY_CHECKING": "False", "ANSIBLE_PIPELINING": "True",
            "ANSIBLE_SSH_TRANSFER_METHOD": "piped", "ANSIBLE_REMOTE_TMP": "/tmp/.ansible",
            "ANSIBLE_GATHERING": "explicit", "ANSIBLE_RETRY_FILES_ENABLED": "False",
            "ANSIBLE_LIBRARY": str(data_dir("playbooks") / "library"),
            "ANSIBLE_ACTION_PLUGINS": str(data_dir("playbooks") / "action_plugins"),
            "ANSIBLE_FORKS": str(max(5, host_count)),
            "ANSIBLE_SSH_ARGS": "-o ControlMaster=auto -o ControlPersist=30s "
                                "-o UserKnownHostsFile=/dev/null -o StrictHostKeyChecking=no",
            # Masters of this lab only: another sandbox reuses the same guest addresses, and a
            # master left from it would carry this run's SSH into a namespace that is gone.
            "ANSIBLE_SSH_CONTROL_PATH_DIR": str(control_dir(target, lab_name)),
            # vnet's own, never ~/.ansible: under `sudo -E` that is the user's home, where
            # root-owned files would break the user's own Ansible runs
            "ANSIBLE_HOME": str(state_root() / "ansible"),
            "ANSIBLE_LOCAL_TEMP": str(state_root() / "ansible" / "tmp"),
            "ANSIBLE_NOCOLOR": "True"}


def run_playbook_then_stop(stop: Path | None, playbook: Callable[..., dict], *args,
                           **kw) -> dict:
    """The playbook run, then the stop file, from the process that ran it. Why not from the
    caller: the host-side probe processes were forked while this one's result pipe was open,
    so they hold its write end, and the caller sees the result only once they have ended, which
    they do on the stop file."""
    try:
        return playbook(*args, **kw)
    finally:
        if stop is not None:
            stop.touch()


def run_playbook(private_dir: str, playbook: str, inventory: dict, env: dict,
                 timeout: float = ANSIBLE_TIMEOUT, masters: bool = True) -> dict:
    """masters: open the guests' SSH masters beside ansible-playbook's start (not for a run
    started while the guests boot: they could not answer yet)."""
    import ansible_runner     # heavy: loaded only when guests are really probed

    # ansible-playbook sits beside this interpreter (the venv), which may not be on PATH.
    bindir = str(Path(sys.executable).parent)
    os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")
    Path(private_dir).mkdir(parents=True, exist_ok=True)
    began = time.time()
    sockets = Path(env["ANSIBLE_SSH_CONTROL_PATH_DIR"])
    early: list = []
    if masters:
        hosts, early = open_masters(inventory.get("all", {}).get("hosts", {}), sockets)
        inventory = {**inventory, "all": {**inventory.get("all", {}), "hosts": hosts}}
    # This run's env, never an earlier run's: ansible-runner writes env/envvars only where the
    # file is missing and then reads the file, so the lab's first run's env stuck (its
    # ANSIBLE_SKIP_TAGS skipped a task a later run needed). No file, and none left over.
    (Path(private_dir) / "env" / "envvars").unlink(missing_ok=True)
    try:
        run = ansible_runner.run(private_data_dir=private_dir, playbook=playbook,
                                 inventory=inventory, envvars=env, quiet=True, rotate_artifacts=3,
                                 timeout=timeout, suppress_env_files=True)
    finally:
        try:
            stop_masters(early)
        finally:
            close_masters(sockets)
    results: dict[str, dict] = {}
    for event in run.events:
        if event.get("event") == "runner_on_ok":
            data = event["event_data"]
            res = data.get("res", {})
            if "probes" in res:        # one result per task (probes, then bond failovers)
                got = results.setdefault(data["host"], {"probes": {}, "drivers": {},
                                                        "forwards": {}})
                for key in ("probes", "drivers", "forwards"):     # the rest: one of each
                    got[key].update(res.get(key, {}))
                if "tunnels" in res:   # what vnet_tunnel built (tunnelcells.annotate), passed
                    # on by the probe task: vnet_tunnel's own result is hidden (no_log)
                    got.setdefault("tunnels", {}).update(res["tunnels"])
                if "timing" in res:    # the probe task's (the failovers' comes second)
                    got.setdefault("timing", {}).setdefault("module", res["timing"])
                if res.get("clock"):   # the guest's clock against the host's (forwardcheck)
                    got.setdefault("clock", res["clock"])
                if res.get("listening"):   # its listening sockets, first and last (refusals):
                    # a later task's list (every guest's probes done) is the run's last
                    seen = got.setdefault("listening", res["listening"])
                    seen["last"] = res["listening"].get("last")
    for host, timing in run_timings(run.events, began, time.time()).items():
        if host in results:
            results[host].setdefault("timing", {}).update(timing)
    return results


def run_timings(events, began: float, ended: float) -> dict[str, dict]:
    """Where one Ansible run's seconds went, per host, from ansible-runner's event times:
    controller_start_s (the run's start to the play's first task: ansible-playbook's own
    start-up, inventory and playbook), probe_task_s (the probe task on this host: SSH, the
    module's transfer, Python in the guest, the probes), wrapup_s (the host's last result to
    the run's end)."""
    def at(event) -> float:
        return datetime.fromisoformat(event["created"]).timestamp()

    events = list(events)         # ansible-runner's is a generator: read once
    tasks = [at(e) for e in events if e.get("event") == "playbook_on_task_start"]
    if not tasks:
        return {}
    found: dict[str, dict] = {}
    starts: dict[str, float] = {}
    last: dict[str, float] = {}
    for event in events:
        data = event.get("event_data", {})
        host = data.get("host")
        if not host or data.get("task") != PROBE_TASK:
            continue
        if event.get("event") == "runner_on_start":
            starts[host] = at(event)
        elif event.get("event") in ("runner_on_ok", "runner_on_failed",
                                    "runner_on_unreachable") and host in starts:
            found[host] = {"probe_task_s": round(at(event) - starts[host], 3)}
            last[host] = at(event)
    for host, timing in found.items():
        timing.update(controller_start_s=round(min(tasks) - began, 3),
                      wrapup_s=round(ended - max(last.values()), 3))
    return found
