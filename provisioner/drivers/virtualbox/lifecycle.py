"""`vnet up/create/destroy --backend virtualbox`: run the VirtualBox plan (vbox_render.py) through
one backend (vbox_api.py: vboxapi or VBoxManage), so that a lab is either fully there or gone.

up:      version -> context (host OS, /etc/vbox/networks.conf) -> plan (every refusal happens
         here, before anything exists) -> already up? (VMs tagged vnet/lab=<lab>, all running:
         nothing to do) -> tiny image as VDI (converted once, cached next to the image) and the
         lab's SSH key -> one boot ISO per VM in the lab's state dir (isolinux + the image's
         kernel and initramfs + the VM's kernel command line; kept when unchanged) -> the
         commands in order, `{hostonlyif:NET}` bound from `hostonlyif create`, every exit code
         checked, the record saved after each object is created -> addresses (unless wait=False).
         A failure half-way removes what this run created and raises CommandFailed.
destroy: VMs found by their tag, networks from the saved record; "already gone" is fine;
         untagged objects are never touched. Running it twice is harmless. The boot ISOs, serial
         logs and SSH key go with the lab's state dir, which is removed last.

The record lives in provisioner.host.state under TARGET, like a libvirt lab's, so destroy works after
a crash. Addresses, in this order: Guest Additions' guest properties, the VirtualBox DHCP
server's lease, the guest's own VNET-ADDR console line, the planned address; a NAT NIC is
10.0.2.15 and is reached through its forwarded SSH port.
"""
from __future__ import annotations

import os
import re
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from ipaddress import ip_network
from pathlib import Path

from ...guest import bootiso, images
from ...host import runner, state, tunnelkeys
from ...errors import CommandFailed, HypervisorError, VnetError
from ...lab.model import Lab
from ...host.owner import owner_id
from ...host.state import Target
from . import api as vbox_api
from .. import boot
from ..base import Plan
from .addresses import VirtualBoxBoot, serial_log
from .objects import object_of, running_vms, verb_of, vm_owners, vm_tags
from .render import (
    NETWORKS_CONF,
    OWNER_KEY,
    TAG_KEY,
    VBoxContext,
    VirtualBoxRenderer,
    created_interface,
    substitute)
from ...progress import Progress

TARGET = Target(uri="vbox://local", sandbox=None)
ADDRESS_TIMEOUT = 180.0
POLL_SECONDS = 1.0
DEFAULT_RANGES = ("192.168.56.0/21",)       # VirtualBox >= 6.1.28 without networks.conf
HOST_OS = {"linux": "linux", "darwin": "darwin", "win32": "windows", "sunos5": "solaris"}
CREATES = {"createvm", "natnetwork add", "hostonlyif create", "hostonlynet add", "dhcpserver add"}
GONE_RE = re.compile(r"Could not find|VBOX_E_OBJECT_NOT_FOUND|Failed to find DHCP server|"
                     r"Failed to locate host-only interface|is not currently running", re.I)
LOCKED_RE = re.compile(r"\block", re.I)


# --- context ----------------------------------------------------------------------------------

def hostonly_ranges(path: Path = Path(NETWORKS_CONF)) -> tuple[str, ...]:
    """What /etc/vbox/networks.conf allows ('* 10.0.0.0/8 192.168.0.0/16' lines; '#' comments;
    an empty file allows nothing); VirtualBox's default when the file is absent."""
    if not path.exists():
        return DEFAULT_RANGES
    ranges: list[str] = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        words = line.split("#", 1)[0].split()
        if not words or words[0] != "*":
            continue
        for word in words[1:]:
            try:
                ranges.append(str(ip_network(word, strict=False)))
            except ValueError:
                raise VnetError(f"{path}:{number}: {word!r} is not a network range") from None
    return tuple(ranges)


def detect_context(version: tuple[int, int, int], disk: str, serial_dir: str,
                   networks_conf: Path = Path(NETWORKS_CONF)) -> VBoxContext:
    return VBoxContext(version=version, host_os=HOST_OS.get(sys.platform, sys.platform),
                       disk=disk, serial_dir=serial_dir,
                       hostonly_ranges=hostonly_ranges(networks_conf))


