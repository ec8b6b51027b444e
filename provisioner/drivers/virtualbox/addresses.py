"""How a VirtualBox VM comes up and where it can be reached: the console (drivers/boot.py), Guest
Additions' guest properties and the DHCP server's leases, and a triage when it does not."""
from __future__ import annotations

import re
from pathlib import Path

from ...errors import HypervisorError
from ...lab import modes
from ...lab.model import Lab
from .. import boot
from ..base import Plan
from .objects import value_of, running_vms
from .context import VBoxContext, vbox_name

NAT_GUEST_IP = "10.0.2.15"
LEASE_RE = re.compile(r"^IP Address:\s*(\S+)", re.M)


def serial_log(context: VBoxContext, vm: str) -> Path:
    return boot.serial_log(context.serial_dir, vm)


class VirtualBoxBoot(boot.Boot):
    """Ready when the console says VNET-READY, or every non-NAT NIC's address is known from the
    guest (Guest Additions, a DHCP lease or its console); see probe."""
    alive_first = True           # probe asks VirtualBox several questions: skip a stopped VM
    note_every = 10.0

    def __init__(self, be, lab: Lab, plan: Plan, bound: dict[str, str], context: VBoxContext,
                 poll: float):
        self.be, self.lab, self.plan, self.bound, self.context = be, lab, plan, bound, context
        self.poll = poll
        self.running: set[str] = set()

    def next_round(self) -> None:
        self.running = running_vms(self.be)              # one question per round, not per VM

    def alive(self, vm: str) -> bool:
        return self.plan.extra["vms"][vm] in self.running

    def check(self, vm: str) -> tuple[bool, list[dict]]:
        return probe(self.be, self.lab, self.plan, self.bound, self.context, vm)

    def triage(self, vm: str) -> str:
        return triage(self.be, self.lab, self.plan, self.bound, self.context, vm)

    def ready_line(self, vm: str, nics: list[dict]) -> str:
        return f"{vm} ready: " + ", ".join(f"{n['network']} {n['ip']} ({n['source']})"
                                           for n in nics)

    def pending_names(self, pending: list[str]) -> str:
        return ", ".join(pending)

    def stopped(self, vm: str) -> HypervisorError:
        return HypervisorError(f"VM {vm} stopped while booting\n" + self.triage(vm),
                               hint=f"vnet destroy {self.lab.name} --backend virtualbox")

    def timed_out(self, pending: list[str], timeout: float) -> HypervisorError:
        return HypervisorError(f"VM(s) {', '.join(pending)} did not come up within {timeout:g}s\n"
                               + self.triage(pending[0]),
                               hint=f"vnet destroy {self.lab.name} --backend virtualbox removes "
                                    "the lab")


def probe(be, lab: Lab, plan: Plan, bound: dict[str, str], context: VBoxContext,
          vm_name: str) -> tuple[bool, list[dict]]:
    """(ready, one address entry per NIC) from what the guest and VirtualBox say right now."""
    vm = lab.vm(vm_name)
    vbox_vm = plan.extra["vms"][vm_name]
    console = boot.read_console(serial_log(context, vm_name))
    said = {mac: ip.split("/")[0] for mac, ip in boot.console_addresses(console).items()}
    ga = guest_addresses(be, vbox_vm)
    nics = []
    for nic in vm.nics:
        net = lab.network(nic.network)
        entry = {"network": net.name, "mac": nic.mac, "ip": None, "source": None, "reach": None}
        if modes.MODES[net.mode].per_vm_nat:
            ssh = next((pf.host_port for pf in net.port_forwards
                        if pf.vm == vm_name and pf.guest_port == 22), None)
            entry.update(ip=NAT_GUEST_IP, source="nat",
                         reach=f"127.0.0.1:{ssh}" if ssh else None)
        else:
            mac = nic.mac.lower()
            for source, ip in (("guestproperty", ga.get(mac)),
                               ("lease", _lease(be, lab, plan, bound, net, mac)),
                               ("console", said.get(mac)),
                               ("planned", str(nic.ip.ip) if nic.ip else None)):
                if ip:
                    entry.update(ip=ip, source=source, reach=ip)
                    break
        nics.append(entry)
    guest_said = [n for n in nics if n["source"] != "nat"]
    ready = bool(boot.READY_RE.search(console)) or (
        bool(ga) if not guest_said else
        all(n["source"] in ("guestproperty", "lease", "console") for n in guest_said))
    return ready, nics


def guest_addresses(be, vbox_vm: str) -> dict[str, str]:
    """{mac: ip} from Guest Additions (/VirtualBox/GuestInfo/Net/N/{MAC,V4/IP}); {} without."""
    def prop(key: str) -> str | None:
        return value_of(be.run(("VBoxManage", "guestproperty", "get", vbox_vm,
                              f"/VirtualBox/GuestInfo/Net/{key}"), check=False))
    count = prop("Count")
    found = {}
    for n in range(int(count) if count and count.isdigit() else 0):
        mac, ip = prop(f"{n}/MAC"), prop(f"{n}/V4/IP")
        if mac and ip and len(mac) == 12:
            found[":".join(mac[i:i + 2] for i in range(0, 12, 2)).lower()] = ip
    return found


def _lease(be, lab: Lab, plan: Plan, bound: dict, net, mac: str) -> str | None:
    """The VirtualBox DHCP server's lease for mac, where this network has that server."""
    if not net.dhcp:
        return None
    if modes.MODES[net.mode].vbox_adapter == "natnetwork":
        where = f"--network={vbox_name(lab.name, net.name)}"
    elif net.name in plan.extra["hostonlyifs"]:
        token = plan.extra["hostonlyifs"][net.name]["token"]
        if token not in bound:
            return None
        where = f"--interface={bound[token]}"
    else:
        return None
    result = be.run(("VBoxManage", "dhcpserver", "findlease", where, f"--mac-address={mac}"),
                    check=False)
    match = LEASE_RE.search(result.stdout) if result.returncode == 0 else None
    return match.group(1) if match else None


def triage(be, lab: Lab, plan: Plan, bound: dict, context: VBoxContext, vm_name: str) -> str:
    """What a person needs when a VM does not come up: its console, state and address sources."""
    log = serial_log(context, vm_name)
    lines = [f"--- triage for {vm_name} ({plan.extra['vms'][vm_name]}) ---",
             f"last serial console lines ({log}):"]
    lines += boot.console_tail(log, "(empty or missing: the guest printed nothing on its serial "
                                    "port)")
    state_now = "running" if plan.extra["vms"][vm_name] in running_vms(be) else "not running"
    lines.append(f"VM state: {state_now}")
    ga = guest_addresses(be, plan.extra["vms"][vm_name])
    lines.append("guest properties: " + (", ".join(f"{m}={ip}" for m, ip in ga.items()) or
                                         "none (no Guest Additions reporting)"))
    for nic in lab.vm(vm_name).nics:
        net = lab.network(nic.network)
        if not modes.MODES[net.mode].per_vm_nat:
            lease = _lease(be, lab, plan, bound, net, nic.mac)
            lines.append(f"{nic.mac} on {net.name} ({net.mode}): DHCP lease "
                         f"{lease or 'none'}")
    iso = plan.extra.get("boot", {}).get(vm_name)
    if iso:
        there = "present" if Path(iso["iso"]).exists() else "MISSING"
        lines.append(f"boot ISO ({there}): {iso['iso']}; isolinux APPEND initrd=/initrd.gz "
                     f"{iso['cmdline']}")
    return "\n".join(lines)
