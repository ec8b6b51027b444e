"""Apply a NIC's impairment on libvirt, and say where each part went and why.

Where (decided per NIC, by trying, and recorded in the lab record's `impair`):
- the host side of the NIC (its tap, in the target's network namespace) when the host kernel
  has sch_netem: one `netem` qdisc with delay, jitter, loss and rate, on the tap's egress, so
  it shapes what the network sends toward the guest;
- otherwise (the machine vnet's CI runs on has no sch_netem): the rate on the tap with `tbf`
  (toward the guest), and delay, jitter and loss on the guest side of the link: netem on the
  guest's egress of that NIC (provisioner/guest/netem.py over SSH; the tiny image carries the
  Debian kernel's sch_netem module).
libvirt's own <bandwidth> is not used: it needs htb, sfq, the fw classifier and the police
action on the host (libvirt src/util/virnetdevbandwidth.c), which that machine's kernel lacks.
Either way each part acts once per round trip, so the guest's RTT and loss measure it.

A NIC without a tap (QEMU user networking for `nat`, an SR-IOV VF, a vDPA device) takes no
host-side rate: `check` refuses it before anything is created."""
from __future__ import annotations

import json
import shlex
import xml.etree.ElementTree as ET
from pathlib import Path

from ...errors import CommandFailed, HypervisorError, Unsupported
from ...host import runner, state
from ...host.netns import netns_argv
from ...host.ssh import guest_argv
from ...host.state import Target
from ...host.testpoints import skip_impairment
from ...lab import modes, nics
from ...lab.model import Impairment, Lab, Nic
from ...lab.naming import object_name

NETEM_UNKNOWN = "Specified qdisc kind is unknown"   # tc's words when sch_netem is missing
TBF_LATENCY = "100ms"          # how long tbf may queue before it drops
NETEM_PARTS = ("delay_ms", "jitter_ms", "loss_pct")


def has_tap(lab: Lab, nic: Nic) -> bool:
    """Whether libvirt gives this NIC a tap on the host (network and bridge interfaces do)."""
    return nics.NIC_MODELS[nic.model].libvirt_interface == "emulated" and \
        not modes.MODES[lab.network(nic.network).mode].per_vm_nat


def refuse_across_hosts(lab: Lab) -> None:
    """A lab with hosts: gets no impairment (exit 2): the NIC's tap, its control path and the
    listener it is measured against are on the VM's own host, and one Applier per host is not
    built yet. multihost.preflight asks first, before anything exists."""
    for vm in lab.vms:
        for k, nic in enumerate(vm.nics):
            if nic.impair and lab.hosts:
                raise Unsupported(f"vms.{vm.name}.nics[{k}].impair: vnet applies impairments "
                                  "only in a lab without hosts: (this one spans "
                                  f"{', '.join(h.name for h in lab.hosts)}); remove the "
                                  "impair or the hosts: section")


def check(lab: Lab) -> None:
    """Refuse, at plan time, an impairment libvirt cannot apply here (exit 2)."""
    refuse_across_hosts(lab)
    for vm in lab.vms:
        for k, nic in enumerate(vm.nics):
            if nic.impair and nic.impair.rate_mbit and not has_tap(lab, nic):
                raise Unsupported(f"vms.{vm.name}.nics[{k}].impair.rate_mbit: this NIC has no "
                                  "host-side interface to shape on libvirt (QEMU user "
                                  "networking for nat, or a passed-through device); use "
                                  "natnetwork, hostonly or bridged for a rate limit")


def netem_args(impair: Impairment) -> list[str]:
    args = []
    if impair.delay_ms:
        args += ["delay", f"{impair.delay_ms:g}ms", *([f"{impair.jitter_ms:g}ms"]
                                                       if impair.jitter_ms else [])]
    if impair.loss_pct:
        args += ["loss", f"{impair.loss_pct:g}%"]
    return args


def host_netem_argv(tap: str, impair: Impairment) -> list[str]:
    """Every part in one netem qdisc on the tap (netem's own rate, iproute2 tc-netem(8))."""
    rate = ["rate", f"{impair.rate_mbit * 1000:g}kbit"] if impair.rate_mbit else []
    return ["tc", "qdisc", "replace", "dev", tap, "root", "netem", *netem_args(impair), *rate]


def tbf_argv(tap: str, rate_mbit: float) -> list[str]:
    """A token bucket at the rate, with a burst of 10 ms of it (at least two full frames)."""
    burst = max(int(rate_mbit * 1e6 / 8 * 0.01), 3200)
    return ["tc", "qdisc", "replace", "dev", tap, "root", "tbf", "rate",
            f"{rate_mbit * 1000:g}kbit", "burst", str(burst), "latency", TBF_LATENCY]


def guest_netem(impair: Impairment) -> dict | None:
    parts = {k: v for k, v in impair.as_dict().items() if k in NETEM_PARTS}
    return parts or None


def plan(lab: Lab, host_netem: bool) -> list[dict]:
    """What `apply` does for each impaired NIC, as data (the golden files show it): the host's
    tc argv (TAP stands for the NIC's tap) and the guest's netem."""
    out = []
    for vm in lab.vms:
        for k, nic in enumerate(vm.nics):
            if nic.impair is None:
                continue
            host, guest = _split(lab, nic, nic.impair, host_netem)
            out.append({"vm": vm.name, "nic": k, "mac": nic.mac, "host": host, "guest": guest})
    return out


