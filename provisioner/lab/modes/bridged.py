from ..model import Backend
from . import Mode, Reachability

_ROW = Reachability(vm_to_host="yes", host_to_vm="yes", vm_to_vm="yes",
                    vm_to_internet="yes", internet_to_vm="yes")

MODE = Mode(
    name="bridged",
    rank=1,
    summary="guests sit on an existing host bridge, as peers of the host on the physical LAN",
    has_dhcp_server=False,   # the LAN's own DHCP is not vnet's; vnet assigns static addresses
    subnet="lan",
    host_on_network=True,
    port_forwards=False,
    expected={Backend.VIRTUALBOX: _ROW, Backend.LIBVIRT: _ROW},
    vbox_adapter="bridged", libvirt_interface="bridge", unrouted_bridge=True,
    physical_lan=True,
    bridge_owner="the host's LAN",
)
