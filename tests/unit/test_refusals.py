"""A refusal proves a closed path only where the target's port listened through the refused
attempt (provisioner/verify/refusals.py): the target's own stack refuses an idle port too, and
a negative cell confirmed by that would hide an open path."""
import os
import socket
import sys
from pathlib import Path

import pytest

from provisioner.host import procs
from provisioner.lab import loader as labfile
from provisioner.lab.model import Backend
from provisioner.verify import checks, listeners, refusals
from provisioner.verify import run as verifier

probe = verifier.probe_module()
ENDS = checks.Endpoints(21590, "203.0.113.1", "203.0.113.2", "100.64.0.1")
ECHO = {"target": "192.168.56.10", "port": 7, "listens": "vm1"}
CLOCK = {"offset": 0.0, "error": 0.01}


def refused(start=100.0, end=100.1):
    return {"observed": "fail", "detail": "refused", "refused": True, "at": [start, end]}


def le_words(address: str, port: int) -> str:
    """An IPv4 address and port as /proc/net/tcp writes them on this machine."""
    word = int.from_bytes(socket.inet_aton(address), sys.byteorder)
    return f"{word.to_bytes(4, 'big').hex().upper()}:{port:04X}"


def row(local: str, remote: str, state: str, inode: int) -> str:
    return f"   0: {local} {remote} {state} 00000000:00000000 00:00000000 00000000     0   " \
           f"     0 {inode} 1 0000000036f7ac56 100 0 0 10 0"


BOOTED = 50.0     # the guest's wall clock at uptime 0
BOOT = "6f2c1d4e-0000-4000-8000-00000000b007"


def look(at, sockets, clock=None):
    """A guest's list of its listening sockets, seen between `at` and 10 ms later."""
    return {"from": at, "to": at + 0.01, "uptime": at - BOOTED, "boot": BOOT, "tcp/7": sockets,
            "clock": clock}


def guests(first, last, first_at=90.0, last_at=110.0, v6only=0, clock=CLOCK):
    return {"vm1": {"clock": clock, "listening": {
        "first": look(first_at, first), "last": look(last_at, last), "v6only": v6only}}}


def settled(report, stamped=(), result=None, spec=ECHO, prober="host", uptime=2.0, boot=BOOT):
    """stamped: the inodes the console stamped listening at `uptime` (wall 52: before 100)."""
    evidence = refusals.Evidence({"vm1": {boot: {"tcp/7": {i: uptime for i in stamped}}}})
    return refusals.settle(result or refused(), spec, prober, report, evidence)


def test_proc_net_rows_give_listening_sockets_and_skip_connections():
    lines = [row(le_words("127.0.0.1", 7099), le_words("0.0.0.0", 0), "0A", 10174),
             row(le_words("100.64.232.10", 22), le_words("100.64.232.1", 32782), "01", 10176)]
    assert probe.proc_net_sockets(lines, 7099, "0A") == [["127.0.0.1", 10174]]
    assert probe.proc_net_sockets(lines, 22, "0A") == []           # a session, not a listener
    wildcard6 = row("0" * 32 + ":0007", "0" * 32 + ":0000", "0A", 10009)
    assert probe.proc_net_sockets([wildcard6], 7, "0A") == [["::", 10009]]


def test_the_module_lists_a_real_listening_socket_at_its_start_and_end():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port, inode = server.getsockname()[1], os.fstat(server.fileno()).st_ino
        got = probe.handle({"probes": [], "listening": {"ports": [f"tcp/{port}"]}})["listening"]
    assert ["127.0.0.1", inode] in got["first"][f"tcp/{port}"]
    assert got["first"][f"tcp/{port}"] == got["last"][f"tcp/{port}"]
    assert got["first"]["from"] <= got["first"]["to"] <= got["last"]["from"]
    assert got["first"]["boot"] == open("/proc/sys/kernel/random/boot_id").read().strip()
    assert got["v6only"] in (0, 1)


def test_a_refusal_without_a_listening_target_is_an_error():
    for report in ({}, guests([], []), guests([["::", 5]], [])):
        r = settled(report)
        assert r["observed"] == "error" and "may be vm1's own" in r["detail"], r


