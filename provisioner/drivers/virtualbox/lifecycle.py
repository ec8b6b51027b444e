"""`vnet up/create/destroy --backend virtualbox`: run the VirtualBox plan (render.py) through
one backend (api.py: vboxapi or VBoxManage), so that a lab is either fully there or gone.

up:      version -> context (host OS, /etc/vbox/networks.conf) -> plan (every refusal happens
         here, before anything exists) -> already up? (VMs tagged vnet/lab=<lab>, all running:
         nothing to do) -> tiny image as VDI (media.py: converted once, cached next to the image) and the
         lab's SSH key -> one boot ISO per VM in the lab's state dir (isolinux + the image's
         kernel and initramfs + the VM's kernel command line; kept when unchanged) -> the
         commands in order, `{hostonlyif:NET}` bound from `hostonlyif create`, every exit code
         checked, the record saved after each object is created -> addresses (unless wait=False).
         A failure half-way removes what this run created and raises CommandFailed.
destroy (teardown.py): VMs found by their tag, networks from the saved record; "already gone" is fine;
         untagged objects are never touched. Running it twice is harmless. The boot ISOs, serial
         logs and SSH key go with the lab's state dir, which is removed last.

The record lives in provisioner.host.state under TARGET, like a libvirt lab's, so destroy works after
a crash. Addresses, in this order: Guest Additions' guest properties, the VirtualBox DHCP
server's lease, the guest's own VNET-ADDR console line, the planned address; a NAT NIC is
10.0.2.15 and is reached through its forwarded SSH port.
"""
from __future__ import annotations

import re
import shlex
import time
from collections.abc import Sequence
from dataclasses import replace

from ...guest import images
from ...host import state, tunnelkeys
from ...errors import CommandFailed, HypervisorError, VnetError
from ...lab.model import Lab
from ...host.owner import owner_id
from . import api as vbox_api
from . import media, teardown
from .. import boot
from ..base import Plan
from .addresses import VirtualBoxBoot, serial_log
from .context import TARGET, detect_context
from .objects import object_of, option_of, running_vms, verb_of, vm_owners, vm_tags
from .render import (
    OWNER_KEY,
    TAG_KEY,
    VBoxContext,
    VirtualBoxRenderer,
    created_interface,
    substitute)
from ...progress import Progress
# Kept importable from here (`lifecycle.destroy`, `lifecycle.hostonly_ranges`) for their callers.
from .context import HOST_OS, hostonly_ranges  # noqa: F401
from .media import build_boot_isos, convert_vdi  # noqa: F401
from .teardown import GONE_RE, destroy, run_tolerant  # noqa: F401

ADDRESS_TIMEOUT = 180.0
POLL_SECONDS = 1.0
CREATES = {"createvm", "natnetwork add", "hostonlyif create", "hostonlynet add", "dhcpserver add"}


# --- up ---------------------------------------------------------------------------------------

def up(lab: Lab, progress: Progress, wait: bool = True, context: VBoxContext | None = None,
       *, timeout: float = ADDRESS_TIMEOUT) -> dict:
    """Create (or find already running) the lab; returns its record (also saved)."""
    be = vbox_api.backend(progress)
    with state.lab_lock(TARGET, lab.name, progress):
        return _up(be, lab, progress, wait, context, timeout)


