"""Forwards are proven with or without a service: the guest's hold (a temporary nonce listener on
a free port, a raw-socket watch on a taken one), the host side's origin-tagged retries until the
guests' run ends, the SSH login verdicts, and how a cell is concluded. Real sockets on loopback
stand in for the forward's NIC."""
import os
import socket
import threading
import time
from ipaddress import IPv4Address

import pytest

from provisioner.verify import checks, forwardcheck, run
from provisioner.lab import loader as labfile
from provisioner.verify.run import probe_module

probe = probe_module()
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: SO_BINDTODEVICE and a "
                                                          "raw socket (CAP_NET_RAW)")

# a sandbox's: forwards that name no host_ip listen on its uplink (Endpoints.host_uplink_ip)
SANDBOX = labfile.Defaults(forward_host_ip=IPv4Address("203.0.113.2"))


def free_port(kind=socket.SOCK_STREAM):
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def on_loopback(monkeypatch):
    """The forward's NIC is the loopback device, its address 127.0.0.1."""
    monkeypatch.setattr(probe, "interface_of", lambda mac: "lo")


def hold(port, proto="tcp", origins=("host", "internet")):
    [h] = probe.hold_forwards([{"id": "web", "port": port, "proto": proto,
                                "mac": "02:00:00:00:00:01", "origins": list(origins)}])
    return h


def hostname():
    return open("/proc/sys/kernel/hostname").read().strip()


@needs_root
def test_a_free_port_gets_a_temporary_listener_until_every_origin_was_answered(on_loopback):
    port = free_port()
    h = hold(port)
    assert h.mode == "listener"
    first = probe.probe({"target": "127.0.0.1", "port": port, "expect_name": hostname(),
                         "nonce": "host-0123456789abcdef"})
    assert first["observed"] == "pass", first
    assert not h.done.is_set()                         # the Internet's nonce is still missing
    probe.probe({"target": "127.0.0.1", "port": port, "nonce": "internet-0123456789abcdef"})
    assert h.done.wait(5)
    report = probe.release_forwards([h], time.monotonic())["web"]
    assert report["mode"] == "listener" and len(report["nonces"]) == 2
    assert report["opened"] <= report["closed"]        # when it listened: conclude() needs it
    with pytest.raises(OSError):                       # gone with the module run
        socket.create_connection(("127.0.0.1", port), timeout=1)


@needs_root
def test_the_last_checks_connections_in_time_wait_do_not_look_like_a_service(on_loopback):
    port = free_port()
    first = hold(port, origins=("host",))
    probe.probe({"target": "127.0.0.1", "port": port, "nonce": "host-0123456789abcdef"})
    probe.release_forwards([first], time.monotonic())    # it closed first: TIME_WAIT on its side
    again = hold(port, origins=("host",))
    assert again.mode == "listener", again.detail
    probe.release_forwards([again], time.monotonic(), lifetime=0)


@needs_root
def test_a_free_udp_port_gets_a_temporary_nonce_answer(on_loopback):
    port = free_port(socket.SOCK_DGRAM)
    h = hold(port, "udp", origins=("host",))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        s.sendto(b"VNET host-00112233445566778899\n", ("127.0.0.1", port))
        answer = s.recv(256).decode().split()
    assert answer[:3] == ["VNET", "host-00112233445566778899", hostname()]
    assert h.done.wait(5)
    probe.release_forwards([h], time.monotonic())


@needs_root
def test_a_port_held_by_a_silent_service_is_watched_and_the_nonce_proves_the_forward(on_loopback):
    service = socket.socket()
    service.bind(("0.0.0.0", 0))
    service.listen(4)
    port = service.getsockname()[1]
    accepted = []
    threading.Thread(target=lambda: accepted.append(service.accept()), daemon=True).start()
    h = hold(port, origins=("host",))
    assert h.mode == "service"
    host = forwardcheck.probe_all(
        [{"id": "1", "target": "127.0.0.1", "port": port, "expect_name": hostname(),
          "timeout": 2.0, "answer_timeout": 1.0}], "host", _stop_after(h), probe.probe)["1"]
    assert host["observed"] != "pass"                  # the service does not speak vnet
    report = probe.release_forwards([h], time.monotonic(), lifetime=5)["web"]
    assert set(report["nonces"]) & set(host["nonces"])
    observed, detail = forwardcheck.conclude(host, report, "host", "vm1")
    assert observed == "pass" and detail.startswith("service present")
    service.close()