def test_a_socket_stamped_before_the_attempt_and_listed_after_it_keeps_the_refusal_a_fail():
    """The host probed before the guest's first look (at 105): the console's stamp covers it."""
    r = settled(guests([["::", 10009]], [["::", 10009]], first_at=105.0), stamped={10009})
    assert r["observed"] == "fail" and "stamped listening on the console, before the " \
        "attempt, and still listened after it" in r["detail"], r
    restarted = settled(guests([["::", 9]], [["::", 9]], first_at=105.0), stamped={9},
                        uptime=50.05)            # stamped at wall 100.05: after the start
    assert restarted["observed"] == "error" and "from before the attempt" in restarted["detail"]


def test_the_attempt_must_end_before_the_guests_last_look():
    late = settled(guests([["::", 9]], [["::", 9]], last_at=100.05), stamped={9})
    assert late["observed"] == "error" and "ended after the guest's last look" in late["detail"]


def test_without_boot_evidence_the_first_look_must_come_before_the_attempt():
    ok = settled(guests([["0.0.0.0", 7]], [["0.0.0.0", 7]], first_at=90.0), stamped={6})
    assert ok["observed"] == "fail" and "in the guest's first look" in ok["detail"]
    early = settled(guests([["0.0.0.0", 7]], [["0.0.0.0", 7]], first_at=100.05), stamped={6})
    assert early["observed"] == "error" and "from before the attempt" in early["detail"]


def test_an_unmeasured_clock_widens_the_margin():
    """Clocks not measured: 1.5 s apart at most (forwardcheck.CLOCK_SKEW_MAX)."""
    report = guests([["::", 9]], [["::", 9]], last_at=101.0, clock=None)
    assert settled(report, stamped={9})["observed"] == "error"
    report = guests([["::", 9]], [["::", 9]], last_at=102.0, clock=None)
    assert settled(report, stamped={9})["observed"] == "fail"


def test_a_restarted_socket_or_one_that_does_not_take_the_address_proves_nothing():
    assert settled(guests([["::", 1]], [["::", 2]]), stamped={1})["observed"] == "error"
    v6 = guests([["::", 3]], [["::", 3]], v6only=1)
    assert settled(v6, stamped={3})["observed"] == "error"
    other = guests([["192.168.56.99", 3]], [["192.168.56.99", 3]])
    assert settled(other, stamped={3})["observed"] == "error"
    mapped = guests([["::ffff:192.168.56.10", 3]], [["::ffff:192.168.56.10", 3]])
    assert settled(mapped, stamped={3})["observed"] == "fail"


def test_a_guest_prober_uses_its_own_clock():
    """vm2's attempt at 100 by its clock is 103 by the host's: after vm1's last look at 102."""
    report = dict(guests([["::", 9]], [["::", 9]], last_at=102.0),
                  vm2={"clock": {"offset": 3.0, "error": 0.01}})
    r = settled(report, stamped={9}, prober="guest:vm2")
    assert r["observed"] == "error" and "ended after" in r["detail"]


def test_a_measured_prober_clock_applies_when_the_targets_is_not_measured():
    """vm2 measured 3 s ahead of the host (offset -3); vm1's clock lost its TIME answers. vm2's
    refused attempt at its 105.0 is the host's 102.0, before vm1's echo was stamped listening
    (the host's 102.5): vm1's own kernel refused it. Read without vm2's offset (a review's
    find: one unmeasured clock dropped the other's), the attempt looked 2.5 s after."""
    stamped_at = 102.5 - BOOTED                  # uptime of the stamp: the host's 102.5
    report = dict(guests([], [["::", 9]], first_at=90.0, last_at=120.0, clock=None),
                  vm2={"clock": {"offset": -3.0, "error": 0.01}})
    r = settled(report, stamped={9}, result=refused(105.0, 105.1), prober="guest:vm2",
                uptime=stamped_at)
    assert r["observed"] == "error", r


def test_vnet_listeners_vouch_only_while_they_ran_and_never_for_loopback():
    spec = {"target": "203.0.113.1", "port": 2, "listens": refusals.vnet_listener("internet")}
    ran = refusals.Evidence(listeners_ran=lambda name: name == "internet")
    assert refusals.settle(refused(), spec, "guest:vm1", {}, ran)["observed"] == "fail"
    gone = refusals.settle(refused(), spec, "guest:vm1", {}, refusals.Evidence())
    assert gone["observed"] == "error" and "not running after the probes" in gone["detail"]
    loop = dict(spec, target="127.0.0.1")
    assert refusals.settle(refused(), loop, "guest:vm1", {}, ran)["observed"] == "error"


def test_only_refusals_are_settled():
    timed_out = {"observed": "fail", "detail": "timed out"}
    assert settled({}, result=timed_out) is timed_out
    plain = refused()
    assert settled({}, result=plain, spec={"target": "x", "port": 7}) is plain


