"""Port forwards of a lab with hosts: are served on the host the issue names (lab/forwardhosts.py):
a natnetwork's on its home host, a nat VM's hostfwd on the VM's own host; in a sandbox they
listen on that host's address; their cells are probed from that host and at that address; the
reports and `vnet status` say which host serves each; a host outside a sandbox is refused in
one line; each host's proxy is recorded and stopped by its own PID."""
import copy
import re

import pytest

from provisioner.drivers.libvirt import hostforwards, multihost
from provisioner.errors import Unsupported
from provisioner.host import forwarding, procs, sandbox
from provisioner.host.state import Target
from provisioner.lab import loader as labfile
from provisioner.lab.forwardhosts import forwards_by_host, served_on
from provisioner.verify import checks, forwardcheck, hostcells, servedon, topology

from .test_hosts_labfile import ISSUE_LAB
from .test_lab_processes import proxy_rules, state_root  # noqa: F401 (a fixture)

SB = "fh"


def _lab(defaults=None):
    """lan homed on hv2 with a TCP and a UDP forward (to b on hv2 and a on hv1), and a nat
    network whose forward goes to b on hv2."""
    data = copy.deepcopy(ISSUE_LAB)
    data["networks"][0].update(home="hv2", port_forwards=[
        {"name": "web", "proto": "tcp", "host_port": 18080, "vm": "b", "guest_port": 8080},
        {"name": "dns", "proto": "udp", "host_port": 15353, "vm": "a", "guest_port": 53}])
    data["networks"].append({"name": "out", "mode": "nat", "port_forwards": [
        {"name": "ssh", "proto": "tcp", "host_port": 2222, "vm": "b", "guest_port": 22}]})
    data["vms"][1]["nics"].append({"network": "out"})
    if defaults is not None:          # a sandbox fills uri and underlay_ip itself
        for host in data["hosts"]:
            host.pop("uri"), host.pop("underlay_ip")
    return labfile.resolve(data, defaults or labfile.Defaults())


def test_a_natnetwork_forward_is_served_on_its_home_host_and_a_nat_one_on_its_vms_host():
    lab = _lab()
    served = {pf.name: served_on(lab, pf) for n in lab.networks for pf in n.port_forwards}
    assert served == {"web": "hv2", "dns": "hv2", "ssh": "hv2"}
    lab_hv1 = labfile.resolve(dict(copy.deepcopy(ISSUE_LAB), networks=[
        dict(ISSUE_LAB["networks"][0], port_forwards=[
            {"name": "web", "proto": "tcp", "host_port": 18080, "vm": "b", "guest_port": 80}]),
        ISSUE_LAB["networks"][1]]))
    assert forwards_by_host(lab_hv1) == {"hv1": list(lab_hv1.network("lan").port_forwards)}


def test_in_a_sandbox_a_forward_listens_on_its_serving_hosts_address():
    sb = sandbox.describe(SB)
    lab = _lab(sandbox.lab_defaults(SB))
    hv2 = str(lab.hosts[1].underlay_ip)
    listen = {pf.name: str(pf.host_ip) for n in lab.networks for pf in n.port_forwards}
    assert listen == {"web": hv2, "dns": hv2, "ssh": hv2} and hv2 != sb.host_uplink_ip
    # a forward served on hv1 keeps the sandbox host's uplink, as before hosts:
    data = copy.deepcopy(ISSUE_LAB)
    for host in data["hosts"]:
        host.pop("uri"), host.pop("underlay_ip")
    data["networks"][0]["port_forwards"] = [
        {"name": "web", "proto": "tcp", "host_port": 18080, "vm": "b", "guest_port": 80},
        {"name": "named", "proto": "tcp", "host_port": 18081, "vm": "b", "guest_port": 81,
         "host_ip": "127.0.0.1"}]
    lab = labfile.resolve(data, sandbox.lab_defaults(SB))
    assert [str(pf.host_ip) for pf in lab.network("lan").port_forwards] == [
        sb.host_uplink_ip, "127.0.0.1"]                 # a named host_ip is kept


