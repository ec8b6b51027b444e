from ipaddress import IPv4Network

from ..model import Backend
from . import Mode, Reachability

_ROW = Reachability(vm_to_host="yes", host_to_vm="port-forward", vm_to_vm="no",
                    vm_to_internet="yes", internet_to_vm="port-forward")

MODE = Mode(
    name="nat",
    rank=2,
    summary="each VM has its own private NAT (10.0.2.0/24, host at 10.0.2.2); "
            "reach it only through port forwards",
    has_dhcp_server=True,
    subnet="fixed",
    host_on_network=True,     # 10.0.2.2 is the host, as seen through the NAT engine
    port_forwards=True,
    expected={Backend.VIRTUALBOX: _ROW, Backend.LIBVIRT: _ROW},
    differences={Backend.LIBVIRT: "realized as QEMU user networking (one private stack per NIC); "
                                  "same promises as VirtualBox NAT"},
    fixed_subnet=IPv4Network("10.0.2.0/24"),
    vbox_adapter="nat", libvirt_interface="user", per_vm_nat=True, host_forwards="hostfwd",
    bridge_owner="QEMU's user network",
)