def test_a_refused_probe_carries_its_wall_times_only_where_a_listener_vouches():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    spec = {"target": "127.0.0.1", "port": port, "expect_name": "x", "timeout": 1}
    assert "at" not in probe.probe(spec)
    r = probe.probe(dict(spec, listens="vm1"))
    assert r["refused"] and r["at"][0] <= r["at"][1]


def test_the_console_stamps_each_socket_per_boot_at_its_first_uptime():
    console = ("VNET-LISTEN tcp/7 aa-1 2.31 11 12 \nVNET-READY vm1\nVNET-LISTEN tcp/7 aa-1 80.5 30 \n"
               "reboot\nVNET-LISTEN tcp/7 bb-2 2.40 11 \nVNET-LISTEN tcp/7 bb-2 9.00 11 \n"
               "VNET-LISTEN tcp/7 bb-2 160.00 31 \n")
    assert refusals.listen_stamps(console) == {"aa-1": {"tcp/7": {11: 2.31, 12: 2.31, 30: 80.5}},
                                               "bb-2": {"tcp/7": {11: 2.40, 31: 160.0}}}
    assert refusals.listen_stamps("VNET-READY vm1\n") == {}


def test_a_stamp_of_another_boot_vouches_for_nothing():
    """A reboot before the uptime passed the last stamp's: inodes repeat, the boot id not."""
    report = guests([["::", 9]], [["::", 9]], first_at=105.0)
    assert settled(report, stamped={9}, boot="another-boot")["observed"] == "error"
    assert settled(report, stamped={9})["observed"] == "fail"


def test_the_detail_names_the_evidence_that_covered_the_attempt():
    """A stamp after the attempt, a first look before it: the first look is what showed it."""
    r = settled(guests([["::", 9]], [["::", 9]], first_at=90.0), stamped={9}, uptime=50.5)
    assert r["observed"] == "fail" and "was in the guest's first look" in r["detail"], r


def test_each_look_is_mapped_with_the_clock_its_own_run_measured():
    """The later list's run found the guest's clock 5 s ahead (stepped since the probe task):
    its last look at 104 by the guest's clock is 99 on the host's, before the attempt ended."""
    report = guests([["::", 9]], [["::", 9]], last_at=104.0)
    report["vm1"]["listening"]["last"]["clock"] = {"offset": -5.0, "error": 0.01}
    r = settled(report, stamped={9})
    assert r["observed"] == "error" and "after the guest's last look" in r["detail"], r


def test_a_mapped_ipv4_listener_row_is_parsed():
    raw = socket.inet_pton(socket.AF_INET6, "::ffff:192.168.56.10")
    # /proc/net/tcp6 prints the address as four 32-bit words in the kernel's byte order
    local = "".join(f"{int.from_bytes(raw[i:i + 4], sys.byteorder):08X}" for i in range(0, 16, 4))
    r = row(f"{local}:0007", "0" * 32 + ":0000", "0A", 5)
    assert probe.proc_net_sockets([r], 7, "0A") == [["::ffff:192.168.56.10", 5]]


def test_listeners_ran_through_names_each_listener_by_its_records(tmp_path):
    """One dead process of a listener makes that listener unproven, and no other."""
    me = os.getpid()
    alive = procs.Record(me, procs.start_time(me), procs.proc_argv(me)[0])
    for name in ("host-0", "host-1", "internet-0", "declared-host-9000-0"):
        procs.write(tmp_path / f"listener-{name}.pid", alive)
    (tmp_path / "listener-host-1.pid").write_text('{"pid": 2, "start_time": 1, "marker": "x"}')
    ran = listeners.ran_through(sorted(tmp_path.glob("*.pid")))
    assert [ran(n) for n in ("host", "internet", "declared-host-9000", "hv2")] == \
        [False, True, True, False]


def lab(data):
    return labfile.resolve(data)