def test_without_hosts_forwards_listen_where_they_always_did():
    data = copy.deepcopy(ISSUE_LAB)
    data.pop("hosts"), data["networks"][0].pop("home")
    for vm in data["vms"]:
        vm.pop("host")
    data["networks"][0]["port_forwards"] = [
        {"name": "web", "proto": "tcp", "host_port": 18080, "vm": "b", "guest_port": 80}]
    lab = labfile.resolve(data, sandbox.lab_defaults(SB))
    assert str(lab.network("lan").port_forwards[0].host_ip) == sandbox.describe(SB).host_uplink_ip
    assert served_on(lab, lab.network("lan").port_forwards[0]) is None


def test_forward_cells_are_probed_from_the_serving_host_and_at_its_address():
    lab = _lab(sandbox.lab_defaults(SB))
    hv2 = str(lab.hosts[1].underlay_ip)
    ends = checks.Endpoints(host_listener_port=1, internet_ip="203.0.113.1",
                            host_uplink_ip="203.0.113.2", mgmt_host_ip="100.64.1.1")
    cells = [c for c in checks.build(lab, checks.Backend.LIBVIRT, ends)
             if c.kind == "port_forward"]
    assert {(c.runner, c.probe["target"]) for c in cells} == {("host.hv2", hv2),
                                                               ("internet", hv2)}
    udp = [c for c in cells if c.probe.get("proto") == "udp"]
    assert len(udp) == 2 and all(c.probe["forward"]["vm"] == "a" for c in udp)
    holds = forwardcheck.guest_holds(cells)
    assert [h["origins"] for h in holds["a"]] == [["host.hv2", "internet"]]
    # the runner's namespace comes from the lab's record of its hosts; none, no prober
    assert servedon.side_namespaces(lab, Target(uri="x"), {c.runner for c in cells}) == {}


def test_the_matrix_and_the_topology_name_the_host_that_serves_each_forward():
    lab = _lab(sandbox.lab_defaults(SB))
    ends = checks.Endpoints(host_listener_port=1, internet_ip="203.0.113.1",
                            host_uplink_ip="203.0.113.2", mgmt_host_ip="100.64.1.1")
    found = [c.as_dict() for c in checks.build(lab, checks.Backend.LIBVIRT, ends)
             if c.kind == "port_forward"]
    hostcells.annotate(found, lab)
    by = {(c["source"], c["target"].split(":")[0]): (c["served_on"], c["hosts"]) for c in found}
    assert by[("host.hv2", "a")] == ("hv2", "hv2->hv1")          # across the stretch
    assert by[("internet", "b")] == ("hv2", "-->hv2")
    assert {f["name"]: f["host"] for f in topology.of(lab)["forwards"]} == {
        "web": "hv2", "dns": "hv2", "ssh": "hv2"}


def test_rules_are_grouped_by_serving_host_and_a_host_outside_a_sandbox_is_refused():
    from provisioner.drivers.libvirt.render import LibvirtRenderer

    lab = _lab()
    extra = LibvirtRenderer().plan(lab).extra
    grouped = hostforwards.by_host(lab, extra)
    assert {h: {k: [r["name"] for r in v] for k, v in kinds.items()}
            for h, kinds in grouped.items()} == {
        "hv2": {"hostfwd": ["ssh"], "proxies": ["web", "dns"]}}
    sandboxed = {h.name: Target(uri=h.uri, netns=f"ns-{h.name}") for h in lab.hosts}
    hostforwards.remote_refusal(lab, sandboxed)           # every serving host has a namespace
    remote = dict(sandboxed, hv2=Target(uri=lab.hosts[1].uri))
    with pytest.raises(Unsupported, match=re.escape(
            "networks.lan.port_forwards.web: served on hv2, a host outside a vnet sandbox")):
        hostforwards.remote_refusal(lab, remote)