def _stop_after(h):
    """The guests' run ends when the hold is done (or after 10 s): a stop file appears then."""
    import tempfile
    from pathlib import Path

    stop = Path(tempfile.mkdtemp()) / "stop"

    def later():
        h.done.wait(10)
        stop.touch()
    threading.Thread(target=later, daemon=True).start()
    return stop


def test_a_service_that_never_saw_this_origins_nonce_is_not_a_pass():
    host = {"observed": "error", "detail": "connected, but no fresh nonce came back",
            "nonces": ["host-aaaaaaaaaaaaaaaa"]}
    guest = {"mode": "service", "detail": "service present on eth0 10.0.0.5:80",
             "nonces": ["internet-bbbbbbbbbbbbbbbb"]}
    observed, detail = forwardcheck.conclude(host, guest, "host", "vm1")
    assert observed == "error" and "no nonce from host arrived" in detail


def test_a_forward_to_the_wrong_vm_stays_red_whatever_that_vm_answers():
    """The listener on the other VM answered with its own name: not the VM the lab names."""
    host = {"observed": "fail", "detail": "wrong endpoint: answered by vm2, not vm1",
            "nonces": ["host-aaaaaaaaaaaaaaaa"]}
    held = {"mode": "listener", "detail": "vnet's temporary listener", "nonces": []}
    assert forwardcheck.conclude(host, held, "host", "vm1")[0] != "pass"
    assert forwardcheck.conclude(host, None, "host", "vm1")[0] != "pass"


def test_retries_keep_the_first_pass_and_end_with_the_guests_run(tmp_path):
    stop = tmp_path / "stop"
    answers = iter([{"observed": "fail", "detail": "refused"},
                    {"observed": "pass", "detail": "nonce echoed by vm1"}])
    seen = []

    def fake_probe(spec):
        seen.append(spec["nonce"])
        if len(seen) == 3:
            stop.touch()
        return next(answers, {"observed": "fail", "detail": "refused"})
    r = forwardcheck._nonce_until({"id": "1"}, "internet", stop, fake_probe)
    assert r["observed"] == "pass" and r["nonces"] == seen
    assert len(seen) == 4 and all(n.startswith("internet-") for n in seen)


@pytest.mark.parametrize("rc,out,err,observed", [
    (0, "vm1\n", "", "pass"),
    (0, "vm2\n", "", "error"),                    # the forward reaches another VM
    (255, "", "ssh: connect to host 203.0.113.2 port 2221: Connection refused", "fail"),
    (255, "", "ssh: connect to host 203.0.113.2 port 2221: Connection timed out", "fail"),
    (255, "", "root@203.0.113.2: Permission denied (publickey).", "error"),   # not our lab
])
def test_ssh_forward_verdicts(rc, out, err, observed):
    assert forwardcheck.ssh_outcome(rc, out, err, "vm1")["observed"] == observed


def test_guest_holds_one_per_forward_and_none_for_ssh():
    lab = labfile.resolve({"name": "f", "networks": [{"name": "n", "mode": "natnetwork",
                           "port_forwards": [
                               {"name": "web", "proto": "tcp", "host_port": 18081, "vm": "a",
                                "guest_port": 8080},
                               {"name": "ssh", "proto": "tcp", "host_port": 2222, "vm": "b",
                                "guest_port": 22}]}],
                           "vms": [{"name": "a", "nics": [{"network": "n"}]},
                                   {"name": "b", "nics": [{"network": "n"}]}]}, SANDBOX)
    ends = checks.Endpoints(host_listener_port=1, internet_ip="203.0.113.1",
                            host_uplink_ip="203.0.113.2", mgmt_host_ip="100.64.1.1")
    cells = checks.build(lab, checks.Backend.LIBVIRT, ends)
    holds = forwardcheck.guest_holds(cells)
    assert holds == {"a": [{"id": "n:web", "port": 8080, "proto": "tcp",
                            "mac": lab.vm("a").nics[0].mac, "origins": ["host", "internet"],
                            "clock": {"target": "100.64.1.1", "port": 1}}]}


