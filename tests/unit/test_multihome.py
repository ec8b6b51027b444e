"""Multi-homed guests: every NIC is tested on its own network. The guest keeps one routing table
per NIC (usr/lib/vnet/nicroute), every probe is bound to its NIC's device AND address, and the
five-mode lab (tests/integration/labs/fivemodes.yaml) renders completely on both backends."""
import os
import shutil
import socket
import subprocess
import threading
from ipaddress import IPv4Address, IPv4Network

import pytest

from provisioner.guest import images
from provisioner.verify import checks
from provisioner.lab import loader as labfile
from provisioner.drivers.virtualbox.render import VBoxContext, VirtualBoxRenderer, vbox_mac
from provisioner.lab.model import Backend
from provisioner.verify.run import probe_module
from tests.conftest import ROOT
from tests.unit.test_vbox_render import _runner, created_interface, substitute

probe = probe_module()
NICROUTE = images.GUEST / "rootfs" / "usr" / "lib" / "vnet" / "nicroute"
FIVE = ROOT / "tests" / "integration" / "labs" / "fivemodes.yaml"
BUSYBOX = shutil.which("busybox")
IPROUTE2 = shutil.which("ip")          # only to make the veth pairs; the guest's busybox does the rest


# --- the guest's per-NIC policy routing -----------------------------------------------------

def _in_new_netns(tmp_path, script: str) -> str:
    """Run a busybox shell script in a fresh, anonymous network and mount namespace (gone when
    it ends; its own /sys), with the guest's applets (ip, ipcalc, cat) on PATH, as in the tiny
    image."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for applet in ("ip", "ipcalc", "cat", "sh", "mount"):
        (bindir / applet).symlink_to(BUSYBOX)
    return subprocess.run([shutil.which("unshare"), "--net", "--mount", BUSYBOX, "sh", "-ec",
                           "mount -t sysfs sysfs /sys\n" + script],
                          env={"PATH": str(bindir)}, capture_output=True, text=True,
                          check=True, timeout=30).stdout


@pytest.mark.skipif(os.geteuid() != 0 or None in (BUSYBOX, IPROUTE2, shutil.which("unshare")),
                    reason="needs root, unshare (util-linux), ip (iproute2) and busybox "
                           "(busybox-static) to build a private network namespace")
def test_nicroute_sends_what_a_nic_address_sends_by_that_nics_gateway(tmp_path):
    out = _in_new_netns(tmp_path, f"""
        {IPROUTE2} link add a0 type veth peer name a1; {IPROUTE2} link add b0 type veth peer name b1
        for d in lo a0 a1 b0 b1; do ip link set $d up; done
        ip addr add 10.0.2.15/24 dev a0; ip addr add 192.168.150.10/24 dev b0
        ip route add default via 192.168.150.1 dev b0      # the guest's default: the other NIC
        sh {NICROUTE} a0 10.0.2.15/24 10.0.2.2
        sh {NICROUTE} b0 192.168.150.10/24 192.168.150.1
        echo "== bound"; ip route get 203.0.113.1 from 10.0.2.15 oif a0
        echo "== unbound"; ip route get 203.0.113.1
        echo "== onlink"; ip route get 10.0.2.7 from 10.0.2.15
        sh {NICROUTE} a0                                   # DHCP deconfig: table and rule gone
        echo "== rules"; ip rule show
    """)
    bound = out.split("== bound")[1].split("==")[0]
    assert "via 10.0.2.2 dev a0" in bound, out
    assert "via 192.168.150.1 dev b0" in out.split("== unbound")[1].split("==")[0], out
    onlink = out.split("== onlink")[1].split("==")[0]
    assert "dev a0" in onlink and "via" not in onlink, out       # its own subnet: no gateway
    rules = out.split("== rules")[1]
    assert "from 10.0.2.15" not in rules and "from 192.168.150.10" in rules, out


def test_dhcp_and_static_nics_both_get_their_own_table():
    init = (NICROUTE.parent / "init").read_text()
    hook = (NICROUTE.parent / "udhcpc").read_text()
    assert '/usr/lib/vnet/nicroute "$ifname" "$addr" "$gw"' in init
    assert '/usr/lib/vnet/nicroute "$interface" "$ip/$mask" "$table_gw"' in hook
    assert '/usr/lib/vnet/nicroute "$interface"\n' in hook          # deconfig


# --- probes leave from the NIC's own address ------------------------------------------------

def test_a_bound_probe_leaves_from_its_nics_address(monkeypatch):
    """127.0.0.2 stands in for the NIC's address: the listener sees it as the peer, so the
    probe was bound to it (an unbound loopback probe comes from 127.0.0.1)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    threading.Thread(target=_answer, args=(server, "alpha"), daemon=True).start()
    monkeypatch.setattr(probe, "interface_of", lambda mac: "lo")
    monkeypatch.setattr(probe, "address_of", lambda ifname: "127.0.0.2")
    r = probe.probe({"target": "127.0.0.1", "port": port, "expect_name": "alpha",
                     "bind_mac": "02:00:00:00:00:01"})
    assert r["observed"] == "pass", r
    assert "127.0.0.2" in r["detail"], r


def _answer(server, name):
    conn, peer = server.accept()
    with conn:
        words = conn.recv(256).decode().split()
        conn.sendall(f"VNET {words[1]} {name} {peer[0]}\n".encode())


def test_a_nic_without_an_address_cannot_be_probed(monkeypatch):
    monkeypatch.setattr(probe, "interface_of", lambda mac: "lo")
    monkeypatch.setattr(probe, "address_of", lambda ifname: None)
    r = probe.probe({"target": "127.0.0.1", "port": 1, "bind_mac": "02:00:00:00:00:01"})
    assert r["observed"] == "error" and "no IPv4 address" in r["detail"]


