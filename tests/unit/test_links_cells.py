"""Bonds and routers from the lab to the guest and back (issue 17): the kernel command line
that builds them, the route and bond_failover cells as data, the in-guest failover judgement,
the console-driven link cut, and libvirt's live link-state update."""
import xml.etree.ElementTree as ET
from types import SimpleNamespace
from pathlib import Path

import pytest

from provisioner.drivers.libvirt.connection import LibvirtDriver
from provisioner.guest.cmdline import cmdline
from provisioner.lab import loader
from provisioner.lab.model import Backend
from provisioner.host.state import Target
from provisioner.verify import checks, linkcells
from provisioner.verify.run import probe_module

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "bonds-and-router.yaml"
ENDS = checks.Endpoints(host_listener_port=25000, internet_ip="203.0.113.1",
                        host_uplink_ip="198.51.100.2", mgmt_host_ip="100.64.3.1")


@pytest.fixture(scope="module")
def lab():
    return loader.load(EXAMPLE)


def test_cmdline_builds_the_bond_routes_and_forwarding(lab):
    a, r, b = lab.vms
    m0, m1 = a.bonds[0].members
    line = cmdline("BASE", lab, a, "ssh-ed25519 AAAA c").split()
    # the bond's address is a static vnet.if on its MAC (no DHCP server reserves it); the
    # second member gets nothing of its own
    assert f"vnet.if={m0},static,10.71.1.10/24,10.71.1.1" in line
    assert not any(m1 in arg for arg in line if arg.startswith("vnet.if="))
    assert f"vnet.bond=bond0,active-backup,{m0}+{m1}" in line
    assert "vnet.route=10.71.2.0/24,10.71.1.254" in line and "vnet.forward=1" not in line
    assert "vnet.forward=1" in cmdline("BASE", lab, r, "ssh-ed25519 AAAA c").split()
    assert "vnet.route=10.71.1.0/24,10.71.2.254" in cmdline("BASE", lab, b, "k AAAA").split()


def test_route_and_bond_failover_cells(lab):
    cells = checks.build(lab, Backend.LIBVIRT, ENDS)
    routes = [c for c in cells if c.kind == "route"]
    assert [(c.source, c.target, c.network, c.expected) for c in routes] == [
        ("a", "b (10.71.2.10) via r (10.71.1.254)", "site-a", "pass"),
        ("b", "a (10.71.1.10) via r (10.71.2.254)", "site-b", "pass")]
    bond_mac = lab.vm("a").bonds[0].mac
    assert routes[0].probe["bind_mac"] == bond_mac         # a leaves through its bond
    (fo,) = [c for c in cells if c.kind == "bond_failover"]
    assert (fo.source, fo.target, fo.runner) == ("a", "host (10.71.1.1) over bond0", "guest:a")
    assert fo.probe["failover"]["bond"] == "bond0" and fo.probe["bind_mac"] == bond_mac
    # the bond stands for its members: its cells bind to the bond, the members have none
    a_cells = [c for c in cells if c.runner == "guest:a"]
    assert a_cells and all(c.probe.get("bind_mac") == bond_mac for c in a_cells)
    member = lab.vm("a").bonds[0].members[1]
    assert not any(member in str(c.probe) or member in c.target for c in cells)
    assert not any(c.kind == "nic_model" and c.source == "a" for c in cells)


def test_only_active_backup_bonds_get_a_failover_cell():
    data = __import__("yaml").safe_load(EXAMPLE.read_text())
    data["vms"][0]["bonds"][0]["mode"] = "balance-rr"
    cells = checks.build(loader.resolve(data), Backend.LIBVIRT, ENDS)
    assert not [c for c in cells if c.kind == "bond_failover"]
    assert [c for c in cells if c.kind == "vm_to_host" and c.source == "a"]


