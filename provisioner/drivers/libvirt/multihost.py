"""A lab with `hosts:` on libvirt (README "Several hosts"): preflight every host, define and
boot each host's part in parallel (placement.py renders it), stretch the networks used on
several hosts over VXLAN (host/vxlan.py), wait for every guest's addresses; status per host;
destroy every host it can reach and name the rest with the command that finishes the job.

One record, on the target the lab was created from, lists the hosts and how to reach them.
Host-side steps (the VXLAN devices, the underlay echo, the serial logs) run in a sandbox host's
network namespace, on this machine in vnet's own namespace (the first host outside a sandbox),
or, on a host named by a qemu+ssh:// URI, over SSH (remotehosts.py); any other host is refused
before anything is created."""
from __future__ import annotations

import shlex
import time
from contextlib import contextmanager
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Iterator

from ...errors import HypervisorError, Unsupported, VnetError
from ...host import hostaccess, labhelpers, sandbox_hosts, ssh, state, vxlan
from ...host.state import Target
from ...lab.model import Lab
from ...lab.naming import object_name
from ...progress import Progress
from ..base import lab_from_record
from . import hostforwards, imagecopy, impair, lifecycle, remotehosts
from .connection import LibvirtDriver
from .render import Context, ImageFiles, LibvirtRenderer

# The record's mark that its VXLAN aliases name the owner (vxlan.py); a record without it is an
# older vnet's, whose destroy also removes the lab's `vnet:LAB:NETWORK` devices.
VXLAN_ALIAS = "vnet:OWNER:LAB:NETWORK"


def host_targets(lab: Lab, target: Target) -> dict[str, Target]:
    """host name -> where its libvirt objects and host-side devices live. The first host is
    where vnet runs and reaches the guests from: a sandbox's host (--sandbox), or without a
    sandbox this machine (a qemu:///system URI, the target's; vnet's own namespace)."""
    where: dict[str, str] = {}
    if target.sandbox:
        from ...host import sandbox

        sb = sandbox.describe(target.sandbox)
        where = {sandbox_hosts.host_view(sb, i).uri: sandbox_hosts.host_view(sb, i).host_netns
                 for i in range(1, sandbox_hosts.MAX_HOSTS + 1)}
    if lab.hosts[0].uri != target.uri:
        raise Unsupported(f"hosts.{lab.hosts[0].name}: the first host is where vnet reaches "
                          f"the guests from, so it must be this target ({target.uri})",
                          hint="in a sandbox, list hv1 first" if target.sandbox else
                          f"run vnet on that host with --uri {lab.hosts[0].uri}")
    targets = {}
    for i, host in enumerate(lab.hosts):
        if host.uri in where:
            targets[host.name] = Target(uri=host.uri, netns=where[host.uri])
        elif not i and not target.sandbox and hostaccess.is_local_uri(host.uri):
            targets[host.name] = Target(uri=host.uri)       # this machine (remotehosts.is_here)
        elif i and hostaccess.is_ssh_uri(host.uri):     # checked: no option can hide in it
            hostaccess.for_uri(host.uri, f"hosts.{host.name}.uri")
            targets[host.name] = Target(uri=host.uri)
        elif i:
            raise Unsupported(f"hosts.{host.name}: {host.uri} is neither a host of this vnet "
                              f"sandbox nor a remote host; accepted: {hostaccess.ACCEPTED}",
                              hint="vnet sandbox up S --hosts N, then --sandbox S")
        elif target.sandbox:
            raise Unsupported(f"hosts.{host.name}: {host.uri} is not a host of sandbox "
                              f"{target.sandbox}; the first host, where vnet runs, is its hv1",
                              hint="vnet sandbox status S shows its hosts")
        else:
            raise Unsupported(f"hosts.{host.name}: {host.uri} is not this machine's libvirtd; "
                              "the first host is where vnet runs and reaches the guests from, "
                              f"so its URI must be {hostaccess.LOCAL}",
                              hint="run vnet on the first host, or in a sandbox: "
                                   "vnet sandbox up S --hosts N, then --sandbox S")
    return targets


def _on_host(lab: Lab, host: str) -> Lab:
    return replace(lab, vms=tuple(vm for vm in lab.vms if vm.host == host))


def _parallel(fn, items: dict) -> dict:
    with ThreadPoolExecutor(max_workers=max(1, len(items))) as pool:
        futures = {key: pool.submit(fn, key, value) for key, value in items.items()}
        return {key: f.result() for key, f in futures.items()}


