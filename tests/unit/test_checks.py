"""The checks a lab gets, and what each must show, come from the mode table."""
import pytest

from provisioner import checks, labfile
from provisioner.defaultlab import default_lab
from provisioner.labfile import Defaults
from provisioner.model import Backend
from ipaddress import IPv4Address, IPv4Network

ENDS = checks.Endpoints(host_listener_port=20001, internet_ip="203.0.113.1",
                        host_uplink_ip="203.0.113.2", mgmt_host_ip="100.64.9.1")
SANDBOX = Defaults(bridge="lan0", bridged_subnet=IPv4Network("198.51.100.0/24"),
                   bridged_host_ip=IPv4Address("198.51.100.2"),
                   bridged_router=IPv4Address("198.51.100.1"))


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
