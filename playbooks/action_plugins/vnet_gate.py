"""vnet_gate: hand this guest's cells to the play, on the controller (no SSH, no module).

A run that vnet started while the guests still boot (provisioner/verify/ansible.py, EarlyRun)
waits here until vnet writes `<dir>/<host>.json` (the same variables the inventory carries
otherwise: vnet_probes, vnet_nic_macs, vnet_forwards, vnet_failovers, vnet_tunnels_file,
vnet_listening), or
`<dir>/abort`. Nothing reaches a guest before that: vnet writes the file only once every guest
is ready and its listeners are up, when a run would otherwise start. Without `dir`, the cells
come from the inventory, as they always did. Either way they are returned, so the tasks after
this one read them from one place (the registered result).
"""
import json
import os
import time
from pathlib import Path

from ansible.plugins.action import ActionBase

from provisioner.host import procs      # vnet's own, installed beside ansible-playbook

CELL_VARS = ("vnet_probes", "vnet_nic_macs", "vnet_forwards", "vnet_failovers",
             "vnet_tunnels_file", "vnet_listening")
OWNER, RECORD = "vnet.pid", "ansible.pid"   # in the gate dir (verify/earlyrun.py)
POLL = 0.05                # the gate opens within this of vnet writing the file


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        task_vars = task_vars or {}
        gate = self._task.args.get("dir")
        if not gate:
            result.update({k: task_vars[k] for k in CELL_VARS if k in task_vars})
            return dict(result, changed=False)
        host = task_vars.get("inventory_hostname")
        path, abort = os.path.join(gate, f"{host}.json"), os.path.join(gate, "abort")
        deadline = time.monotonic() + float(self._task.args.get("timeout", 900))
        # this run's ansible-playbook (the worker's parent), recorded so that `vnet destroy`
        # stops it by PID when the vnet that started it was killed before handing over
        playbook = os.getppid()
        procs.write(Path(gate) / RECORD, procs.Record(
            playbook, procs.start_time(playbook), str(Path(gate).absolute().parent)))
        owner = procs.read(Path(gate) / OWNER)
        while not os.path.exists(path):
            if os.path.exists(abort):
                return dict(result, failed=True, msg="vnet called the run off (no verify)")
            if owner is not None and procs.ours(owner) is None:
                return dict(result, failed=True, msg="the vnet that started this run is gone")
            if time.monotonic() > deadline:
                return dict(result, failed=True, msg=f"vnet handed over no cells for {host}")
            time.sleep(POLL)
        with open(path) as f:
            result.update(json.load(f))
        return dict(result, changed=False)