def test_each_hosts_proxy_is_recorded_and_stopped_by_its_own_pid(state_root, tmp_path):  # noqa: F811
    """Real proxies on 127.0.0.1 (no namespace): one per host, each with its record; the lab's
    stop ends both; `vnet status` names the host and the PID."""
    lab_dir = tmp_path / "lab"
    lab_dir.mkdir()
    rules = proxy_rules(lab_dir)
    one = forwarding.start_proxy(Target(uri="qemu:///system"), lab_dir, rules[:1], host="hv1")
    two = forwarding.start_proxy(Target(uri="qemu:///system"), lab_dir, rules[1:], host="hv2")
    assert one != two and {p.name for p in forwarding.proxy_records(lab_dir)} == {
        "portproxy-hv1.pid", "portproxy-hv2.pid"}
    assert forwarding.proxy_pid(lab_dir, "hv2") == two
    forwarding.stop_proxy(lab_dir)
    assert not procs.pid_alive(one) and not procs.pid_alive(two)
    assert forwarding.proxy_records(lab_dir) == []


def test_status_names_the_serving_host_and_its_proxy(tmp_path):
    from provisioner.cli.labs import _status_table

    lab = _lab(sandbox.lab_defaults(SB))
    described = hostforwards.described(lab, tmp_path)
    web = next(f for f in described if f["name"] == "web")
    assert web["host"] == "hv2" and web["served_by"] == "vnet port proxy (not running)"
    assert next(f for f in described if f["name"] == "ssh")["served_by"] == "QEMU hostfwd of b"
    vm = {"name": "b", "host": "hv2", "state": "running",
          "nics": [{"network": "lan", "model": "virtio", "mac": "m", "addresses": []}]}
    text = _status_table({"lab": "x", "vms": [vm], "forwards": described})
    row = next(line for line in text.splitlines() if line.startswith("web "))
    assert "hv2" in row and f"{lab.hosts[1].underlay_ip}:18080" in row


def test_a_networks_host_to_vm_cells_run_on_its_home_host():
    """lan is homed on hv2 (its host address is there); back on hv1; the per-VM NAT `out` has
    no home address and stays with the first host's prober (its host->VM is a negative)."""
    lab = _lab(sandbox.lab_defaults(SB))
    ends = checks.Endpoints(host_listener_port=1, internet_ip="203.0.113.1",
                            host_uplink_ip="203.0.113.2", mgmt_host_ip="100.64.1.1")
    runners = {(c.network, c.runner) for c in checks.build(lab, checks.Backend.LIBVIRT, ends)
               if c.kind == "host_to_vm"}
    assert runners == {("lan", "host.hv2"), ("back", "host"), ("out", "host")}


def test_a_vm_to_host_probe_expects_the_listener_of_the_host_it_must_reach():
    """Each host's listener answers with its own name ("host" on the first, "host.HV" on the
    others): a probe that reaches the wrong host is an answer from another endpoint, not a
    pass. lan's host address is on its home hv2; the per-VM NAT `out` is b's own host (hv2);
    the internal `back` has no host address (its negative probe targets hv1's management)."""
    lab = _lab(sandbox.lab_defaults(SB))
    ends = checks.Endpoints(host_listener_port=1, internet_ip="203.0.113.1",
                            host_uplink_ip="203.0.113.2", mgmt_host_ip="100.64.1.1")
    expected = {(c.network, c.source, c.probe["expect_name"])
                for c in checks.build(lab, checks.Backend.LIBVIRT, ends) if c.kind == "vm_to_host"}
    assert expected == {("lan", "a", "host.hv2"), ("lan", "b", "host.hv2"), ("back", "a", "host"),
                        ("back", "b", "host"), ("out", "b", "host.hv2")}
    assert [servedon.listener_name(lab, h.name) for h in lab.hosts] == ["host", "host.hv2"]
    single = labfile.resolve({"name": "one", "networks": [{"name": "n", "mode": "nat"}],
                              "vms": [{"name": "a", "nics": [{"network": "n"}]}]})
    assert {c.probe["expect_name"] for c in checks.build(single, checks.Backend.LIBVIRT, ends)
            if c.kind == "vm_to_host"} == {"host"}