def _split(lab: Lab, nic: Nic, impair: Impairment, host_netem: bool):
    """(host argv or None, guest netem or None) for one NIC."""
    if has_tap(lab, nic) and host_netem:
        return host_netem_argv("TAP", impair), None
    host = tbf_argv("TAP", impair.rate_mbit) if impair.rate_mbit else None
    return host, guest_netem(impair)


class Applier:
    """Applies impairments to one running lab's NICs and records where each part went."""

    def __init__(self, lab: Lab, target: Target, conn, record: dict):
        self.lab, self.target, self.conn, self.record = lab, target, conn, record

    def apply_all(self, progress) -> None:
        for vm in self.lab.vms:
            for k, nic in enumerate(vm.nics):
                if nic.impair is not None:
                    progress(f"impairing {vm.name} NIC {k} ({nic.mac}): "
                             + ", ".join(f"{a} {b:g}" for a, b in nic.impair.as_dict().items()))
                    self.apply(vm.name, nic, nic.impair)

    def apply(self, vm: str, nic: Nic, impair: Impairment | None) -> dict:
        """Apply `impair` to the NIC (None: remove vnet's impairment); returns and records
        what was applied where."""
        tap = self._tap(vm, nic.mac) if has_tap(self.lab, nic) else None
        skipped = skip_impairment()
        wanted = None if skipped else impair
        parts: dict[str, str] = {}
        host_netem = False
        if tap and wanted:
            host_netem = self._host(host_netem_argv(tap, wanted), tolerate_unknown=True)
            if host_netem:
                parts = {k: f"host: netem on {tap} (toward the guest)" for k in wanted.as_dict()}
        if tap and not host_netem:
            if wanted and wanted.rate_mbit:
                self._host(tbf_argv(tap, wanted.rate_mbit))
                parts["rate_mbit"] = f"host: tbf on {tap} (toward the guest)"
            else:
                self._host(["tc", "qdisc", "del", "dev", tap, "root"], check=False)
        netem = None if host_netem or wanted is None else guest_netem(wanted)
        if netem is not None or not host_netem:     # also removes a netem left from before
            done = self._guest(vm, nic.mac, netem)
            why = "the host kernel has no sch_netem" if tap else "the NIC has no host-side tap"
            for key in netem or {}:
                parts[key] = f"guest: netem on {done['ifname']} egress ({why})"
        entry = {"declared": impair.as_dict() if impair else {}, "parts": parts,
                 "summary": _summary(parts, skipped)}
        self.record.setdefault("impair", {}).setdefault(vm, {})[nic.mac] = entry
        state.save(self.target, self.lab.name, self.record)
        return entry

    def _tap(self, vm: str, mac: str) -> str:
        dom = self.conn.conn.lookupByName(object_name(self.lab.name, vm))
        for iface in ET.fromstring(dom.XMLDesc(0)).findall("./devices/interface"):
            node, tap = iface.find("mac"), iface.find("target")
            if node is not None and node.get("address", "").lower() == mac and tap is not None:
                return tap.get("dev")
        raise HypervisorError(f"{vm} has no host-side interface for NIC {mac}")

    def _host(self, argv: list[str], check: bool = True, tolerate_unknown: bool = False) -> bool:
        """Run tc on the host side (in the sandbox's host namespace when there is one)."""
        netns = self.target.netns
        done = runner.run(netns_argv(netns, argv) if netns else argv, check=False, timeout=30)
        if done.returncode and tolerate_unknown and NETEM_UNKNOWN in done.stderr:
            return False
        if done.returncode and check:
            raise CommandFailed(argv, done.returncode, done.stderr)
        return done.returncode == 0

    def _guest(self, vm: str, mac: str, netem: dict | None) -> dict:
        """Put (or remove) netem in the guest over its control path (guest/netem.py)."""
        key = state.existing_key(self.target, self.lab.name)
        request = json.dumps({"mac": mac, "netem": netem})
        argv = guest_argv(str(key), self.record["mgmt"][vm],
                          f"python3 - {shlex.quote(request)}")
        netns = self.target.netns
        source = (Path(__file__).resolve().parents[2] / "guest" / "netem.py").read_text()
        done = runner.run(netns_argv(netns, argv) if netns else argv, check=False, timeout=60,
                          input=source)
        if done.returncode:
            raise HypervisorError(f"could not set netem in {vm} for {mac}: "
                                  f"{(done.stderr or done.stdout).strip()[-300:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])


def _summary(parts: dict[str, str], skipped: bool) -> str:
    if skipped:
        return "nothing (VNET_TEST_SKIP_IMPAIR: a negative control that declares but applies none)"
    if not parts:
        return "nothing (cleared)"
    by_place: dict[str, list[str]] = {}
    for key, where in parts.items():
        by_place.setdefault(where, []).append(key)
    return "; ".join(f"{', '.join(keys)} -> {where}" for where, keys in by_place.items())
