"""Where a capture of a multi-host lab runs (drivers/libvirt/vmhost.py): a VM's tap and a
one-host network's bridge are on their own host, entered by its network namespace; a host
reached over SSH is refused, since the same interface name here would be another link."""
import copy

import pytest

from provisioner.drivers.libvirt import vmhost
from provisioner.errors import Unsupported
from provisioner.host.state import Target
from provisioner.lab import loader as labfile

from .test_hosts_labfile import ISSUE_LAB

HERE = Target(uri="qemu:///system?socket=/x/1", sandbox="sb", netns="vnet-sb-host")


def lab_and_record(hv2_uri, hv2_netns):
    data = copy.deepcopy(ISSUE_LAB)
    data["networks"].append({"name": "solo", "mode": "internal", "subnet": "10.73.2.0/24"})
    data["vms"][1]["nics"].append({"network": "solo"})
    record = {"hosts": {"hv1": {"uri": HERE.uri, "netns": HERE.netns},
                        "hv2": {"uri": hv2_uri, "netns": hv2_netns}}}
    return labfile.resolve(data), record


def test_a_sandbox_hosts_tap_and_bridge_are_captured_in_its_namespace():
    lab, record = lab_and_record("qemu:///system?socket=/x/2", "vnet-sb-hv2")
    assert vmhost.capture_target(record, lab, "b", HERE).netns == "vnet-sb-hv2"
    assert vmhost.capture_target(record, lab, "a", HERE).netns == "vnet-sb-host"
    assert vmhost.network_target(record, lab, "solo", HERE).netns == "vnet-sb-hv2"
    assert vmhost.network_target(record, lab, "lan", HERE).netns == "vnet-sb-host"


def test_a_remote_hosts_tap_and_bridge_are_refused_not_looked_up_here():
    lab, record = lab_and_record("qemu+ssh://root@hv2.example/system", None)
    with pytest.raises(Unsupported, match="VM b is on host hv2, a remote host"):
        vmhost.capture_target(record, lab, "b", HERE)
    with pytest.raises(Unsupported, match="network solo is on host hv2, a remote host"):
        vmhost.network_target(record, lab, "solo", HERE)
    assert vmhost.capture_target(record, lab, "a", HERE).netns == "vnet-sb-host"