def _up(be, lab: Lab, progress: Progress, wait: bool, context: VBoxContext | None,
        timeout: float) -> dict:
    version = be.version()
    serial_dir = str(state.lab_dir(TARGET, lab.name))
    given = context
    context = replace(context or detect_context(version, VBoxContext().disk, serial_dir),
                      owner=owner_id())
    plan = VirtualBoxRenderer(context).plan(lab)          # refusals: nothing exists yet
    progress(f"VirtualBox {_dotted(version)} on {context.host_os}: lab {lab.name}, "
             f"{len(plan.commands)} commands")
    record = state.read(TARGET, lab.name)
    tags = vm_tags(be)
    owners = vm_owners(be, tags)
    planned = set(plan.extra["vms"].values())
    ours = {vm for vm, tag in tags.items() if tag == lab.name and owners[vm] == context.owner}
    ours |= set(teardown.untagged_made_here(be, record, tags))    # made, Ctrl-C before its tags
    clash = sorted(vm for vm in planned if vm in tags and vm not in ours)
    if clash:
        raise VnetError(f"VirtualBox already has VM(s) {', '.join(clash)}, which lab {lab.name} "
                        f"of this state root did not create (their {TAG_KEY} is not "
                        f"{lab.name!r}, or their {OWNER_KEY} is not {context.owner})",
                        hint="name the lab differently (--name), or remove those VMs yourself")
    if ours and ours == planned and ours <= running_vms(be):
        progress(f"lab {lab.name} is already up ({len(ours)} VMs running); nothing to change")
        if record is None:                                # its record was lost: adopt it
            record = _record(lab, plan, be, version, context, adopted=True)
            state.save(TARGET, lab.name, record)
        return _finish(be, lab, plan, record, context, progress, wait, timeout)
    if ours or record:
        progress(f"lab {lab.name} is incomplete ({len(ours)} of {len(planned)} VMs); removing "
                 f"what it left before creating it again")
        teardown.destroy_held(lab.name, progress, be)
    _check_network_names(be, plan)
    image = None
    if given is None:
        image = images.build_tiny(progress=progress)
        _, pubkey = state.ssh_key(TARGET, lab.name)
        tunnelkeys.ensure_secrets(state.lab_dir(TARGET, lab.name), lab.tunnels)
        context = replace(context, disk=str(media.convert_vdi(image.rootdisk, progress)),
                          ssh_pubkey=pubkey, cmdline_base=image.cmdline_base)
        plan = VirtualBoxRenderer(context).plan(lab)
    try:
        media.build_boot_isos(plan, image, progress)
    except BaseException:
        state.remove(TARGET, lab.name)                    # nothing exists on VirtualBox yet
        raise
    record = _record(lab, plan, be, version, context)
    state.save(TARGET, lab.name, record)                  # before anything exists
    for vm in lab.vms:                                    # a stale VNET-READY would lie
        serial_log(context, vm.name).unlink(missing_ok=True)
    try:
        _apply(be, plan, record, progress)
    except Exception as exc:
        _rollback(be, plan, record, progress, exc)
        raise
    record["state"] = "started"
    state.save(TARGET, lab.name, record)
    progress(f"lab {lab.name}: {len(lab.vms)} VM(s) started on VirtualBox")
    return _finish(be, lab, plan, record, context, progress, wait, timeout)


def _record(lab: Lab, plan: Plan, be, version, context: VBoxContext, adopted=False) -> dict:
    return {"lab": lab.name, "backend": "virtualbox",
            "api": {"name": be.name, "detail": be.describe(), "reason": be.reason},
            "version": _dotted(version), "host_os": context.host_os, "source": lab.source,
            "lab_data": lab.meta.get("raw"), "vms": plan.extra["vms"],
            "teardown": [list(argv) for argv in plan.extra["teardown"]],
            "hostonlyifs": plan.extra["hostonlyifs"], "bindings": {},
            "created": [["vm", vm] for vm in plan.extra["vms"].values()] if adopted else [],
            "disk": context.disk, "serial_dir": context.serial_dir,
            "boot": plan.extra.get("boot", {}),
            "mgmt": plan.extra["mgmt"], "mgmt_host_ip": plan.extra["mgmt_host_ip"],
            "state": "started" if adopted else "creating", "created_at": time.time()}


def _apply(be, plan: Plan, record: dict, progress: Progress) -> None:
    captures = plan.extra["captures"]
    bound: dict[str, str] = record["bindings"]
    for i, (argv, doc) in enumerate(zip(plan.commands, plan.documents)):
        real = substitute(argv, bound)
        progress(doc.name)
        if i in captures:                                  # so destroy can look for it
            record["pending"] = captures[i]                # (teardown._find_lost_interface)
            record["hostonlyifs_before"] = teardown.hostonly_names(be)
            state.save(TARGET, record["lab"], record)
        if verb_of(argv) == "createvm" and (uuid := option_of(argv, "--uuid")):
            # saved before it runs: a VM made but never tagged (Ctrl-C) is still this lab's
            record.setdefault("vm_uuids", {})[object_of(argv)[1]] = uuid
            state.save(TARGET, record["lab"], record)
        result = be.run(real, check=False)
        if result.returncode != 0:
            record.pop("pending", None)                    # a failed create created nothing
            record.pop("hostonlyifs_before", None)
            raise CommandFailed(list(real), result.returncode, result.stderr or result.stdout)
        if i in captures:
            try:
                bound[captures[i]] = created_interface(result.stdout)
            except ValueError:
                raise HypervisorError(f"`{shlex.join(real)}` printed no interface name: "
                                      f"{result.stdout.strip()[:200]!r}") from None
            record.pop("pending")
            record.pop("hostonlyifs_before")
        if verb_of(argv) in CREATES:
            obj = ("hostonlyif", captures[i]) if i in captures else object_of(argv)
            record["created"].append(list(obj))
            state.save(TARGET, record["lab"], record)


