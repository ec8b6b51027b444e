"""`vnet verify --vagrant DIR`: the reachability matrix of a Vagrant project (vagrant/<mode>/).

Design: DIR holds a Vagrantfile and a `vnet.yaml`, an ordinary vnet lab file (same fields as
lab.yaml) that names the VMs, NICs, models, MACs and addresses. The demo Vagrantfiles read
their machines from that file, so what Vagrant builds and what vnet checks cannot drift apart.
vnet never parses Ruby. The control path comes from Vagrant itself: `vagrant ssh-config`
gives each machine's management address, user and key (run on the sandbox host with
--sandbox). The matrix is then provisioner/verify/run.py's, unchanged: every in-guest probe is
bound to the NIC under test by its MAC, so Vagrant's management NIC (adapter 1, vagrant-libvirt's
management network) carries Ansible's SSH and nothing else.
"""
from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Callable

from ..lab import loader as labfile
from ..host import runner, sandbox
from ..errors import CommandFailed, LabFileError, NotFound, VnetError
from ..lab.model import Lab
from ..host.state import Target

LAB_FILE = "vnet.yaml"
MGMT_NOTE = ("Vagrant's management NIC (adapter 1, {mgmt}) carried only Ansible's SSH; every "
             "in-guest probe was bound to the NIC under test (SO_BINDTODEVICE by MAC), so it "
             "cannot fake a result")


def parse_ssh_config(text: str) -> dict[str, dict[str, str]]:
    """`vagrant ssh-config` output -> {machine: {option (lowercase): value}}."""
    machines: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition(" ")
        value = value.strip().strip('"')
        if key.lower() == "host":
            current = machines.setdefault(value, {})
        elif current is not None:
            current.setdefault(key.lower(), value)
    return machines


def load_lab(project: Path, defaults: labfile.Defaults = labfile.Defaults()) -> Lab:
    path = project / LAB_FILE
    if not (project / "Vagrantfile").is_file():
        raise NotFound(f"{project} has no Vagrantfile", hint="pass the demo's directory, e.g. "
                       "vagrant/natnetwork")
    if not path.is_file():
        raise LabFileError(str(path), f"missing: `vnet verify --vagrant` reads the lab (VMs, "
                           f"NICs, MACs, addresses) from {LAB_FILE} beside the Vagrantfile",
                           hint="see vagrant/README.md")
    return labfile.load(path, defaults)


def ssh_config_argv(sandbox_name: str | None) -> list[str]:
    argv = ["vagrant", "ssh-config"]
    if sandbox_name:
        return sandbox.exec_argv(sandbox.load(sandbox_name), argv)
    return argv


def read_ssh_config(project: Path, sandbox_name: str | None) -> dict[str, dict[str, str]]:
    if runner.which("vagrant") is None:
        raise VnetError("vagrant is not installed", hint="apt-get install vagrant vagrant-libvirt")
    try:
        out = runner.run(ssh_config_argv(sandbox_name), cwd=str(project), timeout=120,
                         env={"VAGRANT_CHECKPOINT_DISABLE": "1"}).stdout
    except CommandFailed as exc:
        raise VnetError(f"`vagrant ssh-config` failed in {project}: {exc.stderr.strip()[-300:]}",
                        hint="are the machines up? `vagrant status` in that directory"
                             + (f" (inside sandbox {sandbox_name})" if sandbox_name else "")) from exc
    return parse_ssh_config(out)


def hosts_from(lab: Lab, machines: dict[str, dict[str, str]]) -> dict[str, dict]:
    """Ansible host vars for each VM of the lab; every VM must be a running Vagrant machine."""
    missing = [vm.name for vm in lab.vms if vm.name not in machines]
    if missing:
        raise NotFound(f"no Vagrant machine for VM(s) {', '.join(missing)} of {lab.source}; "
                       f"Vagrant has: {', '.join(sorted(machines)) or 'none'}",
                       hint="the Vagrantfile's machine names must be vnet.yaml's VM names")
    hosts = {}
    for vm in lab.vms:
        m = machines[vm.name]
        hosts[vm.name] = {"ansible_host": m.get("hostname"), "ansible_port": int(m.get("port", 22)),
                          "ansible_user": m.get("user", "root"),
                          "ansible_ssh_private_key_file": m.get("identityfile")}
    return hosts


def host_address_towards(address: str) -> str:
    """The local address the kernel would use to reach `address` (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((address, 9))
        return s.getsockname()[0]


def inventory(project: Path, lab: Lab, target: Target, machines: dict[str, dict[str, str]]):
    from ..host import state
    from ..host.netns import run_in_netns
    from ..verify.run import Inventory

    hosts = hosts_from(lab, machines)
    first = hosts[lab.vms[0].name]["ansible_host"]
    mgmt_host = run_in_netns(target.netns, host_address_towards, first) if target.netns \
        else host_address_towards(first)
    from ..drivers.boot import read_console

    return Inventory(hosts=hosts, mgmt_host_ip=mgmt_host, source="vagrant ssh-config",
                     work_dir=state.vagrant_run_dir(target, lab.name, project),
                     work_marker=state.VAGRANT_MARKER,
                     # where vagrant/lib/vnet_demo.rb points each machine's serial console
                     console=lambda vm: read_console(project / ".vagrant" / f"{vm}.serial.log"),
                     notes=(MGMT_NOTE.format(mgmt=f"host {mgmt_host}, guests "
                                             + ", ".join(h["ansible_host"] for h in hosts.values())),))



def verify(project: Path, sandbox_name: str | None, progress: Callable[[str], None]) -> dict:
    """The matrix of the Vagrant project in `project`, probed from inside its machines."""
    from ..drivers.libvirt import lifecycle
    from ..verify import run as verifier

    project = project.resolve()
    target = lifecycle.target_for(sandbox_name, None)
    lab = load_lab(project, sandbox.lab_defaults(sandbox_name))
    progress(f"reading `vagrant ssh-config` in {project}")
    started = time.monotonic()
    machines = read_ssh_config(project, sandbox_name)
    timings = {"ssh_config": round(time.monotonic() - started, 2)}
    result = verifier.verify(lab, target, progress, timings=timings,
                             inventory=inventory(project, lab, target, machines))
    result["vagrant_project"] = str(project)
    return result