def preflight(lab: Lab, targets: dict[str, Target], owner: str,
              recorded: bool) -> dict[str, list]:
    """Before anything is created: every host answers, the underlay reaches the other hosts'
    addresses, the VNIs are free (a device of this lab's tag counts as its own only when the
    target has a record of it: `recorded`), and nothing asks for what is not built yet."""
    hostforwards.remote_refusal(lab, targets)
    hostforwards.remote_side_refusal(lab, targets)
    impair.refuse_across_hosts(lab)
    ovs = next((net for net in lab.networks if net.switch != "linux"), None)
    if ovs is not None:
        raise Unsupported(f"networks.{ovs.name}.switch: an Open vSwitch network is not "
                          "stretched across hosts (vnet's VXLAN joins Linux bridges, and the "
                          "flow table and its controller live on one host); use switch: linux "
                          "or a lab without hosts:")
    problems: list[str] = []

    def reach(name: str, target: Target) -> None:
        try:
            LibvirtDriver(target).conn
        except VnetError as exc:
            problems.append(f"host {name} does not answer: {exc.message}")
    _parallel(reach, targets)
    if problems:
        raise HypervisorError("; ".join(problems), hint="vnet sandbox status shows its hosts")
    plan = vxlan.segments(lab, owner=owner)
    for name, segs in plan.items():
        where = remotehosts.access(targets[name])
        problems += vxlan.vnis_in_use(where, segs, recorded)
        for remote in sorted({r for s in segs for r in s.remotes}):
            if not vxlan.reaches(where, str(remote)):
                problems.append(f"host {name} does not reach {remote} on the underlay "
                                "(no ICMP echo reply)")
    if problems:
        raise HypervisorError("; ".join(problems))
    return plan


def up(lab: Lab, target: Target, progress: Progress, wait: bool = True) -> dict:
    from ... import doctor
    from ...guest import images
    from ...host import accel

    # the rule every sandbox host needs: no VF or vDPA device of this machine into a guest
    # (the others read this machine's own facts, which say nothing of a remote host)
    doctor.preflight(lab, target, only={"passthrough-sandbox"})
    targets = host_targets(lab, target)
    remotehosts.refuse_shared_lab(target, lab.name, targets)
    segments = preflight(lab, targets, LibvirtDriver(target).owner,
                         state.read(target, lab.name) is not None)
    with state.lab_lock(target, lab.name, progress):
        lifecycle.require_sandbox(target)
        image = images.build_tiny(progress=progress)   # one file system: every sandbox host
        lab_dir = state.lab_dir(target, lab.name)
        _, pubkey = state.ssh_key(target, lab.name)
        chosen = accel.choose(image, progress)
        owner = LibvirtDriver(target).owner
        ctx = Context(image=ImageFiles(str(image.kernel), str(image.initrd), str(image.rootdisk),
                                       image.cmdline_base),
                      ssh_pubkey=pubkey, owner=owner, accel=chosen, log_dir=str(lab_dir))
        # a host reached over the network gets the image through libvirt's storage API
        files = _parallel(lambda h, t: imagecopy.ensure(LibvirtDriver(t).conn, image, progress)
                          if imagecopy.is_remote(t.uri) else ctx.image, targets)
        logs = {h: remotehosts.log_dir(t, owner, lab.name, lab_dir) for h, t in targets.items()}
        plans = {h: LibvirtRenderer(replace(ctx, host=h, image=files[h], log_dir=logs[h]))
                 .plan(lab) for h in targets}
        mgmt = {vm: ip for p in plans.values() for vm, ip in p.extra["mgmt"].items()}
        forwards = plans[lab.hosts[0].name].extra   # rendered from the whole lab: every forward
        if not state.read(target, lab.name):   # a second `up` owns its ports already
            hostforwards.check_ports(lab, targets, forwards)
        record = {"lab": lab.name, "backend": "libvirt", "uri": target.uri,
                  "sandbox": target.sandbox, "accel": chosen, "source": lab.source,
                  "lab_data": lab.meta["raw"], "mgmt": mgmt, "created": time.time(),
                  "image": str(Path(image.kernel).parent), "vxlan_alias": VXLAN_ALIAS,
                  "hosts": {h: {"uri": t.uri, "netns": t.netns, "log_dir": logs[h]}
                            for h, t in targets.items()}}
        state.save(target, lab.name, record)     # before anything exists: destroy finds it
        for t in targets.values():
            remotehosts.remember(target, t)
        started = time.monotonic()

        def build(host: str, t: Target) -> None:
            remotehosts.prepare(t, owner, lab.name)
            LibvirtDriver(t).apply(plans[host], lambda m: progress(f"{host}: {m}"))
            vxlan.apply(remotehosts.access(t), segments[host])
            for seg in segments[host]:
                progress(f"{host}: network {seg.network} stretched (VXLAN {seg.vni}, port "
                         f"{seg.port}, MTU {seg.mtu}) to "
                         + ", ".join(map(str, seg.remotes)))
        _parallel(build, targets)
        try:     # a failure from here on stops the proxies: no process outlives a failed `up`
            hostforwards.start(lab, targets, lab_dir, forwards)
            if wait:
                _parallel(lambda h, t: remotehosts.wait_for_addresses(
                    _on_host(lab, h), t, logs[h], progress), targets)
        except BaseException:
            labhelpers.stop_all(lab_dir, progress)
            raise
        record["timings"] = {"define_and_boot": round(time.monotonic() - started, 2)}
        state.save(target, lab.name, record)
        return record


