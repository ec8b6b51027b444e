"""Addresses on a LAN that several labs share. A bridged network puts its guests on the host's
LAN (in a sandbox: its one LAN bridge), and every lab on that target picks automatic addresses
from the same first host number, so two bridged labs at once would answer ARP for the same
address: each lab's cells would then judge the other lab's guests. `vnet create` refuses that
before anything is created (conflicts), and `vnet matrix`, which runs labs at once, gives each
lab its own block of the LAN (block_ips)."""
from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network

from ..errors import LabFileError
from . import modes
from .model import Lab

BLOCK = 8          # addresses per lab in a shared LAN's blocks (block_ips)


def lan_addresses(lab: Lab) -> dict[tuple[str, IPv4Address], str]:
    """{(LAN bridge, address): where the lab file puts it} for the lab's guests on a LAN."""
    on_lan = {net.name: net.bridge for net in lab.networks
              if modes.MODES[net.mode].subnet == "lan" and net.bridge}
    found = {}
    for vm in lab.vms:
        placed = [(f"nics[{i}]", nic.network, nic.ip) for i, nic in enumerate(vm.nics)
                  if nic.bond is None]
        placed += [(f"bonds.{bond.name}", bond.network, bond.ip) for bond in vm.bonds]
        for where, network, ip in placed:
            if network in on_lan and ip is not None:
                found[(on_lan[network], ip.ip)] = f"vms.{vm.name}.{where}.ip"
    return found


def conflicts(lab: Lab, others: dict[str, Lab]) -> None:
    """LabFileError (exit 2) naming the first address this lab would share on a LAN with one
    of `others` (the labs already recorded on the same target, by name)."""
    others = {name: other for name, other in others.items() if name != lab.name}
    mine = lan_addresses(lab) if others else {}
    for name, other in sorted(others.items()):
        for key in sorted(set(mine) & set(lan_addresses(other)), key=str):
            bridge, ip = key
            raise LabFileError(mine[key], f"{ip} on the LAN bridge {bridge} is already used by "
                               f"lab {name}; give this NIC another ip: or destroy lab {name}")


def block_ips(subnet: IPv4Network, first_host: int, index: int, count: int) -> list[str]:
    """`count` addresses of lab `index`'s own block on a shared LAN, from `first_host` up."""
    start = subnet.network_address + first_host + index * BLOCK
    if count > BLOCK or start + BLOCK - 1 >= subnet.broadcast_address:
        raise LabFileError("vms", f"the LAN {subnet} has no free block of {BLOCK} addresses "
                           f"for lab {index + 1} ({count} VMs)")
    return [str(start + i) for i in range(count)]