def test_one_vm_holds_the_same_named_forwards_of_two_networks_apart():
    """Unnamed, each network's first forward is pf0: a tcp one on a nat NIC and a udp one on a
    natnetwork NIC of one VM were one hold, so the udp forward got no listener and its cell
    could not go green (a review's find)."""
    lab = labfile.resolve({"name": "f", "networks": [
        {"name": "nat1", "mode": "nat", "port_forwards": [
            {"proto": "tcp", "host_port": 18080, "vm": "a", "guest_port": 80}]},
        {"name": "nn", "mode": "natnetwork", "port_forwards": [
            {"proto": "udp", "host_port": 15353, "vm": "a", "guest_port": 53}]}],
        "vms": [{"name": "a", "nics": [{"network": "nat1"}, {"network": "nn"}]}]}, SANDBOX)
    ends = checks.Endpoints(host_listener_port=1, internet_ip="203.0.113.1",
                            host_uplink_ip="203.0.113.2", mgmt_host_ip="100.64.1.1")
    holds = forwardcheck.guest_holds(checks.build(lab, checks.Backend.LIBVIRT, ends))
    assert sorted((h["id"], h["proto"], h["port"], h["mac"]) for h in holds["a"]) == [
        ("nat1:pf0", "tcp", 80, lab.vm("a").nics[0].mac),
        ("nn:pf0", "udp", 53, lab.vm("a").nics[1].mac)]


def test_verify_holds_forwards_in_the_guest_run_and_concludes_from_its_report(monkeypatch,
                                                                              tmp_path):
    """verify's wiring, with the Ansible run and the host-side prober faked: the guest run gets
    the forwards to hold, host-side forward probes end when that run ends, and the cell is
    concluded from both sides (a service that never echoes still passes: its nonce arrived)."""
    from types import SimpleNamespace

    from provisioner.verify import run as verifier
    from provisioner.host.state import Target

    lab = labfile.resolve({"name": "f", "networks": [{"name": "n", "mode": "natnetwork",
                           "port_forwards": [{"name": "web", "proto": "tcp", "host_port": 18081,
                                              "vm": "a", "guest_port": 8080}]}],
                           "vms": [{"name": "a", "nics": [{"network": "n"}]}]})
    ends = checks.Endpoints(host_listener_port=1, internet_ip=None, host_uplink_ip="127.0.0.1",
                            mgmt_host_ip="100.64.1.1")
    cells = [c for c in checks.build(lab, checks.Backend.LIBVIRT, ends)
             if c.kind == "port_forward"]
    sent, holds_seen = [], []

    def fake_probe(spec):                   # FAKE host side: the service never echoes
        sent.append(spec["nonce"])
        return {"observed": "error", "detail": "connected, but no fresh nonce came back"}

    def fake_ansible(lab_, target, cells_, inventory, progress, holds, stop, playbook):  # FAKE
        holds_seen.append(holds)
        while not sent:
            time.sleep(0.01)
        return {"a": {"probes": {}, "drivers": {}, "forwards": {"n:web": {
            "mode": "service", "detail": "service present on eth0 192.168.150.10:8080",
            "nonces": [sent[0]]}}}}
    inventory = verifier.Inventory(hosts={"a": {}}, mgmt_host_ip="100.64.1.1",
                                   work_dir=tmp_path)
    verifier._run(lab, Target(uri="test:///default"), None, cells, inventory, lambda m: None,
                  verifier.ProbeSources(guests=fake_ansible, probe_module=lambda: SimpleNamespace(
                      run_all=lambda specs: {}, probe=fake_probe)))
    assert holds_seen == [{"a": [{"id": "n:web", "port": 8080, "proto": "tcp",
                                  "mac": lab.vm("a").nics[0].mac, "origins": ["host"],
                                  "clock": {"target": "100.64.1.1", "port": 1}}]}]
    [cell] = cells
    assert cell.observed == "pass" and cell.detail.startswith("service present"), cell
    assert (tmp_path / "forwards.stop").exists()


def test_the_process_that_ran_the_playbook_signals_the_end_even_when_it_fails(monkeypatch,
                                                                              tmp_path):
    """The host-side probe processes hold the playbook process's result pipe (forked while it
    was open) and end only on the stop file: so that process, not its caller, writes it."""
    from provisioner.verify import ansible as guest_ansible

    def broken(*args):
        raise RuntimeError("ansible-runner failed")
    with pytest.raises(RuntimeError):
        guest_ansible.run_playbook_then_stop(tmp_path / "stop", broken, "dir", "verify.yml", {}, {})
    assert (tmp_path / "stop").exists()


