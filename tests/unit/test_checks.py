"""The checks a lab gets, and what each must show, come from the mode table."""
import pytest

from provisioner.verify import checks
from provisioner.lab import loader as labfile
from provisioner.lab.defaults import default_lab
from provisioner.lab.loader import Defaults
from provisioner.lab.model import Backend
from ipaddress import IPv4Address, IPv4Network

ENDS = checks.Endpoints(host_listener_port=20001, internet_ip="203.0.113.1",
                        host_uplink_ip="203.0.113.2", mgmt_host_ip="100.64.9.1")
SANDBOX = Defaults(bridge="lan0", bridged_subnet=IPv4Network("198.51.100.0/24"),
                   bridged_host_ip=IPv4Address("198.51.100.2"),
                   bridged_router=IPv4Address("198.51.100.1"),
                   forward_host_ip=IPv4Address("203.0.113.2"))    # ENDS.host_uplink_ip


def cells(mode, backend=Backend.LIBVIRT, model="virtio"):
    lab = labfile.resolve(default_lab(mode, model), SANDBOX)
    return checks.build(lab, backend, ENDS)


def expected(cs, kind):
    return {c.expected for c in cs if c.kind == kind}


@pytest.mark.parametrize("mode,row", [
    ("bridged", dict(vm_to_host="pass", host_to_vm="pass", vm_to_vm="pass",
                     vm_to_internet="pass", internet_to_vm="pass")),
    ("nat", dict(vm_to_host="pass", host_to_vm="fail", vm_to_vm="fail",
                 vm_to_internet="pass", internet_to_vm="fail")),
    ("natnetwork", dict(vm_to_host="pass", host_to_vm="pass", vm_to_vm="pass",
                        vm_to_internet="pass", internet_to_vm="fail")),
    ("hostonly", dict(vm_to_host="pass", host_to_vm="pass", vm_to_vm="pass",
                      vm_to_internet="fail", internet_to_vm="fail")),
    ("internal", dict(vm_to_host="fail", host_to_vm="fail", vm_to_vm="pass",
                      vm_to_internet="fail", internet_to_vm="fail")),
])
def test_expected_cells_follow_the_libvirt_table(mode, row):
    cs = cells(mode)
    for kind, value in row.items():
        assert expected(cs, kind) == {value}, kind
    assert expected(cs, "nic_model") == {"pass"}


def test_virtualbox_natnetwork_expects_no_direct_host_path():
    assert expected(cells("natnetwork", Backend.VIRTUALBOX), "host_to_vm") == {"fail"}


def test_port_forwards_are_probed_from_host_and_internet():
    forwards = [c for c in cells("natnetwork") if c.kind == "port_forward"]
    assert {c.source for c in forwards} == {"host", "internet"}
    echo = [c for c in forwards if c.probe["port"] == 7001]
    assert echo and all(c.probe["expect_name"] == "vm1" for c in echo)
    ssh = [c for c in forwards if c.probe["port"] == 2221]
    # an SSH forward is proven by logging in and reading the name of the VM the lab names
    assert ssh and all(c.probe["ssh"] and c.probe["expect_name"] == "vm1" and
                       "banner" not in c.probe for c in ssh)


def test_every_guest_probe_is_bound_to_the_nic_under_test():
    for c in cells("hostonly"):
        if c.runner.startswith("guest:") and c.kind != "nic_model":
            assert c.probe["bind_mac"].startswith("52:54:00:")


def test_internal_vm_to_host_targets_the_management_address():
    """The only way such a probe could pass is over the management NIC: it must not."""
    to_host = [c for c in cells("internal") if c.kind == "vm_to_host"]
    assert {c.probe["target"] for c in to_host} == {"100.64.9.1"}


