"""A lab a test drives: brought up through the backend-neutral ops layer (provisioner/ops),
probed with the matrix's own probe module, reached over the lab's SSH path, verified by the
verifier (provisioner/verify). The pytest plugin (plugin.py) makes and destroys these.

LabOps is the seam: everything that acts on a host goes through it, so a test of the plugin
passes a fake one (override the `vnet_ops` fixture) and nothing real runs."""
from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import VnetError
from ..progress import Progress


@dataclass(frozen=True)
class ProbeResult:
    """One probe's outcome, as a matrix cell has it: observed is pass, fail or error."""
    observed: str
    detail: str


class SshFailed(VnetError):
    """A command run with LiveLab.ssh exited non-zero; the message carries its stderr."""


class LabOps:
    """The real operations: sandbox up/down, lab up/destroy, verify, probe and ssh. Each method
    imports what it needs when called, so loading the plugin costs nothing."""

    def sandbox_is_up(self, name: str) -> bool:
        from ..host import sandbox

        return bool(sandbox.status(name)["up"])

    def sandbox_up(self, name: str, progress: Progress) -> None:
        from ..host import sandbox

        sandbox.up(name, progress)

    def sandbox_down(self, name: str, progress: Progress) -> None:
        from ..host import sandbox

        sandbox.down(name, progress)

    def up(self, lab_file: Path, sandbox: str, backend: str, progress: Progress) -> Any:
        """Load the lab file with the sandbox's defaults and bring it up; returns a handle
        (driver, lab) for the other methods."""
        from .. import ops
        from ..host.sandbox import lab_defaults
        from ..lab import loader

        lab = loader.load(lab_file, lab_defaults(sandbox))
        driver, _ = ops.labs.up(lab, backend, sandbox, None, progress)
        return driver, lab

    def lab_name(self, lab_file: Path, sandbox: str) -> str:
        from ..host.sandbox import lab_defaults
        from ..lab import loader

        return loader.load(lab_file, lab_defaults(sandbox)).name

    def destroy(self, lab_name: str, sandbox: str, progress: Progress) -> None:
        from .. import ops

        ops.labs.find(lab_name, sandbox).destroy(lab_name, progress)

    def verify(self, handle: Any, progress: Progress) -> dict:
        from .. import ops

        driver, lab = handle
        return ops.labs.verify(driver, lab, progress)

    def ssh(self, handle: Any, vm: str, command: str, timeout: float,
            stdin: str | None = None) -> tuple[int, str, str]:
        """Run `command` on vm over the lab's control path (its own key, the management
        address, from the target's network namespace), as Ansible does; (exit, out, err)."""
        from ..host import runner
        from ..host.netns import netns_argv
        from ..host.ssh import guest_argv
        from ..verify.run import lab_inventory

        driver, lab = handle
        inventory = driver.inventory(lab) or lab_inventory(lab, driver.target)
        host = inventory.hosts.get(vm)
        if not host or not host.get("ansible_host"):
            raise VnetError(f"lab {lab.name} has no VM {vm!r} with a control address; "
                            f"VMs: {', '.join(inventory.hosts)}")
        argv = guest_argv(host["ansible_ssh_private_key_file"], host["ansible_host"], command,
                          host.get("ansible_user", "root"), host.get("ansible_port"))
        netns = driver.target.netns
        done = runner.run(netns_argv(netns, argv) if netns else argv, check=False,
                          timeout=timeout, input=stdin)
        return done.returncode, done.stdout, done.stderr

    def probe_specs(self, handle: Any, source: str, target: str, port: int) -> dict:
        """The probe spec the matrix would use for source -> target on their first shared
        network: bound to source's NIC there, to target's address there, expecting target's
        name (the guests' echo listener answers with it)."""
        _, lab = handle
        for net in lab.networks:
            nics = {vm.name: nic for vm, nic in lab.nics_on(net.name)}
            if source in nics and target in nics and nics[target].ip is not None:
                return {"id": "0", "target": str(nics[target].ip.ip), "port": port,
                        "expect_name": target, "bind_mac": nics[source].mac, "timeout": 3.0}
        raise VnetError(f"VMs {source!r} and {target!r} share no network with addresses "
                        f"in lab {lab.name}")


# Runs the probe module (playbooks/library/vnet_probe.py, sent on stdin) in the guest and
# prints run_all's result: the matrix's probe, one spec, no Ansible.
_PROBE_IN_GUEST = ("import json, sys; ns = {'__name__': 'vnet_probe'}; "
                   "exec(sys.stdin.read(), ns); "
                   "print(json.dumps(ns['run_all']([json.loads(sys.argv[1])])))")


class LiveLab:
    """A lab that is up: what a test asks of it."""

    def __init__(self, ops: LabOps, handle: Any, name: str, sandbox: str, progress: Progress):
        self.ops, self.handle, self.name, self.sandbox = ops, handle, name, sandbox
        self._progress = progress
        self.destroyed = False

    def destroy(self) -> None:
        """Destroy the lab now (a test that checks what destroy leaves); the fixture's own
        teardown then skips it, and asking vnet_lab for it again brings it up again."""
        self.ops.destroy(self.name, self.sandbox, self._progress)
        self.destroyed = True

    def ssh(self, vm: str, command: str, timeout: float = 60) -> str:
        """stdout of `command` on vm; raises SshFailed with its stderr when it exits non-zero."""
        code, out, err = self.ops.ssh(self.handle, vm, command, timeout)
        if code != 0:
            raise SshFailed(f"ssh {vm} {command!r} exited {code}: {err.strip() or out.strip()}")
        return out

    def probe(self, source: str, target: str, port: int = 7) -> ProbeResult:
        """One TCP probe from source's NIC to target's address on a network they share, by
        the matrix's probe module: pass (target echoed the nonce), fail (no connection could
        be made) or error (anything else, e.g. the wrong endpoint answered)."""
        from ..resources import data_dir

        spec = self.ops.probe_specs(self.handle, source, target, port)
        script = (data_dir("playbooks") / "library" / "vnet_probe.py").read_text()
        command = f"python3 -c {shlex.quote(_PROBE_IN_GUEST)} {shlex.quote(json.dumps(spec))}"
        code, out, err = self.ops.ssh(self.handle, source, command, 60, stdin=script)
        if code != 0:
            return ProbeResult("error", f"the probe did not run on {source}: {err or out}")
        result = json.loads(out)[spec["id"]]
        return ProbeResult(result["observed"], result["detail"])

    def verify(self) -> "VerifyOutcome":
        """The verify result: the JSON report's dict, with .ok and .checks."""
        return VerifyOutcome(self.ops.verify(self.handle, self._progress))


class VerifyOutcome(dict):
    """The verify result dict, with its verdict as attributes: .ok, .checks."""

    @property
    def ok(self) -> bool:
        return bool(self.get("ok"))

    @property
    def checks(self) -> list[dict]:
        return list(self.get("checks", []))
