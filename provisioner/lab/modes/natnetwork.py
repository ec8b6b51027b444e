from ..model import Backend
from . import Mode, Reachability

MODE = Mode(
    name="natnetwork",
    rank=3,
    summary="VMs share one NAT network: they reach each other and the Internet; "
            "inbound only through port forwards",
    has_dhcp_server=True,
    subnet="auto",
    host_on_network=True,
    port_forwards=True,
    expected={
        Backend.VIRTUALBOX: Reachability(vm_to_host="yes", host_to_vm="port-forward",
                                         vm_to_vm="yes", vm_to_internet="yes",
                                         internet_to_vm="port-forward"),
        Backend.LIBVIRT: Reachability(vm_to_host="yes", host_to_vm="yes", vm_to_vm="yes",
                                      vm_to_internet="yes", internet_to_vm="port-forward"),
    },
    differences={Backend.LIBVIRT: "host_to_vm is yes: libvirt puts the host on the NAT "
                                  "network's bridge (the gateway address), so the host reaches "
                                  "guests directly; VirtualBox's NAT service does not"},
    vbox_adapter="natnetwork", libvirt_forward="nat", host_forwards="proxy",
    vbox_static_addresses=True,
    bridge_owner="libvirt's NAT and DHCP",
)