def convert_vdi(raw: Path, progress: Progress) -> Path:
    """raw root disk -> <same dir>/<same name>.vdi with qemu-img, once; reused while newer."""
    vdi = raw.with_suffix(".vdi")
    if vdi.exists() and vdi.stat().st_mtime_ns >= raw.stat().st_mtime_ns:
        return vdi
    if not runner.which("qemu-img"):
        raise VnetError("qemu-img is missing: it converts the tiny image to VDI for VirtualBox",
                        hint="apt-get install qemu-utils")
    tmp = vdi.with_name(f".{vdi.name}.{os.getpid()}.tmp")
    progress(f"converting {raw} to VDI for VirtualBox")
    try:
        runner.run(["qemu-img", "convert", "-f", "raw", "-O", "vdi", str(raw), str(tmp)],
                   timeout=900)
        tmp.replace(vdi)
    finally:
        tmp.unlink(missing_ok=True)
    return vdi


def build_boot_isos(plan: Plan, image: images.Image | None, progress: Progress) -> list[Path]:
    """Write each tiny-image VM's boot ISO where the plan attaches it (the lab's state dir),
    before any command runs; an ISO that already holds the same inputs is kept."""
    boot = plan.extra.get("boot", {})
    if not boot:
        return []
    image = image or images.build_tiny(progress=progress)
    done = []
    for vm, entry in boot.items():
        progress(f"vm {vm}: boot ISO {entry['iso']}")
        done.append(bootiso.build(image, entry["cmdline"], Path(entry["iso"]),
                                  progress=progress))
    return done


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
        _destroy(lab.name, progress, be)
    _check_network_names(be, plan)
    image = None
    if given is None:
        image = images.build_tiny(progress=progress)
        _, pubkey = state.ssh_key(TARGET, lab.name)
        tunnelkeys.ensure_secrets(state.lab_dir(TARGET, lab.name), lab.tunnels)
        context = replace(context, disk=str(convert_vdi(image.rootdisk, progress)),
                          ssh_pubkey=pubkey, cmdline_base=image.cmdline_base)
        plan = VirtualBoxRenderer(context).plan(lab)
    try:
        build_boot_isos(plan, image, progress)
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
            record["pending"] = captures[i]
            state.save(TARGET, record["lab"], record)
        result = be.run(real, check=False)
        if result.returncode != 0:
            record.pop("pending", None)                    # a failed create created nothing
            raise CommandFailed(list(real), result.returncode, result.stderr or result.stdout)
        if i in captures:
            try:
                bound[captures[i]] = created_interface(result.stdout)
            except ValueError:
                raise HypervisorError(f"`{shlex.join(real)}` printed no interface name: "
                                      f"{result.stdout.strip()[:200]!r}") from None
            record.pop("pending")
        if verb_of(argv) in CREATES:
            obj = ("hostonlyif", captures[i]) if i in captures else object_of(argv)
            record["created"].append(list(obj))
            state.save(TARGET, record["lab"], record)


def _rollback(be, plan: Plan, record: dict, progress: Progress, exc: Exception) -> None:
    created = {tuple(obj) for obj in record["created"]}
    steps = [argv for argv in plan.extra["teardown"] if object_of(argv) in created]
    progress(f"failed half-way; removing the {len(created)} object(s) this run created")
    failures = run_tolerant(be, steps, record["bindings"], progress)
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


# --- destroy ----------------------------------------------------------------------------------

def destroy(lab_name: str, progress: Progress, *, backend=None) -> list[str]:
    """Remove the lab's VMs tagged with this state root's owner id and the networks its record
    says it created. Idempotent; waits for a running `up` of the same lab."""
    be = backend or vbox_api.backend(progress)
    with state.lab_lock(TARGET, lab_name, progress):
        return _destroy(lab_name, progress, be)


def _destroy(lab_name: str, progress: Progress, be) -> list[str]:
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
            if kind == "vm" and vm in tags and tags[vm] != lab_name:
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


def _find_lost_interface(be, record: dict, bound: dict, created: set, progress) -> None:
    """`hostonlyif create` ran but its name was never saved: find it by the planned address."""
    token = record["pending"]
    net = next((n for n, info in record["hostonlyifs"].items() if info["token"] == token), None)
    if net is None:
        return
    ip = record["hostonlyifs"][net]["ip"]
    text = be.run(("VBoxManage", "list", "hostonlyifs")).stdout
    hits = [name for name, addr in re.findall(r"^Name:\s*(\S+)\n(?:.*\n)*?IPAddress:\s*(\S+)",
                                              text, re.M) if addr == ip]
    if len(hits) == 1:
        bound[token] = hits[0]
        created.add(("hostonlyif", token))
        progress(f"host-only interface of {net} found again by its address {ip}: {hits[0]}")
    else:
        progress(f"host-only interface of {net} ({ip}) not found; check `VBoxManage list "
                 f"hostonlyifs`")


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
