"""Declared cells (`checks:`): built from the lab file on any mode, marked declared, replacing
the mode-table cell that probes the same thing, held ports and their probers, the host's and
the Internet's listeners, and the guest's repeated probe of a held port."""
import itertools
import socket
from pathlib import Path
import threading
import time

from provisioner.lab import loader as labfile
from provisioner.lab.model import Backend
from provisioner.verify import checks, declared
from provisioner.verify.run import probe_module, record

ENDS = checks.Endpoints(host_listener_port=20001, internet_ip="203.0.113.1",
                        host_uplink_ip="203.0.113.2", mgmt_host_ip="100.64.9.1")

LAB = {
    "name": "decl",
    "networks": [{"name": "lan", "mode": "natnetwork", "subnet": "192.168.150.0/24"}],
    "vms": [{"name": "a", "nics": [{"network": "lan", "ip": "192.168.150.10"}]},
            {"name": "b", "nics": [{"network": "lan", "ip": "192.168.150.11"}]}],
    "checks": [{"from": "a", "to": "b", "port": 7, "expect": "fail"},
               {"from": "a", "to": "b", "port": 5353, "proto": "udp", "expect": "pass"},
               {"from": "b", "to": "a", "port": 5353, "proto": "udp", "expect": "fail"},
               {"from": "host", "to": "a", "port": 22, "expect": "pass"},
               {"from": "a", "to": "internet", "port": 8443, "expect": "fail"}],
}


def build(ends=ENDS, data=LAB):
    return checks.build(labfile.resolve(data), Backend.LIBVIRT, ends)


def test_declared_cells_are_marked_and_replace_the_same_mode_cell():
    cells = build()
    mine = [c for c in cells if c.declared]
    assert [(c.kind, c.source, c.target, c.expected) for c in mine] == [
        ("vm_to_vm", "a", "b (192.168.150.11) tcp/7", "fail"),
        ("vm_to_vm", "a", "b (192.168.150.11) udp/5353", "pass"),
        ("vm_to_vm", "b", "a (192.168.150.10) udp/5353", "fail"),
        ("host_to_vm", "host", "a (192.168.150.10) tcp/22", "pass"),
        ("vm_to_internet", "a", "internet (203.0.113.1) tcp/8443", "fail")]
    # the mode table's a -> b echo cell is the declared one now; b -> a stays the table's
    table = [(c.source, c.probe["target"]) for c in cells
             if c.kind == "vm_to_vm" and not c.declared and c.probe.get("port") == 7]
    assert table == [("b", "192.168.150.10")]
    assert mine[0].as_dict()["declared"] is True
    assert "declared" not in next(c for c in cells if not c.declared).as_dict()


def test_held_ports_name_their_probers_and_udp_silence_needs_a_positive_control():
    cells = build()
    a_to_b_udp = next(c for c in cells if c.declared and c.target.endswith("udp/5353")
                      and c.source == "a")
    assert a_to_b_udp.probe["until"] == declared.HOLD_WINDOW
    assert a_to_b_udp.probe["nonce_prefix"] == "a" and a_to_b_udp.probe["bind_mac"]
    holds = declared.holds(cells)
    assert holds["b"] == [{"id": "declared:lan:udp/5353", "port": 5353, "proto": "udp",
                           "mac": a_to_b_udp.probe["forward"]["mac"], "origins": ["a"],
                           "clock": a_to_b_udp.probe["clock"]}]
    # both the prober's attempts and the hold are timed: each guest measures its clock
    assert set(a_to_b_udp.probe["clock"]) == {"target", "port"}
    # b -> a expects fail, and a still waits for b's nonce: a hold closed early would refuse
    # b's later attempts, a fail the network did not cause
    assert holds["a"][0]["origins"] == ["b"]
    assert [h["id"] for h in holds["a"]] == ["declared:lan:udp/5353", "declared:lan:tcp/22"]
    b_to_a = next(c for c in cells if c.declared and c.source == "b")
    assert b_to_a.probe["confirmed_by"] == []        # no passing check of a's listener
    assert "confirmed_by" not in a_to_b_udp.probe


def test_internet_cells_outside_a_sandbox_are_skipped_and_never_run():
    ends = checks.Endpoints(host_listener_port=1, internet_ip=None, host_uplink_ip="127.0.0.1",
                            mgmt_host_ip="100.64.9.1")
    cells = build(ends)
    cell = next(c for c in cells if c.declared and c.kind == "vm_to_internet")
    assert (cell.runner, cell.observed) == ("none", "skipped")
    record(cells, {}, {})
    assert cell.observed == "skipped" and "no Internet" in cell.detail
    inbound = dict(LAB, checks=[{"from": "internet", "to": "a", "port": 22, "expect": "fail"}])
    (cell,) = [c for c in build(ends, data=inbound) if c.declared]
    assert (cell.runner, cell.observed) == ("none", "skipped") and "no Internet" in cell.detail


