"""The lab file's hosts: / host: / home: (lab/hosts.py): placement, sandbox-filled URIs, the
one-line exit-2 errors, and VirtualBox's refusal. Without hosts: a lab is exactly as before."""
import copy
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from provisioner.drivers.virtualbox.render import VirtualBoxRenderer
from provisioner.errors import ExitStatus, LabFileError, Unsupported
from provisioner.host import sandbox, sandbox_hosts
from provisioner.lab import loader as labfile

ISSUE_LAB = {
    "name": "two",
    "hosts": [{"name": "hv1", "uri": "qemu+ssh://root@hv1.example/system",
               "underlay_ip": "198.51.100.2"},
              {"name": "hv2", "uri": "qemu+ssh://root@hv2.example/system",
               "underlay_ip": "198.51.100.3"}],
    "networks": [{"name": "lan", "mode": "natnetwork", "subnet": "10.73.0.0/24", "home": "hv1"},
                 {"name": "back", "mode": "internal", "subnet": "10.73.1.0/24"}],
    "vms": [{"name": "a", "host": "hv1", "nics": [{"network": "lan"}, {"network": "back"}]},
            {"name": "b", "host": "hv2", "nics": [{"network": "lan"}, {"network": "back"}]}],
}


def _with(change):
    data = copy.deepcopy(ISSUE_LAB)
    change(data)
    return data


def test_the_issue_example_places_vms_and_homes():
    lab = labfile.resolve(copy.deepcopy(ISSUE_LAB))
    assert [(h.name, h.underlay_ip) for h in lab.hosts] == [
        ("hv1", IPv4Address("198.51.100.2")), ("hv2", IPv4Address("198.51.100.3"))]
    assert {vm.name: vm.host for vm in lab.vms} == {"a": "hv1", "b": "hv2"}
    # home defaults to the first listed host that has a VM on the network
    assert {n.name: n.home for n in lab.networks} == {"lan": "hv1", "back": "hv1"}


def test_home_defaults_to_the_first_host_with_a_vm_on_it():
    def only_hv2(d):
        d["networks"][1].pop("subnet")
        d["vms"].append({"name": "c", "host": "hv2", "nics": [{"network": "solo"}]})
        d["networks"].append({"name": "solo", "mode": "hostonly"})
    lab = labfile.resolve(_with(only_hv2))
    assert lab.network("solo").home == "hv2"


def test_without_hosts_the_lab_is_single_host():
    data = _with(lambda d: (d.pop("hosts"), d["networks"][0].pop("home"),
                            [vm.pop("host") for vm in d["vms"]]))
    lab = labfile.resolve(data)
    assert lab.hosts == () and {vm.host for vm in lab.vms} == {None}
    assert {n.home for n in lab.networks} == {None}


@pytest.mark.parametrize("change, path, words", [
    (lambda d: d["vms"][1].update(host="hv9"), "vms.b.host", "unknown host 'hv9'; valid hosts: hv1, hv2"),
    (lambda d: d["vms"][1].pop("host"), "vms.b.host", "is required when the lab lists hosts"),
    (lambda d: d["networks"][0].update(home="hv3"), "networks.lan.home", "valid hosts: hv1, hv2"),
    (lambda d: d.pop("hosts"), "vms.a.host", "the lab has no hosts: list"),
    (lambda d: (d.pop("hosts"), [vm.pop("host") for vm in d["vms"]]), "networks.lan.home",
     "the lab has no hosts: list"),
    (lambda d: d["hosts"][1].update(name="hv1"), "hosts.hv1.name", "duplicate host name"),
    (lambda d: d["hosts"][1].update(uri="http://hv2/"), "hosts.hv2.uri", "not a libvirt QEMU URI"),
    (lambda d: d["hosts"][1].pop("uri"), "hosts.hv2.uri", "is required"),
    (lambda d: d["hosts"][1].update(underlay_ip="198.51.100.2"), "hosts.hv2.underlay_ip",
     "already host hv1"),
    (lambda d: d["hosts"][1].update(underlay_ip="hv2.example"), "hosts.hv2.underlay_ip",
     "not an IPv4 address"),
    (lambda d: d["hosts"][1].update(port=22), "hosts[1].port", "unknown field"),
    (lambda d: d.update(hosts=[]), "hosts", "must not be empty"),
])
def test_bad_hosts_input_names_the_field(change, path, words):
    with pytest.raises(LabFileError) as exc:
        labfile.resolve(_with(change))
    assert exc.value.path == path and words in str(exc.value)
    assert exc.value.status == ExitStatus.BAD_INPUT and "\n" not in str(exc.value)