class FakeBond:
    """The guest's sysfs for bond0 and its members as vnet_probe.failover reads it."""

    def __init__(self, after="eth1", cut=True):
        self.active, self.after, self.cut, self.reads = "eth0", after, cut, 0

    def sys(self, path):
        if path.endswith("active_slave"):
            return self.active
        if path.endswith("perm_hwaddr"):
            return "52:54:00:00:00:0a"
        if path.endswith("eth0/carrier"):
            self.reads += 1
            if self.cut and self.reads > 2:      # vnet cuts after the console line
                self.active = self.after
                return "0"
            return "1"
        raise AssertionError(path)


def run_failover(monkeypatch, tmp_path, bond, outcomes):
    probe = probe_module()
    answers = iter(outcomes)
    monkeypatch.setattr(probe, "_sys", bond.sys)
    monkeypatch.setattr(probe, "probe", lambda spec: {"observed": next(answers),
                                                      "detail": "nonce echoed by host"})
    console = tmp_path / "console"
    spec = {"id": "7", "target": "10.71.1.1", "port": 1, "bind_mac": "x",
            "failover": {"bond": "bond0", "wait": 0.3, "outage_max": 0.3}}
    return probe.failover(spec, console=str(console)), console.read_text() \
        if console.exists() else ""


def test_failover_passes_when_probes_pass_before_and_after_and_the_member_changed(
        monkeypatch, tmp_path):
    result, console = run_failover(monkeypatch, tmp_path, FakeBond(),
                                   ["pass", "fail", "pass"])
    assert result["observed"] == "pass", result
    assert "active member eth0 -> eth1" in result["detail"] and " ms (2 probe(s)" in result["detail"]
    assert console.split()[:3] == ["VNET-CUT", "bond0", "52:54:00:00:00:0a"]


@pytest.mark.parametrize("bond,outcomes,observed,words", [
    (FakeBond(after="eth0"), ["pass", "pass"], "error", "active member is still eth0"),
    (FakeBond(after=""), ["pass"] + ["fail"] * 500, "fail", "no probe passed"),
    (FakeBond(cut=False), ["pass"], "error", "vnet did not cut eth0"),
    (FakeBond(), ["fail"], "fail", "before the cut"),
])
def test_failover_is_red_without_a_failover(monkeypatch, tmp_path, bond, outcomes, observed,
                                            words):
    result, _ = run_failover(monkeypatch, tmp_path, bond, outcomes)
    assert result["observed"] == observed and words in result["detail"], result


def test_run_all_runs_failovers_after_the_other_probes(monkeypatch):
    probe = probe_module()
    order = []
    monkeypatch.setattr(probe, "probe", lambda s, *trips: order.append(s["id"]) or {"observed": "pass"})
    monkeypatch.setattr(probe, "failover", lambda s: order.append("fo") or {"observed": "pass"})
    probe.run_all([{"id": "0", "failover": {"bond": "b"}}, {"id": "1"}, {"id": "2"}])
    assert order[-1] == "fo" and sorted(order[:2]) == ["1", "2"]


def test_link_cutter_cuts_the_member_the_console_names_and_restores_it(lab, tmp_path):
    cells = checks.build(lab, Backend.LIBVIRT, ENDS)
    log = tmp_path / "a.serial.log"
    log.write_text("VNET-CUT bond0 52:54:00:28:89:0b old\n")     # from an earlier run
    calls = []
    cutter = linkcells.LinkCutter(lab, cells, lambda vm, i, up: calls.append((vm, i, up)),
                                  lambda vm: tmp_path / f"{vm}.serial.log").start()
    try:
        assert not calls
        member = lab.vm("a").nics[0].mac
        with open(log, "a") as f:
            f.write(f"\nVNET-CUT bond0 {member} 1234abcd\n")
        for _ in range(100):
            if calls:
                break
            __import__("time").sleep(0.02)
    finally:
        cutter.stop()
    assert calls == [("a", 0, False), ("a", 0, True)]
    (fo,) = [c for c in cells if c.kind == "bond_failover"]
    fo.observed, fo.detail = "pass", "active member eth0 -> eth1"
    cutter.annotate(cells)
    assert fo.detail.endswith(f"vnet cut the link of NIC 0 ({member}) through the driver and "
                              "restored it")