def _rollback(be, plan: Plan, record: dict, progress: Progress, exc: Exception) -> None:
    created = {tuple(obj) for obj in record["created"]}
    steps = [argv for argv in plan.extra["teardown"] if object_of(argv) in created]
    progress(f"failed half-way; removing the {len(created)} object(s) this run created")
    failures = teardown.run_tolerant(be, steps, record["bindings"], progress)
    if failures or record.get("pending"):
        left = "; ".join(failures) or "a host-only interface whose name was never printed"
        exc.hint = (f"some objects could not be removed ({left}); run `vnet destroy "
                    f"{record['lab']} --backend virtualbox`")
    else:
        state.remove(TARGET, record["lab"])
        exc.hint = "everything this run had created was removed again"


def _check_network_names(be, plan: Plan) -> None:
    """A NAT network / host-only network of the planned name that is not ours: refuse."""
    for kind, listing, key in (("natnetwork", "natnets", "NetworkName"),
                               ("hostonlynet", "hostonlynets", "Name")):
        wanted = [object_of(a)[1] for a in plan.commands if verb_of(a) == f"{kind} add"]
        if not wanted:
            continue
        existing = set(re.findall(rf"^{key}:\s*(\S+)", be.run(("VBoxManage", "list", listing))
                                  .stdout, re.M))
        clash = sorted(set(wanted) & existing)
        if clash:
            raise VnetError(f"VirtualBox already has {kind}(s) {', '.join(clash)} that no vnet "
                            f"record owns", hint="name the lab differently (--name), or remove "
                                                 f"them: VBoxManage {kind} remove ...")


# --- verification -----------------------------------------------------------------------------

def inventory(lab: Lab):
    """The control path of a VirtualBox lab, from its record: each VM's management address,
    the lab's SSH key and the host's management address; its cells use the VirtualBox table."""
    from ...lab.model import Backend
    from ...verify.run import Inventory

    record = state.read(TARGET, lab.name)
    if record is None or "mgmt" not in record:
        raise VnetError(f"lab {lab.name} has no VirtualBox record with management addresses",
                        hint="vnet up ... --backend virtualbox (again) creates it")
    key, _ = state.ssh_key(TARGET, lab.name)
    hosts = {vm.name: {"ansible_host": record["mgmt"].get(vm.name), "ansible_user": "root",
                       "ansible_ssh_private_key_file": str(key)} for vm in lab.vms}
    return Inventory(hosts=hosts, mgmt_host_ip=record["mgmt_host_ip"],
                     work_dir=state.lab_dir(TARGET, lab.name), backend=Backend.VIRTUALBOX)


# --- addresses --------------------------------------------------------------------------------

def _finish(be, lab, plan, record, context, progress, wait, timeout) -> dict:
    if wait:
        record["addresses"] = wait_for_addresses(be, lab, plan, record["bindings"], context,
                                                 progress, timeout)
        record["state"] = "ready"
        state.save(TARGET, lab.name, record)
    return record


def wait_for_addresses(be, lab: Lab, plan: Plan, bound: dict[str, str], context: VBoxContext,
                       progress: Progress, timeout: float = ADDRESS_TIMEOUT,
                       poll: float | None = None) -> dict[str, list[dict]]:
    """Wait until every VM is up (its console said VNET-READY, or the guest reported its
    addresses) and return {vm: [{network, mac, ip, source, reach}]} per NIC."""
    return boot.wait(VirtualBoxBoot(be, lab, plan, bound, context, poll or POLL_SECONDS),
                     [vm.name for vm in lab.vms], progress, timeout, first_note_at=time.monotonic())


def _dotted(version: Sequence[int]) -> str:
    return ".".join(map(str, version))