def test_every_cell_aimed_at_a_listener_names_it():
    two = lab({"name": "ho", "networks": [{"name": "n", "mode": "hostonly"}],
               "vms": [{"name": "vm1", "nics": [{"network": "n"}]},
                       {"name": "vm2", "nics": [{"network": "n"}]}]})
    cells = checks.build(two, Backend.LIBVIRT, ENDS)
    named = {(c.kind, c.source, c.probe.get("listens")) for c in cells if c.kind != "nic_model"}
    assert named == {("vm_to_host", "vm1", "vnet:host"), ("vm_to_host", "vm2", "vnet:host"),
                     ("vm_to_internet", "vm1", "vnet:internet"),
                     ("vm_to_internet", "vm2", "vnet:internet"),
                     ("host_to_vm", "host", "vm1"), ("host_to_vm", "host", "vm2"),
                     ("internet_to_vm", "internet", "vm1"),
                     ("internet_to_vm", "internet", "vm2"),
                     ("vm_to_vm", "vm1", "vm2"), ("vm_to_vm", "vm2", "vm1")}
    # both vm_to_vm cells expect a connection here: no guest needs a list after the others
    assert refusals.watched(cells) == {"vm1": {"ports": ["tcp/7"], "after": False},
                                       "vm2": {"ports": ["tcp/7"], "after": False}}
    # the guests' clocks are measured where a refusal's time matters: aimed at a guest
    assert all(bool(c.probe.get("clock")) == (not c.probe["listens"].startswith("vnet:"))
               for c in cells if c.probe.get("listens"))


def test_a_nat_labs_vm_to_vm_cells_ask_arp_and_need_no_later_list():
    """nat VM<->VM expects no connection, but asks the segment by ARP: never refused."""
    nat = lab({"name": "na", "networks": [{"name": "n", "mode": "nat"}],
               "vms": [{"name": "vm1", "nics": [{"network": "n"}]},
                       {"name": "vm2", "nics": [{"network": "n"}]}]})
    cells = checks.build(nat, Backend.LIBVIRT, ENDS)
    assert any(c.probe.get("arp_claim") for c in cells)
    assert {w["after"] for w in refusals.watched(cells).values()} == {False}


def test_declared_cells_name_the_echo_or_the_declared_listener():
    data = {"name": "dc", "networks": [{"name": "n", "mode": "hostonly"}],
            "vms": [{"name": "v1", "nics": [{"network": "n"}]},
                    {"name": "v2", "nics": [{"network": "n"}]}],
            "checks": [{"from": "v1", "to": "v2", "port": 7, "expect": "fail"},
                       {"from": "v1", "to": "host", "port": 9000, "expect": "fail"},
                       {"from": "v1", "to": "v2", "port": 8080, "expect": "fail"}]}
    cells = [c for c in checks.build(lab(data), Backend.LIBVIRT, ENDS) if c.declared]
    by_port = {c.probe["port"]: c.probe.get("listens") for c in cells}
    assert by_port == {7: "v2", 9000: "vnet:declared-host-9000", 8080: None}   # 8080: a hold


@pytest.fixture
def hostonly_cells():
    one = lab({"name": "ho", "networks": [{"name": "n", "mode": "hostonly"}],
               "vms": [{"name": "vm1", "nics": [{"network": "n"}]}]})
    return checks.build(one, Backend.LIBVIRT, ENDS)


def test_record_turns_a_refused_internet_to_vm_cell_without_a_listener_red(hostonly_cells):
    cells = hostonly_cells
    at = next(i for i, c in enumerate(cells) if c.kind == "internet_to_vm")
    addr = cells[at].probe["target"]

    def run(first, last):
        report = guests([[addr, 9]] if first else [], [[addr, 9]] if last else [])
        report["vm1"].update(probes={}, drivers={})
        verifier.record(cells, report, {f"internet:{at}": refused()},
                        evidence=refusals.Evidence({"vm1": {BOOT: {"tcp/7": {9: 2.0}}}}))
        return cells[at]
    assert run(True, True).ok
    down = run(False, False)
    assert not down.ok and down.observed == "error", down.detail