def test_a_declared_check_whose_host_end_is_another_host_is_skipped_not_misprobed():
    """Declared listeners and probers run on the first host only: a check to or from the host
    of lan (homed on hv2) is skipped, so the lab is not verified; back's (hv1) is probed. The
    matrix's hosts column names the host a VM->host cell must reach."""
    data = copy.deepcopy(ISSUE_LAB)
    data["networks"][0]["home"] = "hv2"
    data["checks"] = [{"from": "a", "to": "host", "port": 8080, "network": "lan", "expect": "pass"},
                      {"from": "host", "to": "b", "port": 8080, "network": "lan", "expect": "fail"},
                      {"from": "a", "to": "b", "port": 8080, "network": "back", "expect": "fail"}]
    lab = labfile.resolve(data)
    ends = checks.Endpoints(host_listener_port=1, internet_ip="203.0.113.1",
                            host_uplink_ip="203.0.113.2", mgmt_host_ip="100.64.1.1")
    cells = checks.build(lab, checks.Backend.LIBVIRT, ends)
    declared_cells = [c for c in cells if c.declared]
    assert [c.observed for c in declared_cells] == ["skipped", "skipped", "error"]
    assert all("on hv2" in c.detail for c in declared_cells[:2])
    found = [c.as_dict() for c in cells]
    hostcells.annotate(found, lab)
    assert {c["hosts"] for c in found if c["kind"] == "vm_to_host" and c["network"] == "lan"} \
        == {"hv1->hv2", "hv2->hv2"}


def test_the_plan_says_which_host_serves_each_forward():
    from provisioner.drivers.libvirt.render import LibvirtRenderer
    from provisioner.ops.plans import forward_lines

    lines = forward_lines(LibvirtRenderer().plan(_lab()))
    assert "port forward web: tcp 127.0.0.1:18080 -> b:8080 (vnet port proxy on hv2)" in lines
    assert "port forward ssh: tcp 127.0.0.1:2222 -> b:22 (QEMU hostfwd on hv2)" in lines


def test_host_side_probers_run_in_the_namespaces_the_record_names(state_root):  # noqa: F811
    from provisioner.host import state

    lab = _lab(sandbox.lab_defaults(SB))
    target = Target(uri="qemu:///system", sandbox=SB)
    state.save(target, lab.name, {"lab": lab.name, "hosts": {
        "hv1": {"uri": "u1", "netns": "vnet-fh-host"}, "hv2": {"uri": "u2", "netns": "vnet-fh-hv2"}}})
    assert servedon.side_namespaces(lab, target, {"host", "internet", "host.hv2"}) == {
        "host.hv2": "vnet-fh-hv2"}
    assert servedon.other_host_namespaces(lab, target) == {"hv2": "vnet-fh-hv2"}


def test_a_host_side_on_a_remote_host_is_refused_before_anything_is_created():
    """A network homed on a remote host, or a per-VM NAT of a VM there: vnet runs no host
    listener or prober on such a host, so their host cells could only be red for a reason that
    is not the network's; sandbox hosts (a namespace, a local URI) are fine."""
    homed = labfile.resolve(_with_home("hv2"))
    local = {"hv1": Target(uri="qemu:///system?socket=/x/1", netns="ns-hv1"),
             "hv2": Target(uri="qemu:///system?socket=/x/2", netns="ns-hv2")}
    hostforwards.remote_side_refusal(homed, local)
    remote = dict(local, hv2=Target(uri="qemu+ssh://root@hv2.example/system"))
    with pytest.raises(Unsupported, match=re.escape("networks.lan.home: hv2 is a remote host")):
        hostforwards.remote_side_refusal(homed, remote)
    with pytest.raises(Unsupported, match="is a remote host"):     # before any host is asked
        multihost.preflight(homed, remote, "0123456789abcdef", recorded=False)
    hostforwards.remote_side_refusal(labfile.resolve(copy.deepcopy(ISSUE_LAB)), remote)
    nat = copy.deepcopy(ISSUE_LAB)
    nat["networks"].append({"name": "own", "mode": "nat"})
    nat["vms"][1]["nics"].append({"network": "own"})
    with pytest.raises(Unsupported, match=re.escape("vms.b.nics[2]: its NIC on own is a per-VM NAT")):
        hostforwards.remote_side_refusal(labfile.resolve(nat), remote)
    bonded = copy.deepcopy(ISSUE_LAB)
    bonded["vms"][1]["nics"] = [{"network": "lan", "bond": "bond0"},
                                {"network": "lan", "bond": "bond0"}, {"network": "back"}]
    bonded["vms"][1]["bonds"] = [{"name": "bond0", "mode": "active-backup"}]
    with pytest.raises(Unsupported, match=re.escape("vms.b.bonds: b is on hv2, a remote host")):
        hostforwards.remote_side_refusal(labfile.resolve(bonded), remote)
    hostforwards.remote_side_refusal(labfile.resolve(bonded), local)


