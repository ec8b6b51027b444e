"""A refusal proves a closed path only where the target's port listened all along
(provisioner/verify/refusals.py): the target's own stack refuses an idle port too, and a
negative cell confirmed by that would hide an open path."""
import os
import socket

from provisioner.lab import loader as labfile
from provisioner.lab.model import Backend
from provisioner.verify import checks, refusals
from provisioner.verify import run as verifier

probe = verifier.probe_module()
REFUSED = {"observed": "fail", "detail": "refused", "refused": True}
ECHO = {"target": "192.168.56.10", "port": 7, "listens": {"at": "vm1"}}
# rows as a guest's kernel wrote them: 127.0.0.1:7099 and [::]:7 listening, an SSH session
TCP4 = ["   0: 0100007F:1BBB 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0  "
        "      0 10174 1 0000000036f7ac56 100 0 0 10 0",
        "   2: 0AE84064:0016 01E84064:800E 01 00000024:00000000 01:00000013 00000000     0  "
        "      0 10176 3 000000002c671c6d 20 4 13 10 -1"]
TCP6 = ["   1: 00000000000000000000000000000000:0007 00000000000000000000000000000000:0000 0A "
        "00000000:00000000 00:00000000 00000000     0        0 10009 1 000000009371cf97 100 0 0 "
        "10 0"]


def guest_report(first, last, v6only=0):
    return {"vm1": {"listening": {"first": {"tcp/7": first}, "last": {"tcp/7": last},
                                  "v6only": v6only}}}


def settled(guests, boot=(), result=REFUSED, spec=ECHO):
    return refusals.settle(result, spec, guests, {"vm1": {"tcp/7": set(boot)}}, True)


def test_proc_net_rows_give_listening_sockets_and_skip_connections():
    assert probe.proc_net_sockets(TCP4, 7099, "0A") == [["127.0.0.1", 10174]]
    assert probe.proc_net_sockets(TCP4, 22, "0A") == []           # a session, not a listener
    assert probe.proc_net_sockets(TCP6, 7, "0A") == [["::", 10009]]


def test_the_module_lists_a_real_listening_socket_at_its_start_and_end():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port, inode = server.getsockname()[1], os.fstat(server.fileno()).st_ino
        got = probe.handle({"probes": [], "listening": [f"tcp/{port}"]})["listening"]
    assert ["127.0.0.1", inode] in got["first"][f"tcp/{port}"]
    assert got["first"] == got["last"] and got["v6only"] in (0, 1)


def test_a_refusal_without_a_listening_target_is_an_error():
    for guests in ({}, guest_report([], []), guest_report([["::", 5]], [])):
        r = settled(guests)
        assert r["observed"] == "error" and "may be vm1's own" in r["detail"], r


def test_a_socket_that_listened_from_boot_to_the_end_keeps_the_refusal_a_fail():
    r = settled(guest_report([["::", 10009]], [["::", 10009]]), boot={10009})
    assert r["observed"] == "fail" and "at boot still did" in r["detail"]
    assert "not covered" not in r["detail"]


def test_a_socket_seen_only_through_the_guests_run_says_what_it_does_not_cover():
    r = settled(guest_report([["0.0.0.0", 7]], [["0.0.0.0", 7]]), boot={6})
    assert r["observed"] == "fail" and "probes before it are not covered" in r["detail"]


def test_a_restarted_socket_or_one_that_does_not_take_the_address_proves_nothing():
    assert settled(guest_report([["::", 1]], [["::", 2]]))["observed"] == "error"
    assert settled(guest_report([["::", 3]], [["::", 3]], v6only=1))["observed"] == "error"
    other = guest_report([["192.168.56.99", 3]], [["192.168.56.99", 3]])
    assert settled(other, boot={3})["observed"] == "error"
    mapped = guest_report([["::ffff:192.168.56.10", 3]], [["::ffff:192.168.56.10", 3]])
    assert settled(mapped, boot={3})["observed"] == "fail"


def test_vnet_listeners_vouch_only_while_they_ran():
    spec = {"target": "203.0.113.1", "port": 2, "listens": {"at": refusals.VNET}}
    assert refusals.settle(REFUSED, spec, {}, {}, True)["observed"] == "fail"
    gone = refusals.settle(REFUSED, spec, {}, {}, False)
    assert gone["observed"] == "error" and "listener ended" in gone["detail"]


def test_only_refusals_are_settled():
    timed_out = {"observed": "fail", "detail": "timed out"}
    assert settled({}, result=timed_out) is timed_out
    assert settled({}, spec={"target": "x", "port": 7}) is REFUSED     # no listener named


def test_the_console_names_the_sockets_of_the_last_boot():
    console = ("VNET-LISTEN tcp/7 11 12 \nVNET-READY vm1\n"
               "reboot\nVNET-LISTEN tcp/7 20 \nVNET-READY vm1\n")
    assert refusals.boot_sockets(console) == {"tcp/7": {20}}
    assert refusals.boot_sockets("VNET-READY vm1\n") == {}


def test_record_turns_a_refused_host_to_vm_cell_without_a_listener_red():
    """The cell of a hostonly lab whose Internet->VM probe was refused: green only while vm1's
    echo socket is the one it booted with."""
    lab = labfile.resolve({"name": "ho", "networks": [{"name": "n", "mode": "hostonly"}],
                           "vms": [{"name": "vm1", "nics": [{"network": "n"}]}]})
    ends = checks.Endpoints(21590, "203.0.113.1", "203.0.113.2", "100.64.0.1")
    cells = checks.build(lab, Backend.LIBVIRT, ends)
    at = next(i for i, c in enumerate(cells) if c.kind == "internet_to_vm")
    assert refusals.watched(cells) == {"vm1": ["tcp/7"]}
    addr = cells[at].probe["target"]

    def run(first, last):
        verifier.record(cells, dict(guest_report(first, last), vm1=dict(
            guest_report(first, last)["vm1"], probes={}, drivers={})),
            {f"internet:{at}": REFUSED}, boots={"vm1": {"tcp/7": {9}}})
        return cells[at]
    assert run([[addr, 9]], [[addr, 9]]).ok
    down = run([], [])
    assert not down.ok and down.observed == "error", down.detail