def test_verify_reads_each_guests_console_and_its_listeners_records(tmp_path):
    """verify() with its probe sources replaced (FAKE: no Ansible, no listener process): the
    boot socket comes from the console the inventory names, and vnet's listener from the
    records start_listeners left (here one whose process is not running: its cell turns red)."""
    from types import SimpleNamespace

    from provisioner.host.state import Target

    one = lab({"name": "ho", "networks": [{"name": "n", "mode": "hostonly"}],
               "vms": [{"name": "vm1", "nics": [{"network": "n"}]}]})
    addr = str(one.vm("vm1").nics[0].ip.ip)

    def dead_listener(target, sb, port, lab_dir, records, *rest):
        records.append(lab_dir / "listener-host-0.pid")
        records[-1].write_text('{"pid": 2, "start_time": 1, "marker": "x"}')

    def fake_guests(lab_, target, cells, inventory, progress, holds, stop, playbook):
        report = guests([[addr, 9]], [[addr, 9]], first_at=1e12, last_at=1e12)
        report["vm1"].update(drivers={}, probes={
            str(i): refused() if c.kind == "vm_to_host" else {"observed": "pass", "detail": ""}
            for i, c in enumerate(cells) if c.runner == "guest:vm1"})
        return report
    sources = verifier.ProbeSources(
        start_listeners=dead_listener, guests=fake_guests,
        probe_module=lambda: SimpleNamespace(
            run_all=lambda specs: {s["id"]: refused() for s in specs}, probe=lambda s: {}))
    inventory = verifier.Inventory(hosts={"vm1": {}}, mgmt_host_ip="100.64.0.1",
                                   work_dir=tmp_path,
                                   console=lambda vm: f"VNET-LISTEN tcp/7 {BOOT} 2.5 9\n")
    result = verifier.verify(one, Target(uri="test:///default"), lambda m: None,
                             inventory=inventory, sources=sources)
    kind = {c["kind"]: c for c in result["checks"]}
    assert kind["host_to_vm"]["observed"] == "fail"        # a closed path (red: must pass)
    assert "stamped listening on the console" in kind["host_to_vm"]["detail"], kind["host_to_vm"]
    assert kind["vm_to_host"]["observed"] == "error"
    assert "not running after the probes" in kind["vm_to_host"]["detail"]


def test_a_guest_another_guest_probes_for_no_connection_lists_its_sockets_after_every_probe(
        tmp_path, monkeypatch):
    """A declared v1 -> v2:7 `expect: fail`: v2 lists its sockets once more in a later task
    (playbooks/verify.yml), and that later list is the run's last."""
    import ansible_runner
    from types import SimpleNamespace

    from provisioner.verify import ansible as guest_ansible

    data = {"name": "dc", "networks": [{"name": "n", "mode": "hostonly"}],
            "vms": [{"name": "v1", "nics": [{"network": "n"}]},
                    {"name": "v2", "nics": [{"network": "n"}]}],
            "checks": [{"from": "v1", "to": "v2", "port": 7, "expect": "fail"}]}
    cells = checks.build(lab(data), Backend.LIBVIRT, ENDS)
    assert refusals.watched(cells)["v2"]["after"] is True
    own, later = look(1.0, [["::", 9]]), look(5.0, [["::", 9]])
    events = [{"event": "runner_on_ok", "event_data": {"host": "v2", "res": {
        "probes": {}, "drivers": {}, "forwards": {},
        "listening": {"first": own, "last": own, "v6only": 0}}}},
        {"event": "runner_on_ok", "event_data": {"host": "v2", "res": {
            "probes": {}, "drivers": {}, "forwards": {},
            "listening": {"first": later, "last": later, "v6only": 0}}}}]
    monkeypatch.setattr(ansible_runner, "run", lambda **kw: SimpleNamespace(events=events))
    monkeypatch.setattr(guest_ansible, "close_masters", lambda d: None)
    got = guest_ansible.run_playbook(str(tmp_path / "p"), "pb.yml", {}, {
        "ANSIBLE_SSH_CONTROL_PATH_DIR": str(tmp_path)})
    assert got["v2"]["listening"]["first"] == own and got["v2"]["listening"]["last"] == later


@pytest.mark.parametrize("shell", [["dash"], ["busybox", "sh"]])
def test_the_images_stamp_names_a_real_listening_socket_in_the_format_vnet_reads(
        tmp_path, shell):
    """listen.sh's stamp_listen, run by a real shell (the image's is busybox's) against a real
    listening socket: its line parses, with this boot's id and the socket's inode."""
    import shutil
    import subprocess

    if not shutil.which(shell[0]):
        pytest.skip(f"{shell[0]} is not installed: the shell this stamp runs under")
    script = Path(refusals.__file__).parents[1] / "guest/files/rootfs/usr/lib/vnet/listen.sh"
    console = tmp_path / "console"
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port, inode = server.getsockname()[1], os.fstat(server.fileno()).st_ino
        subprocess.run([*shell, "-c", f". {script} && stamp_listen {port}"], check=True,
                       env={"PATH": os.environ["PATH"], "CONSOLE": str(console)}, timeout=30)
    stamps = refusals.listen_stamps(console.read_text())
    boot = open("/proc/sys/kernel/random/boot_id").read().strip()
    assert inode in stamps[boot][f"tcp/{port}"], console.read_text()
