"""Where one VM of a lab lives, for the per-VM host-side steps (a capture on its tap, its link
cut): in a lab with `hosts:` the VM's own host (the lab's record names each host's libvirt URI
and network namespace, multihost.py), else the target the lab runs on. A network stretched
across hosts has a bridge on each of them and none sees every frame, so a capture of it is
taken on a VM's tap on that VM's host instead (`stretched_refusal`)."""
from __future__ import annotations

from ...errors import Unsupported
from ...host import hostaccess
from ...host.state import Target
from ...lab.hosts import used_hosts
from ...lab.model import Lab


def vm_target(record: dict, lab: Lab, vm: str, default: Target) -> Target:
    host = lab.vm(vm).host
    where = (record.get("hosts") or {}).get(host) if host else None
    if where is None:
        return default
    return Target(uri=where["uri"], sandbox=default.sandbox, netns=where["netns"])


def capture_target(record: dict, lab: Lab, vm: str, default: Target) -> Target:
    """vm_target for a capture on the VM's tap, which runs tcpdump in that host's network
    namespace here: refused for a VM on a remote host, whose tap is not on this machine (the
    same name here would be another interface, not the lab's)."""
    where = vm_target(record, lab, vm, default)
    _remote_capture_refusal(f"VM {vm}", lab.vm(vm).host, where)
    return where


def network_target(record: dict, lab: Lab, network: str, default: Target) -> Target:
    """Where the one bridge of a network that lives on one host is: that host (its home, or the
    host of its VMs), else the target the lab runs on."""
    hosts = used_hosts(lab.network(network), lab.vms) if lab.hosts else []
    where = (record.get("hosts") or {}).get(hosts[0]) if hosts else None
    if where is None:
        return default
    found = Target(uri=where["uri"], sandbox=default.sandbox, netns=where["netns"])
    _remote_capture_refusal(f"network {network}", hosts[0], found)
    return found


def _remote_capture_refusal(what: str, host: str | None, where: Target) -> None:
    if hostaccess.is_remote(where):
        raise Unsupported(f"{what} is on host {host}, a remote host reached over SSH; vnet "
                          "captures only on a host whose network namespace it enters (this "
                          "machine's, or a sandbox host's): run tcpdump on that host")


def stretched_refusal(lab: Lab, network: str) -> None:
    """Unsupported for a network whose bridges are on several hosts: the caller then captures
    on a VM's NIC (encapcells takes the near end's tap)."""
    hosts = used_hosts(lab.network(network), lab.vms) if lab.hosts else []
    if len(hosts) > 1:
        raise Unsupported(f"network {network} is stretched across hosts "
                          f"({', '.join(hosts)}): each has its own bridge, and none sees every "
                          "frame; capture on a VM's NIC on it instead (its tap, on its host)")
