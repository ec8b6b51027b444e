"""Issue 12's lab file: `switch`, `flows` (checked offline by ovs-ofctl parse-flow), `controller`
and top-level `checks:`; each bad input is one LabFileError naming its field."""
import copy
import shutil
import subprocess
import sys

import pytest

from provisioner.drivers.virtualbox.render import VirtualBoxRenderer
from provisioner.errors import LabFileError, Unsupported
from provisioner.lab import loader as labfile
from provisioner.lab.model import DeclaredCheck

needs_ovs = pytest.mark.skipif(shutil.which("ovs-ofctl") is None,
                               reason="ovs-ofctl is missing (apt-get install openvswitch-switch)")

BASE = {
    "name": "oflab",
    "networks": [{"name": "fabric", "mode": "internal", "subnet": "10.72.0.0/24",
                  "switch": "openvswitch",
                  "flows": ["priority=200,tcp,nw_dst=10.72.0.11,tp_dst=7,actions=drop",
                            "priority=0,actions=NORMAL"]},
                 {"name": "lan", "mode": "natnetwork"}],
    "vms": [{"name": "v1", "nics": [{"network": "fabric", "ip": "10.72.0.10"},
                                    {"network": "lan"}]},
            {"name": "v2", "nics": [{"network": "fabric", "ip": "10.72.0.11"},
                                    {"network": "lan"}]},
            {"name": "v3", "nics": [{"network": "fabric", "ip": "10.72.0.12"}]}],
    "checks": [{"from": "v1", "to": "v2", "port": 7, "proto": "tcp", "expect": "fail",
                "network": "fabric"},
               {"from": "host", "to": "v1", "port": 22, "expect": "pass", "network": "lan"},
               {"from": "v3", "to": "v1", "port": 8080, "proto": "udp", "expect": "pass"}],
}


def data(**edits):
    result = copy.deepcopy(BASE)
    for key, value in edits.items():
        net, field = key.split("__")
        if value is None:
            result["networks"][int(net)].pop(field, None)
        else:
            result["networks"][int(net)][field] = value
    return result


def error(raw) -> str:
    with pytest.raises(LabFileError) as exc:
        labfile.resolve(raw)
    assert "\n" not in exc.value.message and exc.value.status == 2
    return exc.value.message


@needs_ovs
def test_openvswitch_network_and_checks_resolve():
    lab = labfile.resolve(copy.deepcopy(BASE))
    fabric, lan = lab.networks
    assert (fabric.switch, fabric.controller, fabric.dhcp) == ("openvswitch", "none", False)
    assert fabric.flows[0].startswith("priority=200,tcp")
    assert (lan.switch, lan.flows) == ("linux", ())
    assert lab.checks == (
        DeclaredCheck("v1", "v2", 7, "tcp", "fail", "fabric"),
        DeclaredCheck("host", "v1", 22, "tcp", "pass", "lan"),
        DeclaredCheck("v3", "v1", 8080, "udp", "pass", "fabric"))   # the only shared network


@needs_ovs
def test_a_flow_open_vswitch_cannot_parse_is_refused_with_its_message():
    message = error(data(**{"0__flows": ["tcp,tp_dst=notaport,actions=drop"]}))
    assert message.startswith("networks.fabric.flows[0]: Open vSwitch cannot parse flow")
    assert "notaport: bad syntax for tcp_dst value" in message
    assert "unknown action bogus" in error(data(**{"0__flows": ["actions=bogus"]}))


@needs_ovs
def test_a_match_open_vswitch_would_silently_drop_is_refused():
    # ovs-ofctl exits 0 here and only logs "normalization changed ofp_match" on stderr
    assert subprocess.run(["ovs-ofctl", "parse-flow", "tp_dst=9000,actions=drop"],
                          capture_output=True).returncode == 0
    message = error(data(**{"0__flows": ["priority=9,tp_dst=9000,actions=drop"]}))
    assert message.startswith("networks.fabric.flows[0]: Open vSwitch would silently change")
    assert "'tp_dst=9000' to '(match all)'" in message and "tcp or udp" in message