def test_home_on_a_network_that_is_not_stretched_is_refused():
    def nat_home(d):
        d["networks"].append({"name": "out", "mode": "nat", "home": "hv1"})
    with pytest.raises(LabFileError, match=r"networks.out.home: a nat network is not stretched"):
        labfile.resolve(_with(nat_home))


def test_in_a_sandbox_hosts_are_named_and_the_uri_filled(tmp_path, monkeypatch):
    monkeypatch.setenv("VNET_STATE_DIR", str(tmp_path))
    data = _with(lambda d: d.update(hosts=[{"name": "hv1"}, {"name": "hv2"}]))
    sb = sandbox.describe("mhx")
    lab = labfile.resolve(data, sandbox.lab_defaults("mhx"))
    hv1, hv2 = lab.hosts
    assert hv1.uri == sb.uri and hv1.underlay_ip == IPv4Address(sb.host_lan_ip)
    assert hv2.uri == sandbox_hosts.ssh_uri(sb)           # hv2: the remote path, over SSH
    assert hv2.uri.startswith("qemu+ssh://root@198.51.100.3/system?")
    hv3 = labfile.resolve(_with(lambda d: d.update(hosts=[{"name": "hv1"}, {"name": "hv3"}]) or
                                [vm.update(host="hv3") for vm in d["vms"][1:]]),
                          sandbox.lab_defaults("mhx")).hosts[1]
    assert hv3.uri == f"qemu:///system?socket={sb.state_dir}/hv3/run/libvirt-sock"
    assert hv2.underlay_ip == IPv4Address("198.51.100.3")
    with pytest.raises(LabFileError, match=r"hosts.far.uri: is required .*hv1, hv2, hv3"):
        labfile.resolve(_with(lambda d: d.update(hosts=[{"name": "far"}])),
                        sandbox.lab_defaults("mhx"))


def test_sandbox_hosts_layout(tmp_path, monkeypatch):
    monkeypatch.setenv("VNET_STATE_DIR", str(tmp_path))
    sb = sandbox.describe("mhy")
    view = sandbox_hosts.host_view(sb, 3)
    assert view.host_netns == "vnet-mhy-hv3" and view.state_dir == sb.state_dir / "hv3"
    assert sandbox_hosts.host_view(sb, 1) is sb
    uri = sandbox_hosts.ssh_uri(sb)
    assert uri.startswith("qemu+ssh://root@198.51.100.3/system?keyfile=")
    assert f"socket={sb.state_dir}/hv2/run/libvirt-sock" in uri
    for bad in (0, 9, True, "2"):
        with pytest.raises(Exception, match="--hosts"):
            sandbox_hosts.check_count(bad)


def test_virtualbox_refuses_a_multi_host_lab_with_the_reason():
    lab = labfile.resolve(copy.deepcopy(ISSUE_LAB))
    with pytest.raises(Unsupported, match="VirtualBox has no remote API in vnet"):
        VirtualBoxRenderer().plan(lab)


def test_goldens_have_no_hosts():
    """Existing lab files resolve exactly as before: no host anywhere."""
    for path in sorted(Path("labs").glob("*.yaml")) + sorted(Path("examples").glob("*.yaml")):
        try:
            lab = labfile.load(path)
        except LabFileError:
            continue        # files that are meant to be refused
        assert lab.hosts == () and all(vm.host is None for vm in lab.vms), path
