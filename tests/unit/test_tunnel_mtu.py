"""Tunnels across hosts (issue 13 with issue 17): a tunnel whose underlay network is stretched
over vnet's VXLAN gets its MTU stated and set (lab/tunnelmtu.py): in the plan, in its cells'
label and in the spec the guest builds it from; over one host's networks nothing changes. A
capture of a stretched network is taken on the near end's tap on that VM's own host."""
import copy

import pytest

from provisioner.drivers.libvirt import vmhost
from provisioner.errors import Unsupported
from provisioner.host import vxlan
from provisioner.host.state import Target
from provisioner.lab import loader as labfile
from provisioner.lab.tunnelmtu import STRETCHED_MTU, tunnel_mtu
from provisioner.ops.plans import tunnel_lines
from provisioner.verify import tunnelcells

from .test_hosts_labfile import ISSUE_LAB


def _lab(kind="vxlan", tid=4242, hosts=True):
    data = copy.deepcopy(ISSUE_LAB)
    data["tunnels"] = [{"name": "t1", "type": kind, "subnet": "10.99.0.0/24",
                        "endpoints": ["a", "b"], **({"id": tid} if tid is not None else {})}]
    if not hosts:
        data.pop("hosts"), data["networks"][0].pop("home")
        for vm in data["vms"]:
            vm.pop("host")
    return labfile.resolve(data)


def test_the_stretched_mtu_is_the_one_vxlan_states():
    assert STRETCHED_MTU == vxlan.UNDERLAY_MTU - vxlan.OVERHEAD


@pytest.mark.parametrize("kind, tid, mtu", [("vxlan", 4242, 1400), ("gretap", 42, 1408),
                                            ("gretap", None, 1412), ("gre", 42, 1422),
                                            ("wireguard", None, 1390)])
def test_a_tunnel_across_hosts_has_its_mtu_stated_and_set(kind, tid, mtu):
    lab = _lab(kind, tid)
    [tunnel] = lab.tunnels
    assert tunnel_mtu(lab, tunnel) == mtu
    keys = {"t1": {"port": 51820, "private": ["x", "y"], "public": ["X", "Y"]}}
    specs = tunnelcells.guest_specs(lab, keys)
    assert [s["mtu"] for vm in ("a", "b") for s in specs[vm]] == [mtu, mtu]
    assert f"MTU {mtu} (its underlay is stretched across hosts)" in tunnel_lines(lab)[0]
    cells = tunnelcells.tunnel_cells(lab, lambda *args: args)
    assert all(f"({kind}, MTU {mtu})" in cell[3] for cell in cells)


def test_a_tunnel_on_one_host_is_left_to_the_kernel():
    lab = _lab(hosts=False)
    [tunnel] = lab.tunnels
    assert tunnel_mtu(lab, tunnel) is None
    assert all("mtu" not in s for specs in tunnelcells.guest_specs(lab, {}).values()
               for s in specs)
    assert "MTU" not in tunnel_lines(lab)[0]


def test_a_stretched_network_is_captured_on_a_vms_tap_on_that_vms_host():
    lab = _lab()
    with pytest.raises(Unsupported, match="network lan is stretched across hosts"):
        vmhost.stretched_refusal(lab, "lan")
    vmhost.stretched_refusal(_lab(hosts=False), "lan")       # one host: its bridge as before
    record = {"hosts": {"hv1": {"uri": "qemu:///a", "netns": "ns1"},
                        "hv2": {"uri": "qemu+ssh://x/system", "netns": "ns2"}}}
    first = Target(uri="qemu:///a", sandbox="s", netns="ns1")
    assert vmhost.vm_target(record, lab, "b", first) == Target(uri="qemu+ssh://x/system",
                                                                sandbox="s", netns="ns2")
    assert vmhost.vm_target({}, _lab(hosts=False), "b", first) == first
