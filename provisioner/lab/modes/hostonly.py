from ..model import Backend
from . import Mode, Reachability

_ROW = Reachability(vm_to_host="yes", host_to_vm="yes", vm_to_vm="yes",
                    vm_to_internet="no", internet_to_vm="no")

MODE = Mode(
    name="hostonly",
    rank=4,
    summary="an isolated network shared by the VMs and the host; nothing is forwarded out",
    has_dhcp_server=True,
    subnet="auto",
    host_on_network=True,
    port_forwards=False,
    expected={Backend.VIRTUALBOX: _ROW, Backend.LIBVIRT: _ROW},
    preferred_subnets=tuple(f"192.168.{k}.0/24" for k in range(56, 64)),
    vbox_adapter="hostonly", openflow_switch=True,
)
