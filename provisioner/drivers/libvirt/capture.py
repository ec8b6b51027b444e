"""Where a libvirt lab's links can be captured on the host side (`vnet capture`, the
encapsulation cell): a NIC's tap is the <target dev='...'/> libvirt gave its interface in the
running domain's live XML (libvirt formatdomain, "Overriding the target element"); a network's
bridge is the one vnet named in the network's XML (lab/naming.bridge_name), or the host bridge
of a bridged network. Both live in the target's network namespace (the sandbox host's).

QEMU user networking (the nat mode, `<interface type='user'>`) has no host-side interface: its
frames never leave the QEMU process (SLIRP). A VF or vDPA device passes the frames to hardware.
Those are refused, with what to use instead."""
from __future__ import annotations

from ...errors import Unsupported
from ...host.capture import CapturePoint
from ...host.state import Target
from ...lab import modes, nics
from ...lab.model import Lab
from ...lab.naming import bridge_name


def user_networking_refusal(where: str, network: str, netdev: str | None = None) -> Unsupported:
    dump = (f"QEMU's own filter-dump on its netdev (virsh qemu-monitor-command DOMAIN --hmp "
            f"'object_add filter-dump,id=cap0,netdev={netdev},file=FILE.pcap')") if netdev \
        else "QEMU's own filter-dump object on each VM's netdev"
    return Unsupported(f"{where} is on nat network {network}, which libvirt realizes as QEMU "
                       f"user networking (SLIRP): its frames never leave the QEMU process, so no "
                       f"host-side interface carries them; use a natnetwork network (vnet "
                       f"captures its bridge), tcpdump inside the guest, or {dump}")


def nic_point(lab: Lab, target: Target, vm: str, nic: int, tap: str | None) -> CapturePoint:
    """`tap`: the live target dev of the NIC (None: the domain has none, e.g. not running)."""
    found = lab.vm(vm).nics[nic]
    net = lab.network(found.network)
    where = f"NIC {vm}:{nic} ({found.mac})"
    if modes.MODES[net.mode].libvirt_interface == "user":
        raise user_networking_refusal(where, net.name, f"hostnet{nic}")
    if nics.NIC_MODELS[found.model].libvirt_interface in ("hostdev", "vdpa"):
        raise Unsupported(f"{where} is a {found.model} device: its frames go to the hardware, "
                          f"not through a host interface; capture on the physical function's "
                          f"switch or inside the guest")
    if tap is None:
        raise Unsupported(f"{where} has no host-side interface: is {vm} running? "
                          f"(vnet status {lab.name})")
    return CapturePoint(f"{vm}:{nic} (tap {tap} on network {net.name})", tap, target.netns)


def network_point(lab: Lab, target: Target, network: str) -> CapturePoint:
    net = lab.network(network)
    interface = modes.MODES[net.mode].libvirt_interface
    if interface == "user":
        raise user_networking_refusal(f"network {network}", network)
    if net.switch == "openvswitch":
        # the bridge's LOCAL port gets what the flow table sends it, not frames switched
        # between VM ports; Unsupported makes the encapsulation cell take the near end's tap
        raise Unsupported(f"network {network} is an Open vSwitch bridge, whose own interface "
                          f"does not see frames switched between VM ports; capture on a VM's "
                          f"NIC on it instead (its tap)")
    bridge = net.bridge if interface == "bridge" else bridge_name(lab.name, network)
    return CapturePoint(f"network {network} (bridge {bridge})", bridge, target.netns)
