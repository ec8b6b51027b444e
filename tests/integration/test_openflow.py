"""OpenFlow networks and declared checks in a real sandbox (issue 12), on one lab
(labs/openflow.yaml): the declared checks and the mode table's cells verify green, the flow
attribution names the drop flow for the blocked cell; with the drop flow removed (the negative
control) that `expect: fail` cell, and only it, turns red. The same lab's natnetwork carries
declared UDP checks (guest to guest, host to guest). `destroy` removes the lab's bridge."""
import time
from pathlib import Path

import pytest

from provisioner.drivers.libvirt import lifecycle, ovsbridge
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
