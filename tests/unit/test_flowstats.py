"""Flow attribution (verify/flowstats.py): dump-flows and ofproto/trace as Open vSwitch 3.1
prints them, parsed into the rules a declared cell's packet hits and their packets this run."""
from provisioner.drivers.libvirt import ovsbridge
from provisioner.host.runner import Result
from provisioner.verify import flowstats

COUNTERS = " cookie=0x0, duration=108.700s, table=0, n_packets={}, n_bytes=1480, idle_age=35, "
DUMP = "\n".join([
    "NXST_FLOW reply (xid=0x4):",
    COUNTERS.format(20) + "priority=200,tcp,nw_src=10.72.0.10,nw_dst=10.72.0.11,tp_dst=9000 "
    "actions=drop",
    COUNTERS.format(239) + "priority=0 actions=NORMAL",
    COUNTERS.format(3) + "idle_timeout=60, priority=1,in_port=2,dl_dst=52:54:00:00:00:01 "
    "actions=output:1,output:3"]) + "\n"

TRACE = """Flow: tcp,in_port=1,vlan_tci=0x0000,dl_src=52:54:00:ac:36:9e,nw_src=10.72.0.10,nw_dst=10.72.0.11,tp_dst=9000

bridge("vn156e89e3fa")
----------------------
 0. tcp,nw_src=10.72.0.10,nw_dst=10.72.0.11,tp_dst=9000, priority 200
    drop

Final flow: unchanged
Datapath actions: drop
"""


class FakeOvs:
    def ofctl(self, *args, **kw):
        return Result(["ovs-ofctl", *args], 0, DUMP, "")


def test_dump_flows_keeps_the_flow_and_its_packet_counter():
    flows = ovsbridge.dump_flows(FakeOvs(), "br")
    assert [(f["flow"], f["packets"]) for f in flows] == [
        ("priority=200,tcp,nw_src=10.72.0.10,nw_dst=10.72.0.11,tp_dst=9000,actions=drop", 20),
        ("priority=0,actions=NORMAL", 239),
        ("priority=1,in_port=2,dl_dst=52:54:00:00:00:01,actions=output:1,output:3", 3)]
    assert flows[0]["match"] == "tcp,nw_src=10.72.0.10,nw_dst=10.72.0.11,tp_dst=9000"


def test_trace_names_the_rules_the_packet_traverses():
    assert flowstats.trace_rules(TRACE) == [
        (200, "tcp,nw_src=10.72.0.10,nw_dst=10.72.0.11,tp_dst=9000")]
    assert flowstats.trace_rules(" 0. priority 0\n    NORMAL\n") == [(0, "")]


def test_moved_counts_packets_during_the_run_and_new_flows_from_zero():
    before = [{"flow": "a", "packets": 5}, {"flow": "b", "packets": 7}]
    after = [{"flow": "a", "packets": 9}, {"flow": "b", "packets": 7}, {"flow": "c", "packets": 2}]
    assert [f["moved"] for f in flowstats.moved(before, after)] == [4, 0, 2]


def test_report_lines_name_each_declared_cells_rules():
    result = {"checks": [{"source": "v1", "target": "v2 (10.72.0.11) tcp/9000", "flows": [
        {"flow": "priority=200,tcp,actions=drop", "moved": 11}]}, {"source": "x", "target": "y"}]}
    assert flowstats.text(result) == [
        "flow attribution (rules the cell's first packet hits, packets this run):",
        "  v1 -> v2 (10.72.0.11) tcp/9000: priority=200,tcp,actions=drop (+11 packets)"]
    assert flowstats.text({"checks": [{"source": "x", "target": "y"}]}) == []
