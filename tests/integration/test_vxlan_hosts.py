"""A network stretched between two sandbox hosts over VXLAN (host/vxlan.py), with libvirt's
networks on each host: the home host's with its address and dnsmasq, the other a plain bridge.
A port on hv2's bridge reaches the home host's address (dnsmasq's DNS port) through the
tunnel; with the VXLAN port blocked on the underlay it does not (negative control); destroy's
`remove` deletes only the lab's tagged devices."""
import os
import shutil
import tempfile
from ipaddress import IPv4Address

import pytest

from provisioner.host import netns, runner, sandbox, sandbox_hosts, sandbox_setup, vxlan
from provisioner.drivers.libvirt.render import Context, LibvirtRenderer
from provisioner.lab import loader as labfile

from .conftest import iptables_rule, missing_tools, vxlan_drop_rule

pytestmark = pytest.mark.integration

OWNER = "0123456789abcdef"       # the owner id the VXLAN aliases name (vxlan.py)
TOOLS = {"ip": "iproute2", "bridge": "iproute2", "unshare": "util-linux",
         "libvirtd": "libvirt-daemon-system", "dnsmasq": "dnsmasq-base",
         "iptables": "iptables", "dropbear": "dropbear-bin", "ssh-keygen": "openssh-client"}


SKIP = missing_tools(TOOLS, "creates network namespaces, mounts and private libvirtds")
if SKIP:
    pytest.skip(SKIP, allow_module_level=True)
libvirt = pytest.importorskip("libvirt", reason="libvirt-python is missing: pip install .")

LAB = {"name": "st", "hosts": [{"name": "hv1"}, {"name": "hv2"}],
       "networks": [{"name": "lan", "mode": "natnetwork", "subnet": "10.73.0.0/24"}],
       "vms": [{"name": "a", "host": "hv1", "nics": [{"network": "lan"}]},
               {"name": "b", "host": "hv2", "nics": [{"network": "lan"}]}]}
BLOCK = vxlan_drop_rule("vnet-test-block-vxlan")


def _home_xml(seg):
    """The home host's network as a natnetwork has it: the host address and dnsmasq."""
    return (f"<network><name>vnet-st-lan</name><forward mode='nat'/>"
            f"<bridge name='{seg.bridge}' stp='off' delay='0'/><mtu size='{seg.mtu}'/>"
            f"<ip address='10.73.0.1' netmask='255.255.255.0'>"
            f"<dhcp><range start='10.73.0.100' end='10.73.0.200'/></dhcp></ip></network>")


def _start(uri, xml):
    conn = libvirt.open(uri)
    try:
        net = conn.networkDefineXML(xml)
        net.create()
    finally:
        conn.close()


@pytest.fixture
def stretched(monkeypatch):
    root = tempfile.mkdtemp(prefix="vnet-mh-", dir="/tmp")
    monkeypatch.setenv("VNET_STATE_DIR", root)
    name, probe = f"mh{os.getpid() % 10000}v", f"mhp{os.getpid() % 10000}"
    try:
        sb = sandbox.up(name, progress=print, hosts=2)
        yield sb, probe
    finally:
        runner.run(["ip", "netns", "del", probe], check=False)
        sandbox.down(name, progress=print)
        shutil.rmtree(root, ignore_errors=True)


