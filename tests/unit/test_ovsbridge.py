"""Open vSwitch bridges of a lab (drivers/libvirt/ovsbridge.py) against a fake ovs-vsctl:
made tagged with lab and owner, with the lab's table (or NORMAL); destroy removes only this
lab's and this owner's bridges; a bridge vnet did not tag is refused, not taken over."""
import json

import pytest

from provisioner.drivers.libvirt import ovsbridge
from provisioner.errors import HypervisorError, LabFileError
from provisioner.host.runner import Result
from provisioner.host.state import Target
from provisioner.lab import loader as labfile
from provisioner.lab.naming import bridge_name


class FakeOvs:
    def __init__(self, bridges=None):
        self.bridges = dict(bridges or {})      # name -> external_ids
        self.calls = []

    def answers(self):
        return True

    def vsctl(self, *args, check=True):
        self.calls.append(("vsctl", *args))
        out = ""
        if args[-1] == "show" or args[:1] == ("--timeout=5",):
            out = ""
        elif "list-br" in args:
            out = "\n".join(self.bridges)
        elif args[-2:] == ("list", "Bridge"):
            out = json.dumps({"data": [[n, ["map", sorted(ids.items())]]
                                       for n, ids in self.bridges.items()]})
        elif "add-br" in args:
            br = args[args.index("add-br") + 1]
            self.bridges[br] = {a.split(":", 1)[1].split("=")[0]: a.split("=", 1)[1]
                                for a in args if a.startswith("external_ids:")}
        elif "del-br" in args:
            self.bridges.pop(args[-1], None)
        return Result(["ovs-vsctl", *args], 0, out, "")

    def ofctl(self, *args, check=True, input=None):
        self.calls.append(("ofctl", *args, input))
        return Result(["ovs-ofctl", *args], 0, "", "")


LAB = {"name": "oflab", "networks": [
    {"name": "a", "mode": "internal", "switch": "openvswitch",
     "flows": ["priority=5,arp,actions=NORMAL"]},
    {"name": "b", "mode": "internal", "switch": "openvswitch"},
    {"name": "c", "mode": "internal"}],
    "vms": [{"name": "v", "nics": [{"network": "a"}, {"network": "b"}, {"network": "c"}]}]}


@pytest.fixture
def ovs(monkeypatch):
    monkeypatch.setattr(ovsbridge, "datapath", lambda: ("netdev", "no kernel module"))
    return FakeOvs({"br-other": {}, "vnother": {"vnet-lab": "else", "vnet-owner": "me"}})


def test_bridges_are_tagged_and_get_the_labs_table(ovs):
    lab = labfile.resolve(LAB)
    ovsbridge.create(lab, Target(uri="x"), "me", lambda m: None, ovs)
    a, b = bridge_name("oflab", "a"), bridge_name("oflab", "b")
    assert ovs.bridges[a] == {"vnet-lab": "oflab", "vnet-owner": "me", "vnet-network": "a"}
    assert bridge_name("oflab", "c") not in ovs.bridges          # a Linux bridge: libvirt's
    added = {c[2]: c[-1] for c in ovs.calls if c[:2] == ("ofctl", "add-flows")}
    assert added == {a: "priority=5,arp,actions=NORMAL\n", b: "priority=0,actions=NORMAL\n"}
    adds = [c for c in ovs.calls if "add-br" in c]
    assert all("fail_mode=secure" in c and "datapath_type=netdev" in c for c in adds)


def test_destroy_removes_only_this_labs_bridges(ovs):
    lab = labfile.resolve(LAB)
    ovsbridge.create(lab, Target(uri="x"), "me", lambda m: None, ovs)
    ovs.bridges["vnsameother"] = {"vnet-lab": "oflab", "vnet-owner": "someone-else"}
    removed = ovsbridge.remove("oflab", Target(uri="x"), "me", lambda m: None, ovs)
    assert sorted(removed) == sorted(f"bridge {bridge_name('oflab', n)}" for n in "ab")
    assert set(ovs.bridges) == {"br-other", "vnother", "vnsameother"}


def test_an_untagged_bridge_with_the_planned_name_is_refused(ovs):
    ovs.bridges[bridge_name("oflab", "a")] = {}
    with pytest.raises(HypervisorError, match="does not belong to lab oflab"):
        ovsbridge.create(labfile.resolve(LAB), Target(uri="x"), "me", lambda m: None, ovs)


HOSTONLY = {"name": "oflab", "networks": [
    {"name": "h", "mode": "hostonly", "subnet": "10.72.5.0/24", "switch": "openvswitch"}],
    "vms": [{"name": "v", "nics": [{"network": "h", "ip": "10.72.5.10"}]}]}


def routes(monkeypatch, table):
    """The host's `ip -4 -o route show` is `table`; every other host-side command is recorded."""
    from provisioner.host import runner

    ran = []

    def run(argv, check=True, **kw):
        ran.append(argv)
        return Result(argv, 0, table if argv[-3:] == ["-o", "route", "show"] else "", "")
    monkeypatch.setattr(runner, "run", run)
    return ran


def test_a_hostonly_subnet_a_host_route_already_covers_is_refused_before_any_bridge(
        ovs, monkeypatch):
    ran = routes(monkeypatch, "default via 192.0.2.1 dev eth0\n"
                              "10.72.0.0/16 dev wg0 proto kernel scope link src 10.72.0.1\n")
    with pytest.raises(LabFileError) as exc:
        ovsbridge.create(labfile.resolve(HOSTONLY), Target(uri="x"), "me", lambda m: None, ovs)
    assert exc.value.status == 2 and exc.value.message.startswith("networks.h.subnet:")
    assert "10.72.0.0/16 (dev wg0)" in exc.value.message
    assert not [c for c in ovs.calls if "add-br" in c]              # nothing half-made
    assert not [a for a in ran if "addr" in a]


def test_the_default_route_and_the_bridges_own_route_are_no_clash(ovs, monkeypatch):
    br = bridge_name("oflab", "h")
    ran = routes(monkeypatch, "default via 192.0.2.1 dev eth0\n"
                              f"10.72.5.0/24 dev {br} proto kernel scope link src 10.72.5.1\n")
    ovsbridge.create(labfile.resolve(HOSTONLY), Target(uri="x"), "me", lambda m: None, ovs)
    assert br in ovs.bridges and ["ip", "link", "set", br, "up"] in ran