def status(record: dict, target: Target) -> dict:
    lab = lab_from_record(record)
    lab_dir = state.lab_dir(target, lab.name)
    vms = []
    for vm in lab.vms:
        where = record["hosts"][vm.host]
        try:
            vm_state = LibvirtDriver(remotehosts.target_of(where)) \
                .domain_state(object_name(lab.name, vm.name))
        except VnetError:
            vm_state = "host unreachable"
        reported = remotehosts.reported(where, lab_dir, vm.name)
        vms.append({"name": vm.name, "host": vm.host, "state": vm_state,
                    "nics": [{"network": n.network, "model": n.model, "mac": n.mac,
                              "addresses": lifecycle._addresses(n, reported)} for n in vm.nics]})
    return {"lab": lab.name, "vms": vms,
            **({"forwards": forwards} if (forwards := hostforwards.described(lab, lab_dir))
               else {})}


def destroy(record: dict, target: Target, progress: Progress) -> list[str]:
    """Remove the lab on every host that answers; a host that does not keeps its entry in the
    record, and the error names it with the command that finishes the job later."""
    lab_name = record["lab"]
    labhelpers.stop_all(state.lab_dir(target, lab_name), progress)
    removed: list[str] = []
    left: dict[str, str] = {}
    for host, where in sorted(record["hosts"].items()):
        t = remotehosts.target_of(where)
        try:
            driver = LibvirtDriver(t)
            removed += driver.destroy(lab_name, lambda m: progress(f"{host}: {m}"))
            removed += remotehosts.clean(t, driver.owner, lab_name,
                                         legacy=record.get("vxlan_alias") != VXLAN_ALIAS,
                                         networks=_network_names(record))
        except (VnetError, OSError) as exc:
            left[host] = getattr(exc, "message", str(exc))
    if left:
        record["hosts"] = {h: w for h, w in record["hosts"].items() if h in left}
        state.save(target, lab_name, record)
        where = f" --sandbox {target.sandbox}" if target.sandbox else \
            f" --uri {shlex.quote(target.uri)}"      # a socket= URI holds ? and maybe &
        raise HypervisorError(
            f"lab {lab_name}: removed from every host but {', '.join(sorted(left))} ("
            + "; ".join(f"{h}: {m}" for h, m in sorted(left.items())) + ")",
            hint=f"once {', '.join(sorted(left))} answers again: vnet destroy {lab_name}{where}")
    ssh.close_masters(ssh.control_dir(target, lab_name))
    state.remove(target, lab_name)
    remotehosts.forget_unused(target)
    return removed


def _network_names(record: dict) -> tuple[str, ...]:
    """The lab's stretched segments' names, from its record's raw lab data (no re-resolving),
    the management network's included."""
    nets = (record.get("lab_data") or {}).get("networks") or []
    return (vxlan.MGMT, *(n["name"] for n in nets
                          if isinstance(n, dict) and isinstance(n.get("name"), str)))


def gc_hosts(target: Target, progress: Progress) -> list[str]:
    """The sandbox's other hosts and every host's VXLAN devices: what vnet tagged for a lab
    that has no record on `target` any more (the first host's libvirt objects: lifecycle.gc)."""
    removed = remotehosts.gc_remote(target, progress)
    if not target.sandbox:
        return removed + _gc_here(target)
    from ...host import sandbox

    sb = sandbox.describe(target.sandbox)
    known = set(state.labs_of(target))
    owner = LibvirtDriver(target).owner
    for index in [1, *sandbox_hosts.present(sb)]:
        view = sandbox_hosts.host_view(sb, index)
        if index > 1:
            driver = LibvirtDriver(Target(uri=view.uri, netns=view.host_netns))
            for lab in sorted(set(lifecycle.tagged_labs(driver, progress)) - known):
                with _orphan(target, lab, progress) as orphan:
                    if orphan:
                        labhelpers.stop_all(state.lab_dir(target, lab), progress)
                        removed += driver.destroy(lab, progress)
        for lab in sorted(vxlan.owner_labs(view.host_netns, owner) - known):
            with _orphan(target, lab, progress) as orphan:
                if orphan:
                    removed += vxlan.remove(view.host_netns, owner, lab)
    return removed


@contextmanager
def _orphan(target: Target, lab: str, progress: Progress) -> Iterator[bool]:
    """Under the lab's lock: still without a record (an `up` that saved one while gc listed
    the hosts is not an orphan, and its hosts' objects stay)."""
    with state.lab_lock(target, lab, progress):
        yield state.read(target, lab) is None


def _gc_here(target: Target) -> list[str]:
    """This machine, a lab's first host outside a sandbox (a qemu:///system target): this
    owner's VXLAN devices of labs with no record under any target of this state root (a lab
    recorded anywhere, another spelling of the URI or a sandbox, keeps its devices)."""
    here = remotehosts.access(target)
    if not here.here:
        return []
    owner = LibvirtDriver(target).owner
    removed: list[str] = []
    for lab in sorted(vxlan.owner_labs(here, owner)):
        if not state.targets_recording(lab):
            removed += vxlan.remove(here, owner, lab)
    return removed