def test_network_stretched_between_hosts_and_the_negative_control(stretched):
    sb, probe = stretched
    lab = labfile.resolve(LAB, sandbox.lab_defaults(sb.name))
    plan = vxlan.segments(lab, owner=OWNER)
    (home,), (other,) = ([s for s in plan[h] if s.network == "lan"] for h in ("hv1", "hv2"))
    assert (home.remotes, other.remotes) == ((IPv4Address("198.51.100.3"),),
                                             (IPv4Address("198.51.100.2"),))
    hv1, hv2 = (sandbox_hosts.host_view(sb, i) for i in (1, 2))
    _start(hv1.uri, _home_xml(home))
    # hv2's part as vnet renders it: a plain bridge, no <ip>, no <forward>
    hv2_part = LibvirtRenderer(Context(host="hv2")).plan(lab)
    _start(hv2.uri, next(d.text for d in hv2_part.documents if d.name == "vnet-st-lan"))
    # the preflight's underlay check: hv2 answers hv1, an address nobody holds does not
    assert netns.run_in_netns(hv1.host_netns, vxlan.echo, "198.51.100.3")
    assert not netns.run_in_netns(hv1.host_netns, vxlan.echo, "198.51.100.77", 1.0)
    for view, seg in ((hv1, home), (hv2, other)):
        assert vxlan.vnis_in_use(view.host_netns, [seg], recorded=False) == []
        vxlan.apply(view.host_netns, [seg])

    # A stand-in for a guest on hv2: a veth port on hv2's bridge, 10.73.0.50 in its own namespace.
    runner.run(["ip", "netns", "add", probe])
    runner.run(["ip", "-n", hv2.host_netns, "link", "add", "mhp0", "type", "veth", "peer",
                "name", "eth0", "netns", probe])
    for argv in (["-n", hv2.host_netns, "link", "set", "mhp0", "master", other.bridge],
                 ["-n", hv2.host_netns, "link", "set", "mhp0", "mtu", str(other.mtu), "up"],
                 ["-n", probe, "link", "set", "eth0", "mtu", str(other.mtu), "up"],
                 ["-n", probe, "addr", "add", "10.73.0.50/24", "dev", "eth0"]):
        runner.run(["ip", *argv])

    def home_answers():
        return netns.run_in_netns(probe, sandbox_setup._tcp_answers, "10.73.0.1", 53)

    assert home_answers(), "hv2's bridge does not reach the home host's address over VXLAN"
    # The segment's own device names its VNI and tag; the other host's bridge has no address.
    (dev,) = vxlan.devices(hv2.host_netns)
    assert dev["vni"] == other.vni and dev["alias"] == f"vnet:{OWNER}:st:lan"
    addrs = runner.run(["ip", "-n", hv2.host_netns, "-4", "addr", "show", "dev",
                        other.bridge]).stdout
    assert "inet " not in addrs

    # Negative control: drop the VXLAN port on hv2's underlay and the far side goes dark.
    with iptables_rule(hv2.host_netns, BLOCK):
        assert not home_answers(), "blocked underlay still carried the stretched network"
    assert home_answers()

    # VNIs are checked before creating: the same VNI under another tag is reported.
    foreign = vxlan.Segment(**{**vars(other), "lab": "other"})
    assert "is used by" in vxlan.vnis_in_use(hv2.host_netns, [foreign], recorded=True)[0]
    # the lab's own tag is its own only once the target recorded the lab
    assert vxlan.vnis_in_use(hv2.host_netns, [other], recorded=True) == []
    assert "is used by" in vxlan.vnis_in_use(hv2.host_netns, [other], recorded=False)[0]
    # remove deletes only this owner's devices of this lab.
    assert vxlan.remove(hv2.host_netns, OWNER, "other") == []
    assert vxlan.remove(hv2.host_netns, "fedcba9876543210", "st") == []
    assert vxlan.remove(hv2.host_netns, OWNER, "st") == [other.device]
    assert vxlan.devices(hv2.host_netns) == []


def test_gc_removes_a_lost_labs_parts_on_every_host(stretched):
    """A multi-host lab whose record is gone: gc on the sandbox removes its libvirt objects on
    hv2 and its VXLAN devices on both hosts; a device of another tag is left alone."""
    from dataclasses import replace

    from provisioner.drivers.base import driver_class
    from provisioner.drivers.libvirt.connection import LibvirtDriver
    from provisioner.drivers.libvirt.render import Context, LibvirtRenderer
    from provisioner.host.state import Target
    from provisioner.lab.model import Backend

    sb, _ = stretched
    lab = labfile.resolve(LAB, sandbox.lab_defaults(sb.name))
    hv1, hv2 = (sandbox_hosts.host_view(sb, i) for i in (1, 2))
    on_hv2 = LibvirtDriver(Target(uri=hv2.uri, netns=hv2.host_netns))
    plan = LibvirtRenderer(Context(host="hv2", owner=on_hv2.owner)).plan(lab)
    on_hv2.apply(replace(plan, documents=tuple(d for d in plan.documents if d.kind == "network")),
                 print)
    for view, segs in ((hv1, []), (hv2, vxlan.segments(lab, owner=on_hv2.owner)["hv2"])):
        vxlan.apply(view.host_netns, segs)
    assert "st" in on_hv2.labs()
    runner.run(["ip", "-n", hv1.host_netns, "link", "add", "mhkeep", "type", "vxlan", "id", "7",
                "dstport", "4789", "local", "198.51.100.2"])
    runner.run(["ip", "-n", hv1.host_netns, "link", "set", "mhkeep", "alias", "someone-else"])

    libvirt_driver = driver_class(Backend.LIBVIRT)
    removed = libvirt_driver(libvirt_driver.target_for(sb.name, None)).gc(print)
    assert "st" not in on_hv2.labs()
    assert vxlan.devices(hv2.host_netns) == []
    assert [d["name"] for d in vxlan.devices(hv1.host_netns)] == ["mhkeep"]
    assert any(name.startswith("vx") for name in removed)
