"""The tiny guest's kernel command line, with no I/O: one function for every backend.

The tiny image is configured only by kernel parameters (provisioner/guest/files/rootfs/usr/lib/vnet/
init reads them): vnet.host, vnet.key and one vnet.if per NIC that gets an address; a bond is one
vnet.bond (its members) plus the vnet.if of its address on its MAC; vnet.route per route vnet
adds; vnet.forward=1 on a router VM (issue 17). libvirt puts
the line in the domain's <cmdline> (direct kernel boot), VirtualBox into each VM's
isolinux.cfg (provisioner/guest/bootiso.py); both add the lab's management NIC as the last vnet.if.
"""
from __future__ import annotations

from dataclasses import replace

from ..lab.model import Lab, Nic, Vm
from ..lab.tunnels import tunnels_of

# QEMU's pc machine (libvirt's domains, vnet's libvirt Vagrant box, and accel.boot_once: the
# KVM probe and the benchmark's bare boot): PCI interrupts routed by the PIIX
# router itself, not through ACPI's interrupt links. Enabling a device evaluated its link's AML,
# 0.09 s each under TCG: 0.37 s of every boot went to four links when virtio_pci was loaded.
# virtio uses MSI-X anyway; e1000's INTx is routed by the PIIX ("PIIX/ICH IRQ router" in dmesg).
# Not for VirtualBox, whose firmware's routing table this machine cannot test.
QEMU_PC_ARGS = "acpi=noirq"


def if_arg(lab: Lab, nic: Nic, static_modes: frozenset[str] = frozenset()) -> str | None:
    """The guest's address configuration for one NIC, or None when it gets no address:
    `vnet.if=MAC,dhcp[,ROUTER]` or `vnet.if=MAC,static,IP/PREFIX[,ROUTER]`. Networks whose
    mode is in static_modes get their planned address statically even when they run DHCP
    (a DHCP server that cannot reserve addresses would hand out others)."""
    net = lab.network(nic.network)
    gateway = f",{net.router}" if net.router else ""
    if net.dhcp and not (net.mode in static_modes and nic.ip is not None):
        return f"vnet.if={nic.mac},dhcp{gateway}"
    if nic.ip is None:
        return None
    return f"vnet.if={nic.mac},static,{nic.ip}{gateway}"


def bond_nic(vm: Vm, nic: Nic) -> Nic | None:
    """What the guest configures for a NIC: itself; for a bond's first member, the bond (its
    MAC and address); None for the other members (they carry no address)."""
    if nic.bond is None:
        return nic
    bond = next(b for b in vm.bonds if b.name == nic.bond)
    return replace(nic, ip=bond.ip, bond=None) if nic.mac == bond.mac else None


def link_args(lab: Lab, vm: Vm, static_modes: frozenset[str] = frozenset()) -> list[str]:
    """`vnet.bond=NAME,MODE,MAC+MAC...` per bond, `vnet.route=SUBNET,VIA` per route vnet adds,
    `vnet.forward=1` for a router and `vnet.tunnel=1` on a VM that ends a tunnel. The init
    builds the bonds before it configures the addresses (a bond's address is a vnet.if on its
    MAC) and adds the routes after them."""
    args = [f"vnet.bond={b.name},{b.mode},{'+'.join(b.members)}" for b in vm.bonds]
    args += [f"vnet.route={r.destination},{r.via}" for r in vm.routes]
    # the tunnel modules load only on a VM that ends a tunnel (guest/modneeds.py TUNNEL)
    ends = bool(tunnels_of(lab, vm.name))
    return args + (["vnet.forward=1"] if vm.router else []) + (["vnet.tunnel=1"] if ends else [])


def key_arg(ssh_pubkey: str) -> str:
    """`ssh-ed25519 AAAA... comment` -> `vnet.key=ssh-ed25519:AAAA...` (no spaces allowed)."""
    kind, b64 = ssh_pubkey.split()[:2]
    return f"vnet.key={kind}:{b64}"


def cmdline(base: str, lab: Lab, vm: Vm, ssh_pubkey: str, management: str | None = None,
            static_modes: frozenset[str] = frozenset()) -> str:
    """The whole kernel command line of one tiny-image VM: base flags, hostname, key, the
    lab's NICs in order, then `vnet.if=<management>` (a `MAC,static,IP/PREFIX` spec) if given."""
    args = [base, f"vnet.host={vm.name}", key_arg(ssh_pubkey)]
    for nic in vm.nics:
        own = bond_nic(vm, nic)
        # a bond's address is planned, and no DHCP server has it reserved: always static
        static = static_modes | {lab.network(nic.network).mode} if nic.bond else static_modes
        if own is not None and (arg := if_arg(lab, own, static)):
            args.append(arg)
    args += link_args(lab, vm, static_modes)
    if management:
        args.append(f"vnet.if={management}")
    return " ".join(args)