def test_a_booted_lab_with_a_skipped_declared_cell_is_not_verified():
    """Every other cell as expected, the declared Internet check skipped (no sandbox): the
    lab asked for a check vnet could not make, so it is not green, and the shared matrix's
    part of such a network is not either."""
    from provisioner.ops import matrix, matrixlabs
    from provisioner.verify import presentation

    ends = checks.Endpoints(host_listener_port=1, internet_ip=None, host_uplink_ip="127.0.0.1",
                            mgmt_host_ip="100.64.9.1")
    cells = build(ends)
    for cell in cells:
        if cell.runner != "none":
            cell.observed = cell.expected
    found = [c.as_dict() for c in cells]
    assert checks.verdict(found) == checks.GREEN and checks.tally(found)["skipped"] == 1
    assert not checks.booted_ok(found)
    result = {"ok": checks.booted_ok(found), "checks": found}
    assert presentation.exit_code(result) == 1
    assert presentation.verdict_line(result).startswith("NOT VERIFIED (1 skipped cell(s)")
    part = matrixlabs.split(dict(result, booted=True, lab="x"), "lan", "x-lan", "x", ["lan"])
    assert part["ok"] is False
    assert matrix.judged(result) == ("red", "1 skipped cell(s)")
    written = {}
    presentation.write_report(dict(result, lab="x", timings={}), "junit", Path("x.xml"),
                              write=lambda path, text: written.update(text=text))
    assert 'failures="1"' in written["text"] and 'skipped="0"' in written["text"]
    assert "<skipped" not in written["text"]
    probed = [c for c in found if c["observed"] != checks.SKIPPED]
    assert checks.booted_ok(probed)


def test_host_and_internet_listeners_on_declared_ports(tmp_path):
    data = dict(LAB, checks=[{"from": "a", "to": "host", "port": 9999, "expect": "pass"},
                             {"from": "b", "to": "host", "port": 9999, "expect": "pass"},
                             {"from": "a", "to": "internet", "port": 8443, "expect": "fail"}])
    cells = build(data=data)
    assert declared.listener_ports(cells) == {"host": {9999}, "internet": {8443}}
    spawned, records = [], []

    class Dead:
        def poll(self):
            return 1

    def spawn(netns, port, name, address, log, record_path):
        spawned.append((netns, port, name, address))
        log.write_text(f"vnet-listener {name} ready\n" if name == "host" else
                       "OSError: [Errno 98] Address already in use\n")
        return Dead()
    declared.start_listeners(cells, {"host": ("ns-h", ["0.0.0.0"]),
                                     "internet": ("ns-i", ["0.0.0.0"])},
                             tmp_path, records, spawn)
    assert spawned == [("ns-h", 9999, "host", "0.0.0.0"), ("ns-i", 8443, "internet", "0.0.0.0")]
    busy = next(c for c in cells if c.declared and c.kind == "vm_to_internet")
    assert (busy.runner, busy.observed) == ("none", "error")
    assert "no vnet listener on internet port 8443: OSError" in busy.detail
    assert len(records) == 2


def test_probe_until_repeats_until_the_held_listener_is_up():
    vnet_probe = probe_module()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    def late_listener():
        time.sleep(1.0)          # the holder's module run starts later than the prober's
        vnet_probe.serve(port, "b", host="127.0.0.1")
    threading.Thread(target=late_listener, daemon=True).start()
    result = vnet_probe.probe_until({"target": "127.0.0.1", "port": port, "until": 20,
                                     "nonce_prefix": "a", "expect_name": "b", "timeout": 1})
    assert result["observed"] == "pass", result
    assert len(result["nonces"]) > 1 and all(n.startswith("a-") for n in result["nonces"])


def test_a_guest_probe_of_a_service_port_passes_when_its_nonce_arrived():
    cells = build(data=dict(LAB, checks=[{"from": "a", "to": "b", "port": 22,
                                          "expect": "pass"}]))
    i, cell = next((i, c) for i, c in enumerate(cells) if c.declared)
    guest = {"a": {"probes": {str(i): {"observed": "error", "detail": "connected, but the "
                                       "answer is garbled: 'SSH-2.0-dropbear'",
                                       "nonces": ["a-1", "a-2"]}}, "drivers": {}},
             "b": {"probes": {}, "drivers": {}, "forwards": {"declared:lan:tcp/22": {
                 "mode": "service", "detail": "service present on eth0 192.168.150.11:22",
                 "nonces": ["a-2"]}}}}
    record(cells, guest, {})
    assert cell.observed == "pass" and "a's nonce arrived at b" in cell.detail