@pytest.mark.parametrize("edits, where, says", [
    ({"0__switch": "ovs"}, "networks.fabric.switch", "valid switches: linux, openvswitch"),
    ({"1__switch": "openvswitch"}, "networks.lan.switch", "valid modes for it: hostonly, internal"),
    ({"0__switch": None}, "networks.fabric.flows", "add switch: openvswitch"),
    ({"0__controller": "pox"}, "networks.fabric.controller", "valid controllers: none, learning"),
    ({"0__flows": "actions=drop"}, "networks.fabric.flows", "must be a list"),
    ({"0__flows": ["a\nb"]}, "networks.fabric.flows[0]", "one line of ovs-ofctl"),
    ({"0__dhcp": True}, "networks.fabric.dhcp", "no DHCP server"),
])
def test_bad_switch_fields(edits, where, says):
    message = error(data(**edits))
    assert message.startswith(where + ":") and says in message


def _check(**fields):
    raw = copy.deepcopy(BASE)
    raw["checks"] = [{"from": "v1", "to": "v2", "port": 7, "expect": "pass", "network": "fabric",
                      **fields}]
    raw["checks"][0] = {k: v for k, v in raw["checks"][0].items() if v is not None}
    return raw


@pytest.mark.parametrize("fields, where, says", [
    ({"from": "v9"}, "checks[0].from", "valid endpoints: v1, v2, v3, host, internet"),
    ({"to": "v1"}, "checks[0]", "the ends must differ"),
    ({"from": "host", "to": "internet"}, "checks[0]", "one end must be a VM"),
    ({"port": 0}, "checks[0].port", "from 1 to 65535"),
    ({"proto": "icmp"}, "checks[0].proto", "valid protocols: tcp, udp"),
    ({"expect": "yes"}, "checks[0].expect", "valid expectations: pass, fail"),
    ({"expect": None}, "checks[0].expect", "is required"),
    ({"network": None}, "checks[0].network", "share several networks; name one: fabric, lan"),
    ({"network": "nope"}, "checks[0].network", "valid networks: fabric, lan"),
    ({"to": "v3", "network": "lan"}, "checks[0].network", "valid networks: fabric"),
    ({"colour": "red"}, "checks[0].colour", "valid fields: expect, from, network"),
])
def test_bad_checks(fields, where, says):
    message = error(_check(**fields))
    assert message.startswith(where + ":") and says in message


@needs_ovs
def test_virtualbox_refuses_an_openvswitch_network_with_the_reason():
    lab = labfile.resolve(copy.deepcopy(BASE))
    with pytest.raises(Unsupported, match=r"networks.fabric.switch: VirtualBox has no OpenFlow "
                                          r"switch .* use switch: linux"):
        VirtualBoxRenderer().plan(lab)


@needs_ovs
def test_vnet_render_exits_2_naming_the_flow(tmp_path):
    import yaml

    path = tmp_path / "lab.yaml"
    path.write_text(yaml.safe_dump(data(**{"0__flows": ["tp_dst=9000,actions=drop"]})))
    out = subprocess.run([sys.executable, "-c", "from provisioner.cli import main; main()",
                          "render", str(path)], capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "vnet: error: networks.fabric.flows[0]: Open vSwitch would silently change the match "
        "of flow 'tp_dst=9000,actions=drop' from 'tp_dst=9000' to '(match all)': a field needs "
        "its protocol (e.g. tcp or udp before tp_dst, ip before nw_dst)"]


@needs_ovs
def test_a_flow_that_looks_like_an_option_is_refused_and_creates_nothing(tmp_path):
    # ovs-ofctl runs as root: "--log-file=PATH" taken as its option would create PATH
    planted = tmp_path / "nologin"
    message = error(data(**{"0__flows": [f"--log-file={planted}"]}))
    assert message.startswith("networks.fabric.flows[0]:") and "never starts with '-'" in message
    assert not planted.exists()


def test_the_flow_reaches_ovs_ofctl_after_end_of_options(monkeypatch):
    from provisioner.host import runner
    from provisioner.lab import openflow

    seen = []
    monkeypatch.setattr(runner, "which", lambda name: f"/usr/bin/{name}")
    monkeypatch.setattr(runner, "run", lambda argv, **kw: seen.append(argv) or
                        runner.Result(argv, 0, "", ""))
    openflow.check_flow("priority=0,actions=NORMAL", "networks.fabric.flows[0]")
    assert seen == [["ovs-ofctl", "parse-flow", "--", "priority=0,actions=NORMAL"]]
