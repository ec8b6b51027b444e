"""The `topology` section of a verification result: what the lab is made of, as plain JSON, so
a saved report (a CI artifact) can be drawn later without the lab file (provisioner/verify/htmlreport.py).

    {"networks": [{name, mode, subnet, dhcp, host_ip, bridge}],
     "vms":      [{name, image, memory, cpus, control_address,
                   nics: [{network, model, mac, address}]}],
     "forwards": [{name, network, proto, host_ip, host_port, vm, guest_port,
                   host (with several hosts: the one that serves it)}]}

Optional sections, written only when the lab has them (a renderer must accept them absent):
    "bonds":   [{name, vm, mode, members: [mac, ...]}]
    "tunnels": [{name, kind, endpoints: [vm or network, ...]}]
    "hosts":   [{name, vms: [vm, ...]}]          (only when there are several)

`address` is the planned address with its prefix ("192.168.150.10/24"), "10.0.2.15/24" on a
per-VM NAT (each VM has its own, as in VirtualBox), or null when DHCP decides it.
"""
from __future__ import annotations

from ..lab import modes
from ..lab.forwardhosts import served_on
from ..lab.model import Lab

NAT_GUEST_ADDRESS = "10.0.2.15/24"      # QEMU's and VirtualBox's per-VM NAT hand this out


def of(lab: Lab, control: dict[str, str | None] | None = None) -> dict:
    """The topology of `lab`; `control` maps VM name -> the address Ansible reached it on."""
    control = control or {}

    def address(nic):
        if nic.ip is not None:
            return str(nic.ip)
        return NAT_GUEST_ADDRESS if modes.MODES[lab.network(nic.network).mode].per_vm_nat else None

    found = {
        "networks": [{"name": n.name, "mode": n.mode,
                      "subnet": str(n.subnet) if n.subnet else None, "dhcp": n.dhcp,
                      "host_ip": str(n.host_ip) if n.host_ip else None, "bridge": n.bridge}
                     for n in lab.networks],
        "vms": [{"name": vm.name,
                 "image": vm.image if isinstance(vm.image, str) else vm.image.name,
                 "memory": vm.memory, "cpus": vm.cpus,
                 "control_address": control.get(vm.name),
                 "nics": [{"network": nic.network, "model": nic.model, "mac": nic.mac,
                           "address": address(nic)} for nic in vm.nics]}
                for vm in lab.vms],
        "forwards": [{"name": f.name, "network": f.network, "proto": f.proto,
                      "host_ip": str(f.host_ip), "host_port": f.host_port, "vm": f.vm,
                      "guest_port": f.guest_port,
                      **({"host": served_on(lab, f)} if len(lab.hosts) > 1 else {})}
                     for n in lab.networks for f in n.port_forwards],
    }
    bonds = [{"name": b.name, "vm": vm.name, "mode": b.mode, "members": list(b.members)}
             for vm in lab.vms for b in vm.bonds]
    tunnels = [{"name": t.name, "kind": t.type, "endpoints": [e.vm for e in t.endpoints]}
               for t in lab.tunnels]
    hosts = [{"name": h.name, "vms": [vm.name for vm in lab.vms if vm.host == h.name]}
             for h in lab.hosts]
    for key, value in (("bonds", bonds), ("tunnels", tunnels), ("hosts", hosts)):
        if value and (key != "hosts" or len(value) > 1):
            found[key] = value
    return found
