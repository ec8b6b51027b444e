"""Kernel modules the tiny guest loads only where it needs them.

Every insmod costs a TCG guest 0.02-0.2 s (the boot timeline showed 3 s of stage 1 spent in
insmod): the SATA chain (ahci, sd_mod and what only they need: libata, scsi_mod, t10_pi, ...)
serves only a root disk on SATA (VirtualBox; libvirt's is virtio), bonding (and tls) only a lab
bond, the tunnel modules (VXLAN, GRE, IPsec, WireGuard and their crypto: 17 insmods, 0.2 s of
an idle TCG boot) only a VM that ends a lab tunnel. images.py writes lib/modules/needs into the
initramfs, one line per condition:

    <condition> <module> <module> ...

and its init (guest/files/initramfs-init) tests each condition once and skips those modules
where it does not hold. Conditions: `pci-class:<hex prefix>` (a PCI device of that class, from
/sys/bus/pci/devices/*/class), `cmdline:<text>` (the kernel command line contains it). A
module that any unconditional module needs is always loaded."""
from __future__ import annotations

from typing import Callable, Iterable

AHCI = "pci-class:0x0106"            # PCI class 01 (storage), subclass 06 (SATA)
BOND = "cmdline:vnet.bond="          # guest/cmdline.py: a lab bond
TUNNEL = "cmdline:vnet.tunnel=1"     # guest/cmdline.py: the VM ends a lab tunnel


def conditional(roots: Iterable[str], order: list[str], depends: Callable[[str], Iterable[str]],
                needs: dict[str, str]) -> dict[str, list[str]]:
    """{condition: modules in load order} for the modules (of `order`) that only conditional
    roots need, through their dependencies; `roots` are the modules the image asks for, and
    `needs` maps some of them to a condition. A module needed by an unconditional root, or by
    roots of two conditions, stays unconditional."""
    reached: dict[str, set[str]] = {}           # module -> conditions (or "" ) it is needed for

    def mark(module: str, condition: str) -> None:
        if condition in reached.setdefault(module, set()):
            return
        reached[module].add(condition)
        for dep in depends(module):
            mark(dep, condition)
    for module in roots:
        mark(module, needs.get(module, ""))
    result: dict[str, list[str]] = {}
    for module in order:
        conditions = reached.get(module, set())
        if len(conditions) == 1 and "" not in conditions:
            result.setdefault(next(iter(conditions)), []).append(module)
    return result


def needs_file(groups: dict[str, list[str]]) -> bytes:
    return "".join(f"{cond} {' '.join(mods)}\n" for cond, mods in groups.items()).encode()