def _with_home(host):
    data = copy.deepcopy(ISSUE_LAB)
    data["networks"][0]["home"] = host
    return data


def test_an_impaired_nic_is_measured_against_the_host_its_network_lives_on():
    """lan's host address is on hv2: an impairment cell there that hv1 answered would be
    measured across the stretch, not across the impaired link alone."""
    data = copy.deepcopy(ISSUE_LAB)
    data["networks"][0]["home"] = "hv2"
    data["vms"][0]["nics"][0]["impair"] = {"delay_ms": 50}
    lab = labfile.resolve(data)
    ends = checks.Endpoints(host_listener_port=1, internet_ip="203.0.113.1",
                            host_uplink_ip="203.0.113.2", mgmt_host_ip="100.64.1.1")
    [cell] = [c for c in checks.build(lab, checks.Backend.LIBVIRT, ends) if c.kind == "impairment"]
    assert cell.probe["expect_name"] == "host.hv2"


def test_a_lab_with_hosts_refuses_impairments_before_anything_exists(tmp_path):
    """multihost.up applies no impairment: its cells would be red for want of it. The refusal
    names the field, exits 2 and creates nothing."""
    import yaml
    from click.testing import CliRunner

    from provisioner.cli import main

    data = copy.deepcopy(ISSUE_LAB)
    data["vms"][0]["nics"][0]["impair"] = {"delay_ms": 50}
    path = tmp_path / "lab.yaml"
    path.write_text(yaml.safe_dump(data))
    result = CliRunner().invoke(main, ["up", str(path), "--dry-run"])
    assert result.exit_code == 2, result.output
    assert "vms.a.nics[0].impair: vnet applies impairments only in a lab without hosts:" \
        in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lab.yaml"]
    # a real `up` asks in its preflight, before the image, the key or a remote copy exists
    # (the plan, where --dry-run stops, comes after those)
    lab = labfile.resolve(data)
    targets = {h.name: Target(uri=h.uri, netns=f"ns-{h.name}") for h in lab.hosts}
    with pytest.raises(Unsupported, match=r"vms\.a\.nics\[0\]\.impair: "):
        multihost.preflight(lab, targets, "0123456789abcdef", recorded=False)



def test_clearing_an_impairment_is_never_refused(monkeypatch, tmp_path):
    """A lab with hosts: recorded with two impaired NICs (before vnet refused that) could not
    clear either one: the refusal saw the other."""
    from provisioner.drivers.libvirt import driver as libvirt_driver, impair
    from provisioner.host import state
    from provisioner.lab.impair import build as impairment

    monkeypatch.setenv("VNET_STATE_DIR", str(tmp_path / "state"))
    data = copy.deepcopy(ISSUE_LAB)
    for vm in data["vms"]:
        vm["nics"][0]["impair"] = {"delay_ms": 50}
    target = Target(uri="qemu:///system")
    state.save(target, data["name"], {"lab": data["name"], "lab_data": data})
    applied = []

    class Applier:                                  # FAKE: records what would be applied
        def __init__(self, lab, target, conn, record):
            pass

        def apply(self, vm, nic, impair_):
            applied.append((vm, impair_))
            return {}
    monkeypatch.setattr(impair, "Applier", Applier)
    monkeypatch.setattr(libvirt_driver, "LibvirtDriver", lambda t: None)   # no libvirt here
    driver = libvirt_driver.Libvirt(target)
    with pytest.raises(Unsupported, match="only in a lab without hosts"):
        driver.set_impairment(data["name"], "a", 0, impairment({"delay_ms": 9}, "x"))
    driver.set_impairment(data["name"], "a", 0, None)
    assert applied == [("a", None)]