def test_udp_forwards_are_probed_with_the_udp_exchange_and_held_by_the_guest():
    lab = labfile.resolve({"name": "u", "networks": [{"name": "n", "mode": "nat",
                           "port_forwards": [{"name": "dns", "proto": "udp", "host_port": 5353,
                                              "vm": "a", "guest_port": 53}]}],
                           "vms": [{"name": "a", "nics": [{"network": "n"}]}]}, SANDBOX)
    ends = checks.Endpoints(host_listener_port=1, internet_ip="203.0.113.1",
                            host_uplink_ip="203.0.113.2", mgmt_host_ip="100.64.1.1")
    cells = [c for c in checks.build(lab, checks.Backend.LIBVIRT, ends)
             if c.kind == "port_forward"]
    assert {c.source for c in cells} == {"host", "internet"}
    assert all(c.probe["proto"] == "udp" and c.probe["expect_name"] == "a" and
               "ssh" not in c.probe for c in cells)
    [held] = forwardcheck.guest_holds(cells)["a"]
    assert held["proto"] == "udp" and held["port"] == 53


def test_a_refusal_confirms_fail_only_while_the_temporary_listener_was_up():
    """An `expect: fail` cell on a held port: refusals with nothing listening (no hold report,
    or the hold opened after the prober's attempts) say nothing about the flow table."""
    host = {"observed": "fail", "detail": "connection refused", "nonces": ["v1-aaaaaaaa"],
            "attempts": [[100.0, 101.0], [102.0, 103.0]]}
    held = {"mode": "listener", "detail": "vnet's temporary listener", "nonces": []}
    assert forwardcheck.conclude(host, None, "v1", "v2")[0] == "error"
    late = dict(held, opened=104.0, closed=120.0)
    observed, detail = forwardcheck.conclude(host, late, "v1", "v2")
    assert observed == "error" and "not proven up during the attempts" in detail
    assert forwardcheck.conclude(host, dict(held, opened=None, closed=None), "v1", "v2")[0] \
        == "error"
    during = dict(held, opened=100.4, closed=120.0)
    assert forwardcheck.conclude(host, during, "v1", "v2")[0] == "fail"
    # the guest's clock may be up to CLOCK_SKEW_MAX off the prober's: an attempt closer than
    # that to the hold's opening or closing proves nothing
    for edge in (dict(held, opened=101.5, closed=120.0), dict(held, opened=90.0, closed=102.4)):
        observed, detail = forwardcheck.conclude(host, edge, "v1", "v2")
        assert observed == "error" and "not proven up" in detail


def test_measured_clocks_put_both_sides_on_the_host_clock():
    """A guest 0.9 s behind the host opened its hold at its 100.0, the host's 100.9. A refusal
    at the host's 100.5 came before the hold was up: read without the offset, it would fall
    inside. With the offsets measured, the margin is their errors, not CLOCK_SKEW_MAX."""
    held = {"mode": "listener", "detail": "vnet's temporary listener", "nonces": [],
            "opened": 100.0, "closed": 110.0}
    behind = {"offset": 0.9, "error": 0.004}

    def refused(*attempts):
        return {"observed": "fail", "detail": "connection refused", "nonces": ["host-x"],
                "attempts": [list(a) for a in attempts]}
    early = refused((100.5, 100.6))
    assert forwardcheck.conclude(early, held, "host", "v2",
                                 (forwardcheck.HOST_CLOCK, behind))[0] == "error"
    assert forwardcheck.conclude(early, held, "host", "v2",
                                 (forwardcheck.HOST_CLOCK, {"offset": 0.0, "error": 0.004}))[0] \
        == "fail"                                    # what ignoring the offset would conclude
    soon = refused((101.0, 101.2))          # 0.1 s after the hold opened, on the host's clock
    assert forwardcheck.conclude(soon, held, "host", "v2",
                                 (forwardcheck.HOST_CLOCK, behind))[0] == "fail"
    observed, detail = forwardcheck.conclude(soon, held, "host", "v2")     # not measured
    assert observed == "error" and f"{forwardcheck.CLOCK_SKEW_MAX:.3f} s allowed" in detail
    # a guest prober's attempts are mapped with its own clock
    prober = {"offset": -0.3, "error": 0.004}            # 101.3 on its clock is the host's 101.0
    assert forwardcheck.conclude(refused((101.3, 101.5)), held, "v1", "v2",
                                 (prober, behind))[0] == "fail"
    assert forwardcheck.conclude(refused((100.8, 101.0)), held, "v1", "v2",
                                 (prober, behind))[0] == "error"