def test_no_internet_cells_outside_a_sandbox():
    ends = checks.Endpoints(20001, None, "127.0.0.1", "100.64.9.1")
    lab = labfile.resolve(default_lab("nat"))
    kinds = {c.kind for c in checks.build(lab, Backend.LIBVIRT, ends)}
    assert "vm_to_internet" not in kinds and "internet_to_vm" not in kinds


def test_e1000_expects_the_e1000_driver():
    models = [c for c in cells("hostonly", model="e1000") if c.kind == "nic_model"]
    assert {c.probe["driver"] for c in models} == {"e1000"}


def test_nat_vm_to_vm_asks_the_segment_who_holds_its_own_address():
    """Every nat VM is 10.0.2.15 on its own private NAT: no IP probe would leave the prober (its
    own answer proved nothing), so the cell asks the NIC's segment by ARP, with the NAT's
    gateway as the control that must answer (tests/unit/test_arp_claim.py runs it)."""
    to_vm = [c for c in cells("nat") if c.kind == "vm_to_vm"]
    assert len(to_vm) == 2
    for c in to_vm:
        claim = c.probe["arp_claim"]
        assert c.expected == "fail" and claim["address"] == "10.0.2.15"
        assert claim["peer"] == c.probe["expect_name"] != c.source
        assert claim["control"] == "10.0.2.2" and claim["peer_mac"] != c.probe["bind_mac"]
        assert claim["note"] == f"10.0.2.15 is {c.source}'s own address on its private 10.0.2.0/24"
    assert not any("arp_claim" in c.probe for c in cells("natnetwork"))


def test_negative_udp_cells_name_their_positive_controls():
    def udp(expected, listener):
        return checks.Check("port_forward", "n", "nat", "host", "x", expected, "host",
                            {"proto": "udp", "listener": listener})
    cs = [udp("pass", "vm1:53"), udp("fail", "vm1:53"), udp("pass", "vm2:53"),
          udp("fail", "vm3:53"), udp("pass", "vm1:53")]
    checks.link_controls(cs)
    assert cs[1].probe["confirmed_by"] == ["0", "4"]
    assert cs[3].probe["confirmed_by"] == []           # no control: silence stays an error
    assert "confirmed_by" not in cs[0].probe


def test_verdict_counts_ok_red_skipped():
    ok = {"observed": "pass", "ok": True}
    red = {"observed": "error", "ok": False}
    skipped = {"observed": "skipped", "ok": False}
    assert checks.tally([ok, red, skipped, skipped]) == {"ok": 1, "red": 1, "skipped": 2}
    assert checks.verdict([ok, skipped]) == "green"
    assert checks.verdict([ok, red]) == "red"
    assert checks.verdict([skipped]) == checks.verdict([]) == "nothing verified"


def test_udp_silence_is_settled_by_a_control_that_ran_elsewhere():
    """A negative UDP cell probed from the Internet, its positive control from a guest."""
    from provisioner.verify import run as verifier

    probe = verifier.probe_module()
    silent = {"observed": "error", "detail": "no UDP answer", "silent": True}

    def run(control):
        cs = [checks.Check("port_forward", "n", "nat", "vm1", "x", "pass", "guest:vm1",
                           {"proto": "udp", "listener": "l"}),
              checks.Check("internet_to_vm", "n", "nat", "internet", "x", "fail", "internet",
                           {"proto": "udp", "listener": "l"})]
        checks.link_controls(cs)
        verifier.record(cs, {"vm1": {"probes": {"0": control}, "drivers": {}}},
                        {"internet:1": silent}, probe.settle_silence)
        return cs[1]
    assert run({"observed": "pass", "detail": "nonce echoed by vm1"}).ok
    unconfirmed = run({"observed": "fail", "detail": "refused"})
    assert unconfirmed.observed == "error" and "no positive control" in unconfirmed.detail


def test_error_is_never_ok_whatever_was_expected():
    cell = checks.Check("vm_to_vm", "n", "nat", "vm1", "vm2", "error", "guest:vm1",
                        observed="error")
    assert not cell.ok