def test_libvirt_set_link_updates_the_live_interface(monkeypatch):
    xml = ("<domain><devices><interface type='network'><mac address='52:54:00:aa:bb:01'/>"
           "<source network='n'/></interface><interface type='network'>"
           "<mac address='52:54:00:aa:bb:02'/><link state='up'/></interface></devices></domain>")
    updates = []

    class Dom:
        def isActive(self):
            return True

        def XMLDesc(self, flags):
            return xml

        def updateDeviceFlags(self, text, flags):
            updates.append((ET.fromstring(text), flags))

    drv = LibvirtDriver(Target(uri="qemu:///x"), owner="o")
    monkeypatch.setattr(LibvirtDriver, "conn",         # FAKE connection: one running domain
                        property(lambda self: SimpleNamespace(lookupByName=lambda name: Dom())))
    drv.set_link("vnet-l-a", "52:54:00:AA:BB:02", up=False)
    drv.set_link("vnet-l-a", "52:54:00:aa:bb:01", up=False)
    libvirt = __import__("libvirt")
    assert [(u.find("mac").get("address"), u.find("link").get("state"), f)
            for u, f in updates] == [("52:54:00:aa:bb:02", "down", libvirt.VIR_DOMAIN_AFFECT_LIVE),
                                     ("52:54:00:aa:bb:01", "down", libvirt.VIR_DOMAIN_AFFECT_LIVE)]
    with pytest.raises(Exception, match="no interface with MAC 52:54:00:aa:bb:03"):
        drv.set_link("vnet-l-a", "52:54:00:aa:bb:03", up=True)


def test_failovers_go_to_the_second_task_and_both_results_are_kept(lab, monkeypatch, tmp_path):
    import ansible_runner

    from provisioner.verify import ansible as guest_ansible, run as verifier

    monkeypatch.setenv("VNET_STATE_DIR", str(tmp_path / "state"))
    seen = {}
    cells = checks.build(lab, Backend.LIBVIRT, ENDS)
    inv = verifier.Inventory(hosts={}, mgmt_host_ip="100.64.3.1", work_dir=tmp_path / "w")
    guest_ansible.run_guests(lab, Target(uri="qemu:///system"), cells, inv, lambda _m: None,
                             playbook=lambda private, playbook, inventory, env:     # FAKE run
                             seen.update(inventory) or {})
    hosts = seen["all"]["hosts"]
    assert [p["failover"]["bond"] for p in hosts["a"]["vnet_failovers"]] == ["bond0"]
    assert hosts["a"]["vnet_probes"] and not any(p.get("failover")
                                                 for p in hosts["a"]["vnet_probes"])
    assert hosts["r"]["vnet_failovers"] == [] and hosts["r"]["vnet_probes"]

    # the playbook's two tasks each report probes for host a: both are kept
    events = [{"event": "runner_on_ok", "event_data": {"host": "a", "res": r}} for r in (
        {"probes": {"0": {"observed": "pass"}}, "drivers": {"m": "virtio_net"}},
        {"probes": {"24": {"observed": "pass"}}, "drivers": {}})]
    monkeypatch.undo()                   # the real run_playbook, on a stand-in runner
    monkeypatch.setattr(ansible_runner, "run", lambda **kw: SimpleNamespace(events=events))
    monkeypatch.setattr(guest_ansible, "close_masters", lambda d: None)
    results = guest_ansible.run_playbook(str(tmp_path / "p"), "pb.yml", {}, {
        "ANSIBLE_SSH_CONTROL_PATH_DIR": str(tmp_path)})
    assert results == {"a": {"probes": {"0": {"observed": "pass"}, "24": {"observed": "pass"}},
                             "drivers": {"m": "virtio_net"}, "forwards": {}}}


