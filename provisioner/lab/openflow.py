"""A network's switch (issue 12): `switch: openvswitch` puts it on an Open vSwitch bridge whose
OpenFlow table is the lab's `flows:` (ovs-ofctl syntax, installed in order; none = NORMAL
switching), with `controller: learning` asking vnet's learning-switch controller on a
table-miss. `switch: linux` (the default) is the Linux bridge libvirt makes, as before.

Flows are checked here, offline, with `ovs-ofctl parse-flow`: a flow Open vSwitch cannot parse
is refused with its own message, and so is a flow whose match it would silently change. A field
that needs a protocol prerequisite (`tp_dst=9000` without `tcp`) parses with exit 0, but Open
vSwitch drops it from the match and says so only in an INFO "normalization changed ofp_match"
line on stderr: the flow would then match every packet.
"""
from __future__ import annotations

import re
from typing import Any

from ..errors import LabFileError, Unsupported, quote
from . import modes

SWITCHES = ("linux", "openvswitch")
CONTROLLERS = ("none", "learning")
MAX_FLOW = 1000                    # characters: a flow is one line of ovs-ofctl syntax
NORMALIZED = "normalization changed ofp_match"


def switch_fields(net: dict, where: str, mode: str) -> dict[str, Any]:
    """The switch, flows and controller of one lab-file network (checked), as Network fields."""
    switch = net.get("switch", "linux")
    if not isinstance(switch, str) or switch not in SWITCHES:
        raise LabFileError(f"{where}.switch", f"unknown switch {quote(switch)}; valid switches: "
                           + ", ".join(SWITCHES))
    if switch == "linux":
        for key in ("flows", "controller"):
            if key in net:
                raise LabFileError(f"{where}.{key}", f"{key} belong to an OpenFlow switch; "
                                   "add switch: openvswitch to this network")
        return {}
    openflow_modes = [m.name for m in modes.MODES.values() if m.openflow_switch]
    if mode not in openflow_modes:
        raise LabFileError(f"{where}.switch", f"openvswitch is offered for networks whose "
                           f"bridge vnet owns alone, not {mode} (its bridge belongs to "
                           f"{_owner(mode)}); valid modes for it: {', '.join(openflow_modes)}")
    if net.get("dhcp") is True:
        raise LabFileError(f"{where}.dhcp", "an openvswitch network has no DHCP server (libvirt "
                           "runs dnsmasq only on bridges it makes itself); remove dhcp, and "
                           "the VMs get static addresses")
    controller = net.get("controller", "none")
    if not isinstance(controller, str) or controller not in CONTROLLERS:
        raise LabFileError(f"{where}.controller", f"unknown controller {quote(controller)}; "
                           "valid controllers: " + ", ".join(CONTROLLERS))
    raw = net.get("flows", [])
    if not isinstance(raw, list):
        raise LabFileError(f"{where}.flows", "must be a list of ovs-ofctl flows, e.g. "
                           "\"priority=0,actions=NORMAL\"")
    flows = tuple(check_flow(flow, f"{where}.flows[{i}]") for i, flow in enumerate(raw))
    return {"switch": switch, "flows": flows, "controller": controller, "dhcp": False}


def _owner(mode: str) -> str:
    return modes.MODES[mode].bridge_owner or mode


def check_flow(flow: Any, where: str) -> str:
    """One flow as Open vSwitch reads it, or LabFileError naming the flow and what OVS said."""
    if not isinstance(flow, str) or not flow.strip() or len(flow) > MAX_FLOW \
            or not flow.isprintable():
        raise LabFileError(where, f"{quote(flow)} is not a flow: one line of ovs-ofctl flow "
                           "syntax, e.g. \"priority=0,actions=NORMAL\"")
    if flow.lstrip().startswith("-"):
        # ovs-ofctl (run as root) would take it as an option, e.g. --log-file=PATH creates PATH
        raise LabFileError(where, f"{quote(flow)} is not a flow: a flow never starts with "
                           "'-'; write ovs-ofctl flow syntax, e.g. \"priority=0,actions=NORMAL\"")
    from ..host import runner

    if runner.which("ovs-ofctl") is None:
        raise LabFileError(where, "flows are checked with ovs-ofctl parse-flow, which is not "
                           "installed", hint="apt-get install openvswitch-switch")
    out = runner.run(["ovs-ofctl", "parse-flow", "--", flow], check=False, timeout=30)
    if out.returncode != 0:
        said = out.stderr.strip().splitlines()[-1] if out.stderr.strip() else \
            f"exit {out.returncode}"
        raise LabFileError(where, f"Open vSwitch cannot parse flow {quote(flow)}: "
                           f"{said.removeprefix('ovs-ofctl: ')}")
    if NORMALIZED in out.stderr:
        pre = _after(out.stderr, "pre:")
        post = _after(out.stderr, "post:")
        raise LabFileError(where, f"Open vSwitch would silently change the match of flow "
                           f"{quote(flow)} from {quote(pre)} to {quote(post or '(match all)')}: "
                           "a field needs its protocol (e.g. tcp or udp before tp_dst, ip "
                           "before nw_dst)")
    return flow


def _after(stderr: str, label: str) -> str:
    """The text after `label` on ovs-ofctl's first normalization line that has it."""
    for line in stderr.splitlines():
        m = re.search(r"\|\s*" + re.escape(label) + r"\s?(.*)$", line)
        if m:
            return m.group(1).strip()
    return ""


def refuse_on_virtualbox(lab) -> None:
    """VirtualBox's internal and host-only networks are its own switches, with no flow table."""
    for net in lab.networks:
        if net.switch != "linux":
            raise Unsupported(f"networks.{net.name}.switch: VirtualBox has no OpenFlow switch "
                              "(its internal and host-only networks are its own switches, with "
                              f"no flow table), so {net.switch} runs on the libvirt backend; on "
                              "VirtualBox use switch: linux")
