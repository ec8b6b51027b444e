"""OpenFlow networks and declared checks in a real sandbox (issue 12), on one lab
(labs/openflow.yaml): the declared checks and the mode table's cells verify green, the flow
attribution names the drop flow for the blocked cell; with the drop flow removed (the negative
control) that `expect: fail` cell, and only it, turns red. The same lab's natnetwork carries
declared UDP checks (guest to guest, host to guest). `destroy` removes the lab's bridge."""
import time
from pathlib import Path

import pytest

from provisioner.drivers.libvirt import lifecycle, ovsbridge
from provisioner.host.owner import owner_id
from provisioner.lab import loader as labfile
from provisioner.verify import run as verifier

pytestmark = pytest.mark.integration
LAB = Path(__file__).resolve().parent / "labs" / "openflow.yaml"
DROP = "priority=200,tcp,nw_src=10.72.0.10,nw_dst=10.72.0.11,tp_dst=9000"
BLOCKED = ("v1", "v2 (10.72.0.11) tcp/9000")


def say(message):
    print(message, flush=True)


def red(result):
    return {(c["source"], c["target"]): c["detail"] for c in result["checks"] if not c["ok"]}


def test_drop_flow_declared_checks_attribution_and_negative_control(lab_sandbox):
    lab = labfile.load(LAB, labfile.sandbox_defaults(lab_sandbox))
    target = lifecycle.target_for(lab_sandbox.name, None)
    ovs = ovsbridge.for_target(target)
    [(_, bridge)] = ovsbridge.ovs_networks(lab)
    started = time.monotonic()
    try:
        record = lifecycle.up(lab, target, say)
        say(f"boot to ready: {time.monotonic() - started:.0f}s ({record['timings']})")
        result = verifier.verify(lab, target, say, timings=record["timings"])
        say(verifier.matrix_text(result))
        assert result["ok"], red(result)
        declared = {(c["source"], c["target"]): c for c in result["checks"] if c.get("declared")}
        assert len(declared) == len(lab.checks) == 6
        assert declared[BLOCKED]["observed"] == "fail"
        assert declared[("v1", "v2 (10.73.0.11) udp/5353")]["observed"] == "pass"
        assert declared[("host", "v1 (10.73.0.10) udp/6000")]["observed"] == "pass"
        assert {c["kind"] for c in result["checks"] if not c.get("declared")} >= {
            "vm_to_vm", "vm_to_host", "host_to_vm", "vm_to_internet", "internet_to_vm"}
        # the attribution names the drop flow, and its counter moved during this run
        [rule] = declared[BLOCKED]["flows"]
        assert rule["flow"] == DROP + ",actions=drop" and rule["moved"] > 0, rule
        passed = declared[("v3", "v2 (10.72.0.11) tcp/9000")]["flows"]
        assert [f["flow"] for f in passed] == ["priority=0,actions=NORMAL"]
        assert "flow attribution" in verifier.matrix_text(result)

        # negative control: without the drop flow the expect-fail cell, and only it, is red
        ovs.ofctl("del-flows", "--strict", bridge, DROP)
        result = verifier.verify(lab, target, say, timings=record["timings"])
        assert set(red(result)) == {BLOCKED}, red(result)
        cell = next(c for c in result["checks"] if (c["source"], c["target"]) == BLOCKED)
        assert cell["observed"] == "pass" and cell["declared"], cell
        assert [f["flow"] for f in cell["flows"]] == ["priority=0,actions=NORMAL"]
    finally:
        lifecycle.destroy(lab.name, target, say)
    assert bridge not in ovs.vsctl("list-br").stdout.split()


LEARNING = Path(__file__).resolve().parent / "labs" / "learning.yaml"


def test_learning_controller_carries_vm_to_vm_and_without_it_nothing_does(lab_sandbox):
    from provisioner.host import controller, netns, procs, runner, state
    from provisioner.host.controller_files.learning_switch import COOKIE

    lab = labfile.load(LEARNING, labfile.sandbox_defaults(lab_sandbox))
    target = lifecycle.target_for(lab_sandbox.name, None)
    ovs = ovsbridge.for_target(target)
    bridge, hostonly_bridge = (br for _, br in ovsbridge.ovs_networks(lab))
    lab_dir = state.lab_dir(target, lab.name)
    try:
        record = lifecycle.up(lab, target, say)
        result = verifier.verify(lab, target, say, timings=record["timings"])
        say(verifier.matrix_text(result))
        assert result["ok"], red(result)
        hostnet = {c["kind"]: c["observed"] for c in result["checks"]
                   if c["network"] == "hostnet" and c["kind"] != "nic_model"}
        assert hostnet == {"vm_to_host": "pass", "host_to_vm": "pass", "vm_to_vm": "pass",
                           "vm_to_internet": "fail", "internet_to_vm": "fail"}, hostnet
        learned = result["openflow"]["controller"]
        assert learned["packet_ins"] > 0
        assert [f["why"] for f in learned["flows"]].count("table-miss") == 1
        assert any(f["why"] == "learned" for f in learned["flows"]), learned
        # each VM<->VM cell went through a flow the controller installed
        fabric_vm_to_vm = [c for c in result["checks"]
                           if c["kind"] == "vm_to_vm" and c["network"] == "fabric"]
        for cell in fabric_vm_to_vm:
            assert cell["flows"] and cell["flows"][0]["flow"].startswith("priority=1,"), cell
            assert cell["flows"][0]["moved"] > 0, cell

        # negative controls, in one run: (1) the controller stopped, its flows gone (fail_mode=
        # secure keeps them otherwise), and no NORMAL flow: fabric's VM<->VM fails; (2) the
        # hostonly bridge's forwarding isolation removed: hostnet's Internet cells turn red
        pid = controller.stop(lab_dir, say)
        assert pid and not procs.pid_alive(pid)
        ovs.ofctl("-O", "OpenFlow13", "del-flows", bridge, f"cookie={COOKIE:#x}/-1")
        assert ovs.ofctl("-O", "OpenFlow13", "dump-flows", bridge).stdout.count("cookie=") == 0
        for rule in ovsbridge._isolation(hostonly_bridge, lab.name, owner_id()):
            ovsbridge._ip(target, ["iptables", "-w", "-D", *rule])
        result = verifier.verify(lab, target, say, timings=record["timings"])
        broken = [c for c in result["checks"] if not c["ok"]]
        assert {(c["kind"], c["network"]) for c in broken} == {
            ("vm_to_vm", "fabric"), ("vm_to_internet", "hostnet"), ("internet_to_vm", "hostnet")
        }, red(result)
        assert all(c["observed"] == "fail" for c in broken if c["network"] == "fabric")
        assert len([c for c in broken if c["network"] == "fabric"]) == len(fabric_vm_to_vm)
    finally:
        lifecycle.destroy(lab.name, target, say)
    assert not (lab_dir / controller.PID).exists()
    assert not {bridge, hostonly_bridge} & set(ovs.vsctl("list-br").stdout.split())
    rules = runner.run(netns.netns_argv(target.netns, ["iptables", "-S", "FORWARD"])).stdout
    assert hostonly_bridge not in rules
