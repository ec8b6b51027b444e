"""Open vSwitch bridges of a lab (drivers/libvirt/ovsbridge.py) against a fake ovs-vsctl:
made tagged with lab and owner, with the lab's table (or NORMAL); destroy removes only this
lab's and this owner's bridges; a bridge vnet did not tag is refused, not taken over."""
import json

import pytest

from provisioner.drivers.libvirt import ovsbridge
from provisioner.errors import HypervisorError
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