def test_a_cloud_vm_behind_a_router_gets_its_route_in_the_seed():
    import yaml

    from provisioner.drivers.libvirt.render import LibvirtRenderer
    from provisioner.guest.seed import network_config

    data = yaml.safe_load(EXAMPLE.read_text())
    data["vms"][2]["image"] = {"url": "https://example.invalid/d.qcow2", "sha256": "a" * 64}
    lab = loader.resolve(data)
    seed = LibvirtRenderer().plan(lab).extra["cloud"]["b"]["seed"]
    routes = yaml.safe_load(network_config(seed))["ethernets"]["nic0"]["routes"]
    assert {"to": "10.71.1.0/24", "via": "10.71.2.254", "on-link": True} in routes


def test_the_html_grid_places_link_cells_in_the_far_ends_column(lab):
    from provisioner.verify.htmlreport import KIND_TITLES, endpoints

    cells = [c.as_dict() for c in checks.build(lab, Backend.LIBVIRT, ENDS)
             if c.kind in ("route", "bond_failover")]
    assert [endpoints(c) for c in cells] == [("a", "b"), ("a", "host"), ("b", "a")]
    assert KIND_TITLES["route"] == "route" and KIND_TITLES["bond_failover"] == "bond failover"


def test_a_request_the_cutter_could_not_act_on_is_said_in_the_cell(lab, tmp_path):
    cells = checks.build(lab, Backend.LIBVIRT, ENDS)
    (tmp_path / "a.serial.log").write_text("")
    calls = []
    cutter = linkcells.LinkCutter(lab, cells, lambda vm, i, up: calls.append(up),
                                  lambda vm: tmp_path / f"{vm}.serial.log",
                                  ready=lambda: False).start()     # host probes never end
    (tmp_path / "a.serial.log").write_text(f"VNET-CUT bond0 {lab.vm('a').nics[0].mac} 1\n")
    __import__("time").sleep(0.3)
    cutter.stop()
    (fo,) = [c for c in cells if c.kind == "bond_failover"]
    fo.detail = "vnet did not cut eth0"
    cutter.annotate(cells)
    assert not calls
    assert "has the guest's VNET-CUT request, but vnet cut nothing (it waited" in fo.detail


@pytest.mark.skipif(__import__("os").geteuid() != 0 or None in (
    __import__("shutil").which("busybox"), __import__("shutil").which("ip"),
    __import__("shutil").which("unshare")),
    reason="needs root, unshare (util-linux), ip (iproute2) and busybox (busybox-static) to "
           "build a private network namespace")
def test_nicroute_keeps_the_routes_behind_a_router_for_the_nics_own_address(tmp_path):
    """Per-NIC policy routing sends all that a NIC's address sends through the NIC's table: the
    routes vnet adds (via a router on that NIC's subnet) must be in it, or bound probes and
    answers from that address miss them (route cells went red that way)."""
    from tests.unit.test_multihome import IPROUTE2, NICROUTE, _in_new_netns

    routes = tmp_path / "routes"
    routes.write_text("10.71.2.0/24,10.71.1.254\n10.99.0.0/24,192.168.9.1\n")
    out = _in_new_netns(tmp_path, f"""
        {IPROUTE2} link add a0 type veth peer name a1
        for d in lo a0 a1; do ip link set $d up; done
        ip addr add 10.71.1.10/24 dev a0
        VNET_ROUTES={routes} sh {NICROUTE} a0 10.71.1.10/24 10.71.1.1
        echo "== behind"; ip route get 10.71.2.10 from 10.71.1.10
        echo "== elsewhere"; ip route get 10.99.0.5 from 10.71.1.10
    """)
    assert "via 10.71.1.254 dev a0" in out.split("== behind")[1].split("==")[0], out
    assert "via 10.71.1.1 dev a0" in out.split("== elsewhere")[1], out   # not on this subnet