def test_verify_concludes_a_hold_with_the_clocks_the_guests_measured():
    cell = checks.Check("port_forward", "n", "nat", "host", "a:80", "pass", "host",
                        {"forward": {"vm": "a", "name": "web"}})
    hold = {"mode": "listener", "detail": "vnet's temporary listener", "nonces": [],
            "opened": 100.0, "closed": 110.0}
    sides = {"host:0": {"observed": "fail", "detail": "connection refused",
                        "nonces": ["host-x"], "attempts": [[101.0, 101.2]]}}
    guest = {"a": {"probes": {}, "forwards": {"web": hold},
                   "clock": {"offset": 0.9, "error": 0.004}}}
    run.record([cell], guest, sides)
    assert cell.observed == "fail"
    del guest["a"]["clock"]                 # an older module, or no answer: the bound instead
    run.record([cell], guest, sides)
    assert cell.observed == "error" and "not measured" in cell.detail


def start_time_server(shift: float) -> int:
    """A UDP answerer of "VNET <nonce> TIME" whose clock runs `shift` s ahead, after a stale
    answer to a nonce nobody sent (which the guest must skip)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))

    def answer():
        while True:
            data, peer = sock.recvfrom(256)
            nonce = data.split()[1].decode()
            sock.sendto(f"VNET stale TIME {time.time() + 999:.6f}\n".encode(), peer)
            sock.sendto(f"VNET {nonce} TIME {time.time() + shift:.6f}\n".encode(), peer)
    threading.Thread(target=answer, daemon=True).start()
    return sock.getsockname()[1]


def test_the_guest_measures_its_clock_against_the_host_listener():
    port = start_time_server(shift=5.0)
    clock = probe.clock_offset({"target": "127.0.0.1", "port": port})
    assert abs(clock["offset"] - 5.0) <= clock["error"] + 0.001 and clock["error"] < 0.05
    # vnet's own listener answers the same request with its clock (no shift: one machine)
    listen = free_port(socket.SOCK_DGRAM)
    threading.Thread(target=probe.serve, args=(listen, "host", "127.0.0.1"), daemon=True).start()
    deadline = time.monotonic() + 10
    while (clock := probe.clock_offset({"target": "127.0.0.1", "port": listen})) is None:
        assert time.monotonic() < deadline, "vnet's listener never answered TIME"
    assert abs(clock["offset"]) <= clock["error"] + 0.001


def test_no_answer_gives_no_clock_and_a_run_s_bound_widens_by_the_drift():
    assert probe.clock_offset({"target": "127.0.0.1", "port": free_port(socket.SOCK_DGRAM)}) \
        is None
    start, end = {"offset": 0.9, "error": 0.002}, {"offset": 0.95, "error": 0.003}
    assert probe.clock_over_run(start, end) == {"offset": 0.9, "error": 0.053, "moved": 0.05}
    assert probe.clock_over_run(None, None) is None
    # measured at the start only: a step during the run would go unseen, so it counts as none
    assert probe.clock_over_run(start, None) is None



def test_the_clock_a_guest_measured_reaches_the_verdict_through_ansible(monkeypatch, tmp_path):
    """run_playbook kept only probes, drivers and forwards of a module result: the clock was
    dropped there, so every hold was judged with the unmeasured bound."""
    from types import SimpleNamespace

    import ansible_runner

    from provisioner.verify import ansible as guest_ansible

    clock = {"offset": 0.9, "error": 0.004, "moved": 0.0001}
    hold = {"mode": "listener", "detail": "vnet's temporary listener", "nonces": [],
            "opened": 100.0, "closed": 110.0}
    events = [{"event": "runner_on_ok", "event_data": {"host": "a", "res": {
        "probes": {}, "drivers": {}, "forwards": {"web": hold}, "clock": clock}}}]
    monkeypatch.setattr(ansible_runner, "run", lambda **kw: SimpleNamespace(events=events))
    monkeypatch.setattr(guest_ansible, "close_masters", lambda d: None)
    guest = guest_ansible.run_playbook(str(tmp_path / "p"), "pb.yml", {}, {
        "ANSIBLE_SSH_CONTROL_PATH_DIR": str(tmp_path)})
    assert guest["a"]["clock"] == clock
    cell = checks.Check("port_forward", "n", "nat", "host", "a:80", "pass", "host",
                        {"forward": {"vm": "a", "name": "web"}})
    run.record([cell], guest, {"host:0": {"observed": "fail", "detail": "connection refused",
                                          "nonces": ["host-x"], "attempts": [[101.0, 101.2]]}})
    assert cell.observed == "fail" and cell.evidence["clock_margin_s"] == 0.005


def test_no_clock_is_asked_of_a_loopback_management_address():
    """A Vagrant VirtualBox inventory reaches the guests through forwarded loopback ports: the
    guest's own 127.0.0.1 has no host listener, and each run waited for nothing."""
    cells = forward_cells("127.0.0.1", checks.Backend.VIRTUALBOX)
    assert cells and not any("clock" in c.probe for c in cells)
    assert all(c.probe["clock"] == {"target": "100.64.1.1", "port": 1}
               for c in forward_cells("100.64.1.1", checks.Backend.LIBVIRT))


