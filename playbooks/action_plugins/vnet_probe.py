"""vnet_probe (controller side): run the guest's probe module in one SSH call where the image
carries it precompiled, and the usual way everywhere else.

The tiny image bakes playbooks/library/vnet_probe.py as bytecode under a path named by a hash
of its source (provisioner/guest/bakedprobe.py). This plugin sends one shell command, the
module's arguments on its stdin: the guest hands them to the warm copy an earlier run of that
bytecode left behind, or runs that exact bytecode, or, lacking it, says so and the module is
sent and run as Ansible always does (a cloud image, an image of another version). The result
is the module's own, either way.
"""
import json

from ansible.plugins.action import ActionBase
from ansible.utils.vars import merge_hash
from ansible.vars.clean import remove_internal_keys

from provisioner.guest import bakedprobe      # vnet's own, installed beside ansible-playbook

PYTHON = "/usr/bin/python3"


class ActionModule(ActionBase):
    TRANSFERS_FILES = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        task_vars = task_vars or {}
        python = task_vars.get("ansible_python_interpreter") or PYTHON
        # the module this task would send (ANSIBLE_LIBRARY): its hash names the bytecode
        with open(self._shared_loader_obj.module_loader.find_plugin("vnet_probe"), "rb") as f:
            source = f.read()
        ran = self._low_level_execute_command(bakedprobe.command(bakedprobe.baked_path(source),
                                                                  python),
                                              in_data=json.dumps(dict(self._task.args)).encode())
        if ran.get("stdout", "").strip() == bakedprobe.MISSING:
            result = merge_hash(result, self._execute_module(task_vars=task_vars))
            self._remove_tmp_path(self._connection._shell.tmpdir)
            return result
        return merge_hash(result, baked_result(ran))


def baked_result(ran: dict) -> dict:
    """The module's JSON from the baked run, or a failure that says what the guest printed."""
    try:
        out = json.loads(ran.get("stdout", ""))
    except ValueError:
        out = None
    if ran.get("rc") != 0 or not isinstance(out, dict):
        why = f"exit {ran.get('rc')}" if ran.get("rc") != 0 else "its answer is not JSON"
        return {"failed": True, "rc": ran.get("rc"),
                "msg": f"the baked probe module failed ({why})",
                "stdout": ran.get("stdout", ""), "stderr": ran.get("stderr", "")}
    remove_internal_keys(out)          # as _execute_module does: no _ansible_* from a guest
    return out
