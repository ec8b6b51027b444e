from ..model import Backend
from . import Mode, Reachability

_ROW = Reachability(vm_to_host="no", host_to_vm="no", vm_to_vm="yes",
                    vm_to_internet="no", internet_to_vm="no")

MODE = Mode(
    name="internal",
    rank=5,
    summary="VMs reach only each other: no host address, no DHCP server, no way out",
    has_dhcp_server=False,
    subnet="auto",
    host_on_network=False,
    port_forwards=False,
    expected={Backend.VIRTUALBOX: _ROW, Backend.LIBVIRT: _ROW},
    vbox_adapter="intnet", unrouted_bridge=True, openflow_switch=True,
)
