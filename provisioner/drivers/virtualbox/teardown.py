"""Removing a VirtualBox lab: its VMs found by their vnet/lab and vnet/owner tags, its networks
from the saved record (untagged objects are never touched), each teardown line run in order with
"already gone" as success. Also the rollback of a half-done `up` (run_tolerant)."""
from __future__ import annotations

import re
import shlex
import time
from collections.abc import Sequence

from ...errors import HypervisorError
from ...host import state
from ...host.owner import owner_id
from ...progress import Progress
from . import api as vbox_api
from .context import OWNER_KEY, TAG_KEY, TARGET, substitute
from .objects import object_of, running_vms, verb_of, vm_ids, vm_owners, vm_tags

GONE_RE = re.compile(r"Could not find|VBOX_E_OBJECT_NOT_FOUND|Failed to find DHCP server|"
                     r"Failed to locate host-only interface|is not currently running", re.I)
LOCKED_RE = re.compile(r"\block", re.I)


def destroy(lab_name: str, progress: Progress, *, backend=None) -> list[str]:
    """Remove the lab's VMs tagged with this state root's owner id and the networks its record
    says it created. Idempotent; waits for a running `up` of the same lab."""
    be = backend or vbox_api.backend(progress)
    with state.lab_lock(TARGET, lab_name, progress):
        return destroy_held(lab_name, progress, be)


def destroy_held(lab_name: str, progress: Progress, be) -> list[str]:
    """destroy() for a caller that already holds the lab's lock (up, gc)."""
    try:
        record = state.read(TARGET, lab_name)
        corrupt = False
    except state.CorruptState as exc:       # the tagged VMs are still found and removed
        progress(f"warning: {exc.message}; removing the lab's tagged VMs without it")
        record, corrupt = None, True
    tags = vm_tags(be)
    owners = vm_owners(be, tags)
    owner = owner_id()
    ours = sorted(vm for vm, tag in tags.items() if tag == lab_name and owners[vm] == owner)
    ours += untagged_made_here(be, record, tags)
    for vm in sorted(vm for vm, tag in tags.items() if tag == lab_name and owners[vm] != owner):
        progress(f"{vm} is tagged {TAG_KEY}={lab_name} but its {OWNER_KEY} is "
                 f"{owners[vm] or 'missing (an older vnet)'}, not {owner}; left alone")
    running = running_vms(be)
    steps = [("VBoxManage", "controlvm", vm, "poweroff") for vm in ours if vm in running]
    steps += [("VBoxManage", "unregistervm", vm, "--delete") for vm in ours]
    bound: dict[str, str] = {}
    if record:
        bound = dict(record.get("bindings", {}))
        created = {tuple(obj) for obj in record.get("created", [])}
        if record.get("pending") and record["pending"] not in bound:
            _find_lost_interface(be, record, bound, created, progress)
        steps += [tuple(argv) for argv in record.get("teardown", [])
                  if object_of(argv) in created and object_of(argv)[0] != "vm"]
        for kind, vm in sorted(created):
            if kind == "vm" and vm in tags and tags[vm] != lab_name and vm not in ours:
                progress(f"{vm} is not tagged {TAG_KEY}={lab_name}; left alone")
    if not steps and record is None and not corrupt:
        progress(f"lab {lab_name}: nothing of it on VirtualBox; nothing to remove")
        return []
    failures = run_tolerant(be, steps, bound, progress)
    if failures:
        raise HypervisorError(f"could not remove all of lab {lab_name}:\n  " +
                              "\n  ".join(failures),
                              hint="fix the cause and run the same destroy again; the lab's "
                                   "record is kept until then")
    state.remove(TARGET, lab_name)
    progress(f"lab {lab_name} destroyed")
    return [shlex.join(step[1:]) for step in steps]


def untagged_made_here(be, record: dict | None, tags: dict[str, str | None]) -> list[str]:
    """VMs this lab's `up` made but never tagged (a Ctrl-C between createvm and setextradata):
    untagged, with the UUID the record saved before createvm ran (context.vm_uuid). No other
    untagged VM is ever touched."""
    wanted = (record or {}).get("vm_uuids") or {}
    if not wanted or not any(tags.get(vm, "") is None for vm in wanted):
        return []
    ids = vm_ids(be)
    return sorted(vm for vm, uuid in wanted.items()
                  if vm in tags and tags[vm] is None and ids.get(vm) == uuid)


def run_tolerant(be, steps: Sequence[Sequence[str]], bound: dict[str, str],
                 progress: Progress) -> list[str]:
    """Run teardown lines in order; "already gone" is success, power-off and NAT-network stop
    are best effort (remove follows them). Returns what really failed."""
    failures = []
    for argv in steps:
        try:
            real = substitute(tuple(argv), bound)
        except KeyError as exc:
            failures.append(str(exc.args[0]))
            continue
        result = _run_unlocked(be, real)
        if result.returncode == 0:
            progress(f"teardown: {shlex.join(real[1:])}")
        elif GONE_RE.search(result.stderr) or verb_of(real) in ("controlvm", "natnetwork stop"):
            progress(f"teardown: {shlex.join(real[1:])}: already gone or stopped")
        else:
            tail = (result.stderr.strip().splitlines() or ["(no stderr)"])[-1]
            failures.append(f"{shlex.join(real)}: exit {result.returncode}: {tail}")
    return failures


def _run_unlocked(be, argv: tuple[str, ...], tries: int = 20):
    """A VM just powered off keeps its session lock for a moment: retry unregistervm then."""
    for _ in range(tries):
        result = be.run(argv, check=False)
        if result.returncode == 0 or verb_of(argv) != "unregistervm" \
                or not LOCKED_RE.search(result.stderr):
            return result
        time.sleep(0.5)
    return result


def hostonly_names(be) -> list[str]:
    """The host-only interfaces VirtualBox has now (`VBoxManage list hostonlyifs`)."""
    return re.findall(r"^Name:\s*(\S+)", be.run(("VBoxManage", "list", "hostonlyifs")).stdout,
                      re.M)


def _find_lost_interface(be, record: dict, bound: dict, created: set, progress) -> None:
    """`hostonlyif create` ran but its name was never saved: it is the one interface that was
    not there before (the record lists those, saved with `pending`). Not by the planned
    address: that is set only by the next command, which needs the name, so an interface
    with that address is someone else's (VirtualBox's default vboxnet0 is 192.168.56.1)."""
    token = record["pending"]
    net = next((n for n, info in record["hostonlyifs"].items() if info["token"] == token), None)
    if net is None:
        return
    before = record.get("hostonlyifs_before")
    new = [] if before is None else [n for n in hostonly_names(be)     # nor one of this lab's
                                     if n not in before and n not in bound.values()]
    if len(new) == 1:
        bound[token] = new[0]
        created.add(("hostonlyif", token))
        progress(f"host-only interface of {net} found again: {new[0]}, the one interface that "
                 "appeared since vnet ran `hostonlyif create`")
        return
    why = "the record predates the list of interfaces before it" if before is None else \
        f"{len(new)} interfaces appeared since ({', '.join(new) or 'none'})"
    progress(f"host-only interface of {net}: its name was never saved and {why}; none is "
             "removed (check `VBoxManage list hostonlyifs`)")
