"""The lab `vnet create --mode MODE` builds: N VMs on one network of that mode."""
from __future__ import annotations

from . import modes, nics

SSH_PORT_BASE = 2221
ECHO_PORT_BASE = 7001
ECHO_PORT = 7          # the image's nonce echo listener


def default_lab(mode: str, nic_model: str = "virtio", vms: int = 2, name: str | None = None,
                bridge: str | None = None, port_base: int = 0, pf: str | None = None) -> dict:
    """A lab file as data, so it goes through the same validation as a file would. Modes with
    port forwarding get an SSH and an echo forward per VM; the echo one is what verify probes."""
    network: dict = {"name": "net", "mode": mode}
    if bridge is not None:
        network["bridge"] = bridge
    names = [f"vm{i + 1}" for i in range(vms)]
    if mode in modes.MODES and modes.MODES[mode].port_forwards:
        network["port_forwards"] = [
            fwd for i, vm in enumerate(names) for fwd in (
                {"name": f"ssh-{vm}", "proto": "tcp", "host_port": SSH_PORT_BASE + port_base + i,
                 "vm": vm, "guest_port": 22},
                {"name": f"echo-{vm}", "proto": "tcp",
                 "host_port": ECHO_PORT_BASE + port_base + i, "vm": vm, "guest_port": ECHO_PORT})]
    return {
        "name": name or mode,
        "networks": [network],
        "vms": [{"name": vm, "image": "tiny", "memory": 128, "cpus": 1,
                 "nics": [_nic(nic_model, i, pf)]} for i, vm in enumerate(names)],
    }


def _nic(model: str, index: int, pf: str | None) -> dict:
    nic = {"network": "net", "model": model}
    kind = nics.NIC_MODELS[model].libvirt_interface if model in nics.NIC_MODELS else None
    if kind == "hostdev" and pf:
        nic["pf"] = pf                                  # libvirt picks a free VF of it
    if kind == "vdpa":
        nic["device"] = f"/dev/vhost-vdpa-{index}"      # one vDPA device per VM
    return nic