# --- a hold's report decides after a UDP silence is settled (a review found the settled
# "fail" overwrote it) ----------------------------------------------------------------------

THREE = dict(LAB, vms=[*LAB["vms"], {"name": "c", "nics": [{"network": "lan",
                                                            "ip": "192.168.150.12"}]}],
             checks=[{"from": "a", "to": "b", "port": 5353, "proto": "udp", "expect": "fail"},
                     {"from": "c", "to": "b", "port": 5353, "proto": "udp", "expect": "pass"}])


def udp_fail_cell(hold: dict):
    """a -> b udp/5353 (expect fail) went silent; c -> b (its positive control) passed."""
    cells = build(data=THREE)
    (ia, a), (ic, _) = [(i, c) for i, c in enumerate(cells) if c.declared]
    assert a.source == "a" and a.probe["confirmed_by"] == [str(ic)]
    silent = {"observed": "error", "detail": "no UDP answer", "silent": True,
              "nonces": ["a-1111"], "attempts": [[100.0, 103.0]]}
    passed = {"observed": "pass", "detail": "nonce echoed by b", "nonces": ["c-2222"],
              "attempts": [[100.0, 100.1]]}
    guest = {"a": {"probes": {str(ia): silent}, "drivers": {}},
             "c": {"probes": {str(ic): passed}, "drivers": {}},
             "b": {"probes": {}, "drivers": {}, "forwards": {
                 declared.hold_id(THREE_CHECK): dict({"mode": "listener",
                                                      "detail": "vnet's temporary listener"},
                                                     **hold)}}}
    record(cells, guest, {}, probe_module().settle_silence)
    return a


THREE_CHECK = labfile.resolve(THREE).checks[0]


def test_a_silence_whose_nonce_reached_the_hold_is_a_one_way_path_not_isolation():
    a = udp_fail_cell({"nonces": ["c-2222", "a-1111"], "opened": 99.0, "closed": 104.0})
    assert a.observed == "error" and "a's nonce arrived at b" in a.detail and not a.ok


def test_a_settled_silence_needs_the_hold_up_during_an_attempt():
    a = udp_fail_cell({"nonces": ["c-2222"], "opened": 103.5, "closed": 104.0})
    assert a.observed == "error" and "not proven up" in a.detail and not a.ok


def test_a_settled_silence_with_the_hold_up_and_no_nonce_arrived_is_a_fail():
    a = udp_fail_cell({"nonces": ["c-2222"], "opened": 98.5, "closed": 104.5})
    assert a.observed == "fail" and a.ok


def test_the_same_port_on_two_networks_of_a_vm_is_two_holds_on_two_nics():
    data = dict(LAB, networks=[*LAB["networks"], {"name": "back", "mode": "internal",
                                                  "subnet": "10.9.0.0/24"}],
                vms=[{"name": "a", "nics": [{"network": "lan", "ip": "192.168.150.10"},
                                            {"network": "back", "ip": "10.9.0.10"}]},
                     {"name": "b", "nics": [{"network": "lan", "ip": "192.168.150.11"},
                                            {"network": "back", "ip": "10.9.0.11"}]}],
                checks=[{"from": "a", "to": "b", "port": 8080, "network": net, "expect": "pass"}
                        for net in ("lan", "back")])
    held = declared.holds(build(data=data))["b"]
    assert len({h["id"] for h in held}) == 2 and len({h["mac"] for h in held}) == 2


def test_probe_until_keeps_a_leak_over_the_refusals_after_it(monkeypatch):
    """vm3 -> vm1 expect fail: vm2 answered first (a flow sends vm1's traffic to vm2), then
    vm2's run ended and its kernel refused: the cell is the leak, not a green refusal."""
    vnet_probe = probe_module()
    refused = {"observed": "fail", "detail": "refused", "refused": True}
    leak = vnet_probe.judge(b"VNET n1 vm2\n", "n1", {"expect_name": "vm1"})
    answers = itertools.chain([leak], itertools.repeat(refused))
    monkeypatch.setattr(vnet_probe, "probe", lambda spec: next(answers))
    monkeypatch.setattr(vnet_probe.time, "sleep", lambda s: None)
    result = vnet_probe.probe_until({"target": "10.0.0.1", "port": 8080, "until": 0.05})
    assert result["observed"] == "error" and "vm2" in result["detail"], result