def forward_cells(mgmt_host_ip: str, backend):
    """The forward cells of a nat lab with one TCP forward, the host's management address
    given."""
    lab = labfile.resolve({"name": "u", "networks": [{"name": "n", "mode": "nat",
                           "port_forwards": [{"name": "web", "proto": "tcp", "host_port": 8080,
                                              "vm": "a", "guest_port": 80}]}],
                           "vms": [{"name": "a", "nics": [{"network": "n"}]}]})
    ends = checks.Endpoints(host_listener_port=1, internet_ip=None, host_uplink_ip="127.0.0.1",
                            mgmt_host_ip=mgmt_host_ip)
    return [c for c in checks.build(lab, backend, ends) if c.probe.get("forward")]


LEAK = probe_module().judge(b"VNET n1 vm2\n", "n1", {"expect_name": "vm1"})
UNHEARD = {"observed": "error", "detail": "no route (host unreachable), which the declared "
                                          "loss on this path can explain"}
REFUSED = {"observed": "fail", "detail": "refused", "refused": True}
SILENT = {"observed": "error", "detail": "no answer", "silent": True}


@pytest.mark.parametrize("answers,kept", [
    ([LEAK, REFUSED, REFUSED], LEAK),        # the leak's end closed; its refusals came after
    ([REFUSED, LEAK, REFUSED], LEAK),
    ([SILENT, REFUSED], REFUSED),             # a silence tells less than a refusal
    ([REFUSED, SILENT], SILENT),
    ([LEAK, {"observed": "pass", "detail": "nonce echoed by vm1"}], None),
    ([UNHEARD, REFUSED, REFUSED], REFUSED),   # reached nothing: a later fail tells more
])
def test_a_leak_seen_once_is_kept_over_later_failures(tmp_path, answers, kept):
    """An attempt answered by the wrong VM, then refusals once that VM's hold closed: the cell
    is the leak, never a green "fail" (a review found the latest attempt won)."""
    stop = tmp_path / "stop"
    left = list(answers)

    def fake_probe(spec):
        if len(left) == 2:           # the guests' run ends: one more attempt, the last
            stop.touch()
        return left.pop(0)
    r = forwardcheck._nonce_until({"id": "1"}, "internet", stop, fake_probe)
    assert r["observed"] == (kept or {"observed": "pass"})["observed"]
    assert kept is None or r["detail"] == kept["detail"]


@pytest.mark.parametrize("host_ip,host_at,internet_at", [
    (None, "203.0.113.2", "203.0.113.2"),            # the sandbox's default: its uplink
    ("0.0.0.0", "203.0.113.2", "203.0.113.2"),       # every address: the uplink too
    ("198.51.100.2", "198.51.100.2", "198.51.100.2"),  # the host's LAN address
    ("127.0.0.1", "127.0.0.1", None),                # the host's alone: no Internet cell
])
def test_a_forward_is_probed_where_it_listens(host_ip, host_at, internet_at):
    """A forward naming host_ip was probed at the uplink whatever it named, so its cells were
    refused and could never go green (a review's find)."""
    pf = {"name": "web", "proto": "tcp", "host_port": 18081, "vm": "a", "guest_port": 8080}
    if host_ip:
        pf["host_ip"] = host_ip
    lab = labfile.resolve({"name": "f", "networks": [{"name": "n", "mode": "natnetwork",
                                                      "port_forwards": [pf]}],
                           "vms": [{"name": "a", "nics": [{"network": "n"}]}]}, SANDBOX)
    ends = checks.Endpoints(host_listener_port=1, internet_ip="203.0.113.1",
                            host_uplink_ip="203.0.113.2", mgmt_host_ip="100.64.1.1")
    cells = [c for c in checks.build(lab, checks.Backend.LIBVIRT, ends)
             if c.kind == "port_forward"]
    at = {c.runner: c.probe["target"] for c in cells}
    assert at == {"host": host_at, **({"internet": internet_at} if internet_at else {})}
