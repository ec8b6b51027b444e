"""Open vSwitch bridges and REJECT rules are never orphaned (issue 12 review): `destroy` keeps
a lab's state when the lab has openvswitch networks and no Open vSwitch answers; `gc` removes
bridges tagged by this owner whose lab has no state; the REJECT rules go by their comment even
when the bridge is gone. Fake ovs-vsctl and iptables, the hypervisor faked; nothing runs."""
import pytest

from provisioner.drivers.libvirt import lifecycle, ovsbridge
from provisioner.errors import HypervisorError
from provisioner.host import runner, state
from provisioner.host.state import Target

from .lab_fakes import FakeDriver
from .test_ovsbridge import FakeOvs

TARGET = Target(uri="qemu:///system")
OVS_LAB = {"name": "oflab", "networks": [{"name": "h", "mode": "hostonly", "subnet":
                                          "10.72.5.0/24", "switch": "openvswitch"}],
           "vms": [{"name": "v", "nics": [{"network": "h", "ip": "10.72.5.10"}]}]}
RULES = ['-A FORWARD -i vnoldbr -m comment --comment "vnet me oflab hostonly" -j REJECT',
         # another state root's lab of the same name: its isolation must stay
         '-A FORWARD -i vnother -m comment --comment "vnet them oflab hostonly" -j REJECT',
         # an older vnet's rule (no owner in it): it goes with its bridge, or once that is gone
         '-A FORWARD -i vnlegacy -m comment --comment "vnet oflab hostonly" -j REJECT']


class SilentOvs(FakeOvs):
    def answers(self):
        return False


@pytest.fixture
def host(tmp_path, monkeypatch):
    """State under tmp_path, a fake driver, and iptables whose FORWARD chain has RULES."""
    monkeypatch.setenv("VNET_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setattr(lifecycle, "LibvirtDriver", FakeDriver)
    ran = []

    def run(argv, check=True, **kw):
        ran.append(argv)
        listed = "\n".join(RULES) + "\n" if argv[-2:] == ["-S", "FORWARD"] else ""
        return runner.Result(argv, 0, listed, "")
    monkeypatch.setattr(runner, "run", run)
    monkeypatch.setattr(runner, "which", lambda name: f"/usr/sbin/{name}")
    return ran


def test_destroy_keeps_the_state_when_open_vswitch_does_not_answer(host, monkeypatch):
    monkeypatch.setattr(ovsbridge, "for_target", lambda target: SilentOvs())
    lab_dir = state.save(TARGET, "oflab", {"lab": "oflab", "lab_data": OVS_LAB})
    with pytest.raises(HypervisorError) as exc:
        lifecycle.destroy("oflab", TARGET, lambda m: None)
    assert "no Open vSwitch answers" in exc.value.message
    assert "vnet destroy oflab" in exc.value.hint
    assert (lab_dir / state.RECORD).exists()
    assert not [a for a in host if "-D" in a]        # the bridge may still exist: rules stay


def test_a_lab_without_openvswitch_networks_is_destroyed_without_it(host, monkeypatch):
    monkeypatch.setattr(ovsbridge, "for_target", lambda target: SilentOvs())
    lab_dir = state.save(TARGET, "plain", {"lab": "plain", "lab_data": {"networks": [
        {"name": "n", "mode": "internal"}]}})
    lifecycle.destroy("plain", TARGET, lambda m: None)
    assert not lab_dir.exists()


def deleted(ran) -> list[str]:
    return [a[a.index("-i") + 1] for a in ran if "-D" in a]


def test_this_owners_reject_rules_go_by_their_comment_even_when_the_bridge_is_gone(host):
    removed = ovsbridge.remove("oflab", TARGET, "me", lambda m: None, FakeOvs(), needed=True)
    assert ["iptables", "-w", "-D", "FORWARD", "-i", "vnoldbr", "-m", "comment", "--comment",
            "vnet me oflab hostonly", "-j", "REJECT"] in host
    # not another owner's, nor an older vnet's whose bridge still exists (`ip link show` answers)
    assert deleted(host) == ["vnoldbr"]
    assert len(removed) == 1 and removed[0].startswith("iptables rule")


def test_an_older_vnets_rule_goes_with_its_bridge(host):
    ovs = FakeOvs({"vnlegacy": {"vnet-lab": "oflab", "vnet-owner": "me"}})
    ovsbridge.remove("oflab", TARGET, "me", lambda m: None, ovs)
    assert sorted(deleted(host)) == ["vnlegacy", "vnoldbr"]


def test_gc_removes_bridges_of_this_owner_whose_lab_has_no_state(host, monkeypatch):
    ovs = FakeOvs({"vnghost": {"vnet-lab": "ghost", "vnet-owner": FakeDriver.owner},
                   "vnkept": {"vnet-lab": "ghost2", "vnet-owner": "someone-else"}})
    monkeypatch.setattr(ovsbridge, "for_target", lambda target: ovs)
    removed = lifecycle.gc(TARGET, lambda m: None)
    assert "bridge vnghost" in removed
    assert set(ovs.bridges) == {"vnkept"}


def test_an_older_vnets_rule_goes_once_its_bridge_is_gone(host, monkeypatch):
    """A destroy that lost the bridge before the rule (a crash between the two) left the older
    vnet's rule for good: it isolated nothing, and would reject a later bridge of that name."""
    listed = runner.run

    def run(argv, check=True, **kw):
        if argv[:3] == ["ip", "link", "show"]:
            return runner.Result(argv, 0 if argv[-1] == "vnother" else 1, "", "")
        return listed(argv, check=check, **kw)
    monkeypatch.setattr(runner, "run", run)
    ovsbridge.remove("oflab", TARGET, "me", lambda m: None, FakeOvs(), needed=True)
    assert sorted(deleted(host)) == ["vnlegacy", "vnoldbr"]