def test_address_of_reads_the_loopback_address():
    assert probe.address_of("lo") == "127.0.0.1"
    assert probe.address_of("no-such-nic0") is None


# --- the five-mode lab ------------------------------------------------------------------------

def five_lab():
    """As in a sandbox: the bridged network sits on its LAN (198.51.100.0/24)."""
    return labfile.load(FIVE, labfile.Defaults(
        bridge="br0", bridged_subnet=IPv4Network("198.51.100.0/24"),
        bridged_host_ip=IPv4Address("198.51.100.2"), bridged_router=IPv4Address("198.51.100.1")))


def test_five_mode_lab_has_one_nic_per_mode_on_each_vm():
    lab = five_lab()
    assert sorted(n.mode for n in lab.networks) == \
        ["bridged", "hostonly", "internal", "nat", "natnetwork"]
    for vm in lab.vms:
        assert sorted(lab.network(n.network).mode for n in vm.nics) == \
            sorted(n.mode for n in lab.networks)


@pytest.mark.parametrize("backend", list(Backend))
def test_every_guest_probe_of_the_five_mode_lab_is_bound_to_its_own_nic(backend):
    lab = five_lab()
    ends = checks.Endpoints(host_listener_port=20000, internet_ip="203.0.113.1",
                            host_uplink_ip="198.51.100.2", mgmt_host_ip="100.64.9.1")
    cells = checks.build(lab, backend, ends)
    direct = [c for c in cells if c.kind not in ("port_forward", "nic_model")]
    assert len(direct) + sum(c.kind == "nic_model" for c in cells) == 60   # 5 modes x 12
    for c in cells:
        if c.runner.startswith("guest:") and c.kind != "nic_model":
            vm = lab.vm(c.runner.split(":", 1)[1])
            nic = next(n for n in vm.nics if n.mac == c.probe["bind_mac"])
            assert nic.network == c.network, c
    # Internet->VM negatives on every NIC that has an address (bridged is a "yes")
    inbound = {(c.network, c.expected) for c in cells if c.kind == "internet_to_vm"}
    assert inbound == {("lan", "pass"), ("nat", "fail"), ("nn", "fail"), ("ho", "fail"),
                       ("int", "fail")}


@pytest.fixture
def fake_fast(tmp_path, monkeypatch):
    return _runner(tmp_path, monkeypatch, in_process=True)


def test_virtualbox_plan_of_the_five_mode_lab_is_complete_and_runs_on_the_stand_in(fake_fast):
    lab = five_lab()
    plan = VirtualBoxRenderer(VBoxContext()).plan(lab)
    attach = {"bridged": "bridged", "nat": "nat", "natnetwork": "natnetwork",
              "hostonly": "hostonly", "internal": "intnet"}
    for vm in lab.vms:
        name = f"vnet-{lab.name}-{vm.name}"
        nic_cmds = [c for c in plan.commands if c[1:3] == ("modifyvm", name)
                    and any(a.startswith("--nic") and a[5:].isdigit() for a in c[3:4])]
        assert len(nic_cmds) == len(vm.nics) + 1                    # + the management NIC
        for k, nic in enumerate(vm.nics, start=1):
            cmd = nic_cmds[k - 1]
            assert cmd[3:5] == (f"--nic{k}", attach[lab.network(nic.network).mode]), cmd
            assert vbox_mac(nic.mac) in cmd and f"--cableconnected{k}" in cmd
        assert nic_cmds[-1][3:6] == (f"--nic{len(vm.nics) + 1}", "hostonly",
                                     f"--hostonlyadapter{len(vm.nics) + 1}")
        # the nat forwards of this VM ride on its nat NIC; the boot line configures every NIC
        nat_k = 1 + next(i for i, n in enumerate(vm.nics) if lab.network(n.network).mode == "nat")
        natpf = [a for c in nic_cmds for i, a in enumerate(c) if c[i - 1] == f"--natpf{nat_k}"]
        assert sorted(p.split(",")[0] for p in natpf) == sorted(
            f.name for f in lab.network("nat").port_forwards if f.vm == vm.name)
        cmdline = plan.extra["boot"][vm.name]["cmdline"] if isinstance(
            plan.extra["boot"][vm.name], dict) else str(plan.extra["boot"][vm.name])
        for nic in vm.nics:
            if lab.network(nic.network).mode != "internal" or nic.ip is not None:
                assert f"vnet.if={nic.mac}," in cmdline, (nic, cmdline)
    rules = [c[-1] for c in plan.commands if "--port-forward-4" in c]
    assert sorted(r.split(":")[0] for r in rules) == \
        sorted(f.name for f in lab.network("nn").port_forwards)
    # valid: every command runs on the stand-in, and the teardown leaves nothing
    bound: dict[str, str] = {}
    for i, argv in enumerate(plan.commands):
        result = fake_fast(substitute(argv, bound))
        assert result.returncode == 0, f"{argv}: {result.stderr}"
        if i in plan.extra["captures"]:
            bound[plan.extra["captures"][i]] = created_interface(result.stdout)
    state = fake_fast.state()
    assert all(v["state"] == "running" for v in state["vms"].values())
    assert {len(v["nics"]) for v in state["vms"].values()} == {6}
    for argv in plan.extra["teardown"]:
        assert fake_fast(substitute(argv, bound)).returncode == 0, argv
    assert all(not v for v in fake_fast.state().values()), fake_fast.state()
