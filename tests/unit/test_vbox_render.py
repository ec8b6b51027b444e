"""The VirtualBox renderer: exact VBoxManage argv per mode, the 6.1/7.x and macOS differences,
the refusals, and every rendered command run through the VBoxManage stand-in
(tests/fakes/VBoxManage), which refuses what VirtualBox would refuse, then torn down to nothing."""
import contextlib
import copy
import importlib.util
import io
import json
import os
import subprocess
import sys

import pytest

from provisioner.lab import loader as labfile
from provisioner.drivers.libvirt.render import mgmt_mac
from provisioner.drivers.virtualbox.render import (
    VBoxContext,
    VirtualBoxRenderer,
    vm_uuid,
    created_interface,
    substitute,
    vbox_mac)
from provisioner.errors import Unsupported
from provisioner.lab.model import Backend
from tests.conftest import ROOT

FAKE = ROOT / "tests" / "fakes" / "VBoxManage"
V61 = VBoxContext(version=(6, 1, 50))
DARWIN = VBoxContext(host_os="darwin")
FAKE_VERSION = {(7, 0, 0): "7.0.20r163906", (6, 1, 50): "6.1.50r161033"}
MODES = ("nat", "natnetwork", "hostonly", "internal", "bridged")
NICTYPE = {"virtio": "virtio", "e1000": "82540EM"}
DISK = "/var/cache/vnet/images/tiny/root.vdi"


MGMT_TOKEN = "{hostonlyif:_mgmt}"
MGMT_NET = [("VBoxManage", "hostonlyif", "create"),
            ("VBoxManage", "hostonlyif", "ipconfig", MGMT_TOKEN, "--ip", "192.168.63.1",
             "--netmask", "255.255.255.0")]
MGMT_REMOVE = ("VBoxManage", "hostonlyif", "remove", MGMT_TOKEN)


def lab_data(mode: str, model: str = "virtio") -> dict:
    net: dict = {"name": "n1", "mode": mode}
    if mode == "nat":
        net["port_forwards"] = [
            {"name": "ssh", "proto": "tcp", "host_port": 2222, "vm": "a", "guest_port": 22},
            {"name": "dns", "proto": "udp", "host_port": 5353, "vm": "b", "guest_port": 53}]
    elif mode == "natnetwork":
        net.update(subnet="192.168.150.0/24", port_forwards=[
            {"name": "web", "proto": "tcp", "host_port": 8080, "vm": "a", "guest_port": 80}])
    elif mode == "hostonly":
        net["subnet"] = "192.168.56.0/24"
    elif mode == "bridged":
        net.update(bridge="br0", subnet="198.51.100.0/24")
    return {"name": "t", "networks": [net], "vms": [
        {"name": "a", "nics": [{"network": "n1", "model": model, "mac": "52:54:00:aa:bb:01"}]},
        {"name": "b", "memory": 256, "cpus": 2,
         "nics": [{"network": "n1", "model": model, "mac": "52:54:00:aa:bb:02"}]}]}


def plan(data: dict, context: VBoxContext = VBoxContext()):
    return VirtualBoxRenderer(context).plan(labfile.resolve(copy.deepcopy(data)))


def vm_cmds(vm: str, nic: tuple, memory: int = 128, cpus: int = 1) -> list[tuple]:
    name = f"vnet-t-{vm}"
    return [
        ("VBoxManage", "createvm", "--name", name, "--ostype", "Linux26_64", "--register",
         "--uuid", vm_uuid("OWNER-ID-AT-UP", "t", vm)),
        ("VBoxManage", "setextradata", name, "vnet/lab", "t"),
        ("VBoxManage", "setextradata", name, "vnet/owner", "OWNER-ID-AT-UP"),
        ("VBoxManage", "modifyvm", name, "--memory", str(memory), "--cpus", str(cpus),
         "--boot1", "dvd", "--boot2", "disk", "--boot3", "none", "--boot4", "none",
         "--uart1", "0x3F8", "4", "--uartmode1", "file", f"/var/lib/vnet/labs/LAB/{vm}.serial.log"),
        ("VBoxManage", "modifyvm", name, *nic),
        ("VBoxManage", "modifyvm", name, "--nic2", "hostonly", "--hostonlyadapter2", MGMT_TOKEN,
         "--nictype2", "virtio", "--macaddress2", vbox_mac(mgmt_mac("t", vm)),
         "--cableconnected2", "on"),
        ("VBoxManage", "storagectl", name, "--name", "SATA", "--add", "sata",
         "--controller", "IntelAhci", "--portcount", "2"),
        ("VBoxManage", "storageattach", name, "--storagectl", "SATA", "--port", "0",
         "--device", "0", "--type", "hdd", "--medium", DISK, "--mtype", "multiattach"),
        ("VBoxManage", "storageattach", name, "--storagectl", "SATA", "--port", "1",
         "--device", "0", "--type", "dvddrive",
         "--medium", f"/var/lib/vnet/labs/LAB/{vm}.boot.iso"),
    ]


def nic1(attach: tuple, model: str, mac: str, *extra: str) -> tuple:
    return ("--nic1", *attach, "--nictype1", NICTYPE[model], "--macaddress1", mac,
            "--cableconnected1", "on", *extra)


START = [("VBoxManage", "startvm", "vnet-t-a", "--type", "headless"),
         ("VBoxManage", "startvm", "vnet-t-b", "--type", "headless")]
STOP = [("VBoxManage", "controlvm", "vnet-t-a", "poweroff"),
        ("VBoxManage", "controlvm", "vnet-t-b", "poweroff"),
        ("VBoxManage", "unregistervm", "vnet-t-a", "--delete"),
        ("VBoxManage", "unregistervm", "vnet-t-b", "--delete")]


# --- exact argv, one test per mode ----------------------------------------------------------

@pytest.mark.parametrize("model", ["virtio", "e1000"])
def test_nat_argv(model):
    p = plan(lab_data("nat", model))
    assert p.backend is Backend.VIRTUALBOX
    assert list(p.commands) == [
        *MGMT_NET,
        *vm_cmds("a", nic1(("nat",), model, "525400AABB01", "--natlocalhostreachable1", "on",
                           "--natpf1", "ssh,tcp,127.0.0.1,2222,,22")),
        *vm_cmds("b", nic1(("nat",), model, "525400AABB02", "--natlocalhostreachable1", "on",
                           "--natpf1", "dns,udp,127.0.0.1,5353,,53"), memory=256, cpus=2),
        *START]
    assert p.extra["teardown"] == [*STOP, MGMT_REMOVE]
    assert p.extra["tag"] == {"key": "vnet/lab", "value": "t",
                              "owner_key": "vnet/owner", "owner": "OWNER-ID-AT-UP"}
    assert p.extra["captures"] == {0: MGMT_TOKEN}
    assert p.extra["mgmt"] == {"a": "192.168.63.10", "b": "192.168.63.11"}


@pytest.mark.parametrize("model", ["virtio", "e1000"])
def test_natnetwork_argv(model):
    p = plan(lab_data("natnetwork", model))
    net = "vnet-t-n1"
    assert list(p.commands) == [
        ("VBoxManage", "natnetwork", "add", "--netname", net, "--network", "192.168.150.0/24",
         "--enable", "--dhcp", "on"),
        ("VBoxManage", "natnetwork", "modify", "--netname", net, "--port-forward-4",
         "web:tcp:[127.0.0.1]:8080:[192.168.150.10]:80"),
        ("VBoxManage", "natnetwork", "start", "--netname", net),
        *MGMT_NET,
        *vm_cmds("a", nic1(("natnetwork", "--nat-network1", net), model, "525400AABB01")),
        *vm_cmds("b", nic1(("natnetwork", "--nat-network1", net), model, "525400AABB02"),
                 memory=256, cpus=2),
        *START]
    assert p.extra["teardown"] == [*STOP, ("VBoxManage", "natnetwork", "stop", "--netname", net),
                                   ("VBoxManage", "natnetwork", "remove", "--netname", net),
                                   MGMT_REMOVE]


@pytest.mark.parametrize("model", ["virtio", "e1000"])
def test_hostonly_argv(model):
    p = plan(lab_data("hostonly", model))
    token = "{hostonlyif:n1}"
    assert list(p.commands) == [
        ("VBoxManage", "hostonlyif", "create"),
        ("VBoxManage", "hostonlyif", "ipconfig", token, "--ip", "192.168.56.1",
         "--netmask", "255.255.255.0"),
        *MGMT_NET,
        *vm_cmds("a", nic1(("hostonly", "--hostonlyadapter1", token), model, "525400AABB01")),
        *vm_cmds("b", nic1(("hostonly", "--hostonlyadapter1", token), model, "525400AABB02"),
                 memory=256, cpus=2),
        ("VBoxManage", "dhcpserver", "add", f"--interface={token}", "--server-ip=192.168.56.2",
         "--netmask=255.255.255.0", "--lower-ip=192.168.56.100", "--upper-ip=192.168.56.254",
         "--enable", "--vm=vnet-t-a", "--nic=1", "--fixed-address=192.168.56.10",
         "--vm=vnet-t-b", "--nic=1", "--fixed-address=192.168.56.11"),
        *START]
    assert p.extra["captures"] == {0: token, 2: MGMT_TOKEN}
    assert p.extra["hostonlyifs"] == {"n1": {"token": token, "ip": "192.168.56.1",
                                             "netmask": "255.255.255.0"},
                                      "_mgmt": {"token": MGMT_TOKEN, "ip": "192.168.63.1",
                                                "netmask": "255.255.255.0"}}
    assert p.extra["teardown"] == [*STOP, ("VBoxManage", "dhcpserver", "remove",
                                           f"--interface={token}"),
                                   ("VBoxManage", "hostonlyif", "remove", token), MGMT_REMOVE]


@pytest.mark.parametrize("model", ["virtio", "e1000"])
def test_internal_argv(model):
    p = plan(lab_data("internal", model))
    attach = ("intnet", "--intnet1", "vnet-t-n1")
    assert list(p.commands) == [
        *MGMT_NET,
        *vm_cmds("a", nic1(attach, model, "525400AABB01")),
        *vm_cmds("b", nic1(attach, model, "525400AABB02"), memory=256, cpus=2),
        *START]
    assert p.extra["teardown"] == [*STOP, MGMT_REMOVE]


@pytest.mark.parametrize("model", ["virtio", "e1000"])
def test_bridged_argv(model):
    p = plan(lab_data("bridged", model))
    attach = ("bridged", "--bridgeadapter1", "br0")
    assert list(p.commands) == [
        *MGMT_NET,
        *vm_cmds("a", nic1(attach, model, "525400AABB01")),
        *vm_cmds("b", nic1(attach, model, "525400AABB02"), memory=256, cpus=2),
        *START]


def test_documents_are_one_shell_line_per_command():
    p = plan(lab_data("hostonly"))
    assert len(p.documents) == len(p.commands)
    assert all(d.kind == "command" for d in p.documents)
    assert p.documents[0].name == "network n1: hostonlyif create"
    assert p.documents[1].text == ("VBoxManage hostonlyif ipconfig '{hostonlyif:n1}' "
                                   "--ip 192.168.56.1 --netmask 255.255.255.0")


def test_context_paths_reach_the_argv():
    ctx = VBoxContext(disk="/d/{vm}.vdi", seed_iso="/s/{vm}-seed.iso", basefolder="/vms",
                      serial_dir="/logs")
    cmds = plan(lab_data("internal"), ctx).commands
    assert ("VBoxManage", "createvm", "--name", "vnet-t-a", "--ostype", "Linux26_64",
            "--register", "--uuid", vm_uuid("OWNER-ID-AT-UP", "t", "a"), "--basefolder",
            "/vms") in cmds
    assert ("VBoxManage", "storageattach", "vnet-t-a", "--storagectl", "SATA", "--port", "0",
            "--device", "0", "--type", "hdd", "--medium", "/d/a.vdi") in cmds   # own file: no mtype
    assert ("VBoxManage", "storageattach", "vnet-t-b", "--storagectl", "SATA", "--port", "1",
            "--device", "0", "--type", "dvddrive", "--medium", "/s/b-seed.iso") in cmds
    assert any("/logs/a.serial.log" in c for c in cmds)
    assert not any(a.endswith(".boot.iso") for c in cmds for a in c)   # a seeded disk boots
    hardware = next(c for c in cmds if "--boot1" in c)
    assert hardware[hardware.index("--boot1"):][:4] == ("--boot1", "disk", "--boot2", "dvd")
    assert plan(lab_data("internal"), ctx).extra["boot"] == {}


def test_tiny_vms_boot_their_own_iso_from_the_state_dir():
    # natnetwork guests are static on VirtualBox: its NAT-network DHCP cannot pin addresses
    ctx = VBoxContext(serial_dir="/state/lab", ssh_pubkey="ssh-ed25519 AAAAKEY vnet-t")
    p = plan(lab_data("natnetwork"), ctx)
    assert p.extra["boot"] == {
        "a": {"iso": "/state/lab/a.boot.iso",
              "cmdline": "console=ttyS0 quiet panic=-1 vnet.host=a vnet.key=ssh-ed25519:AAAAKEY "
                         "vnet.if=52:54:00:aa:bb:01,static,192.168.150.10/24,192.168.150.1 "
                         f"vnet.if={mgmt_mac('t', 'a')},static,192.168.63.10/24"},
        "b": {"iso": "/state/lab/b.boot.iso",
              "cmdline": "console=ttyS0 quiet panic=-1 vnet.host=b vnet.key=ssh-ed25519:AAAAKEY "
                         "vnet.if=52:54:00:aa:bb:02,static,192.168.150.11/24,192.168.150.1 "
                         f"vnet.if={mgmt_mac('t', 'b')},static,192.168.63.11/24"}}
    names = [d.name for d in p.documents]
    assert names.index("vm a: disk") + 1 == names.index("vm a: boot iso")


# --- versions and hosts ---------------------------------------------------------------------

def test_nat_localhost_reachable_only_on_7():
    seven = plan(lab_data("nat")).commands
    six = plan(lab_data("nat"), V61).commands
    assert sum("--natlocalhostreachable1" in c for c in seven) == 2
    assert not any("--natlocalhostreachable1" in c for c in six)
    strip = [tuple(a for a in c if a not in ("--natlocalhostreachable1", "on")) for c in seven]
    assert strip == [tuple(a for a in c if a != "on") for c in six]


def test_darwin_7_uses_hostonlynet():
    p = plan(lab_data("hostonly", "e1000"), DARWIN)
    net = "vnet-t-n1"
    assert p.commands[0] == ("VBoxManage", "hostonlynet", "add", f"--name={net}",
                             "--netmask=255.255.255.0", "--lower-ip=192.168.56.1",
                             "--upper-ip=192.168.56.254", "--enable")
    assert p.commands[1] == ("VBoxManage", "hostonlynet", "add", "--name=vnet-t-_mgmt",
                             "--netmask=255.255.255.0", "--lower-ip=192.168.63.1",
                             "--upper-ip=192.168.63.254", "--enable")
    assert ("VBoxManage", "modifyvm", "vnet-t-a", "--nic2", "hostonlynet", "--host-only-net2",
            "vnet-t-_mgmt", "--nictype2", "virtio", "--macaddress2",
            vbox_mac(mgmt_mac("t", "a")), "--cableconnected2", "on") in p.commands
    assert ("VBoxManage", "modifyvm", "vnet-t-a", "--nic1", "hostonlynet", "--host-only-net1", net,
            "--nictype1", "82540EM", "--macaddress1", "525400AABB01",
            "--cableconnected1", "on") in p.commands
    assert not any("hostonlyif" in c or "dhcpserver" in c for c in p.commands)
    assert p.extra["captures"] == {} and p.extra["hostonlyifs"] == {}
    assert p.extra["teardown"][-2:] == [("VBoxManage", "hostonlynet", "remove", f"--name={net}"),
                                        ("VBoxManage", "hostonlynet", "remove",
                                         "--name=vnet-t-_mgmt")]


def test_darwin_61_still_has_hostonly_adapters():
    cmds = plan(lab_data("hostonly"), VBoxContext(version=(6, 1, 50), host_os="darwin")).commands
    assert cmds[0] == ("VBoxManage", "hostonlyif", "create")


def test_mac_is_twelve_hex_digits():
    assert vbox_mac("52:54:00:aa:bb:0c") == "525400AABB0C"
    data = lab_data("internal")
    for vm in data["vms"]:
        del vm["nics"][0]["mac"]                      # derived MACs take the same path
    macs = [c[c.index("--macaddress1") + 1] for c in plan(data).commands if "--macaddress1" in c]
    assert len(macs) == 2
    for mac in macs:
        assert len(mac) == 12 and int(mac, 16) >= 0 and int(mac[1], 16) % 2 == 0


def test_port_forward_goes_to_the_nic_on_that_network():
    data = lab_data("nat")
    data["networks"].append({"name": "back", "mode": "internal"})
    data["vms"][0]["nics"].insert(0, {"network": "back"})
    cmds = plan(data).commands
    nic2 = next(c for c in cmds if "vnet-t-a" in c and "--nic2" in c)
    assert nic2[-2:] == ("--natpf2", "ssh,tcp,127.0.0.1,2222,,22")
    assert not any("--natpf1" in c for c in cmds if "vnet-t-a" in c)


# --- refusals -------------------------------------------------------------------------------

def test_sriov_is_refused():
    data = lab_data("bridged")
    data["vms"][1]["nics"][0].update(model="sriov", pf="enp4s0f0")
    with pytest.raises(Unsupported, match=r"^vms\.b\.nics\[0\]\.model: .*sriov.*"
                                          r"VirtualBox supports NIC models: virtio, e1000$"):
        plan(data)


def test_vdpa_is_refused():
    data = lab_data("bridged")
    data["vms"][0]["nics"][0].update(model="vdpa", device="/dev/vhost-vdpa-0")
    with pytest.raises(Unsupported, match=r"^vms\.a\.nics\[0\]\.model: .*vdpa.*virtio, e1000$"):
        plan(data)


def test_more_than_seven_lab_nics_is_refused_the_eighth_slot_is_management():
    data = lab_data("internal")
    data["vms"][0]["nics"] = [{"network": "n1"} for _ in range(8)]
    with pytest.raises(Unsupported, match=r"^vms\.a\.nics: 8 NICs, .*at most 8 per VM .*"
                                          r"last slot is vnet's management NIC: at most 7 lab NICs$"):
        plan(data)
    data["vms"][0]["nics"] = data["vms"][0]["nics"][:7]
    cmds = plan(data).commands
    last = next(c for c in cmds if "--nic8" in c)
    assert last[:7] == ("VBoxManage", "modifyvm", "vnet-t-a", "--nic8", "hostonly",
                        "--hostonlyadapter8", "{hostonlyif:_mgmt}")


def test_the_management_nic_is_last_and_its_address_is_on_the_cmdline():
    p = plan(lab_data("internal"))
    for i, vm in enumerate(("a", "b")):
        nics = [c for c in p.commands if c[1:3] == ("modifyvm", f"vnet-t-{vm}") and
                any(a.startswith("--nic") and a[5:].isdigit() for a in c)]
        assert nics[-1] == ("VBoxManage", "modifyvm", f"vnet-t-{vm}", "--nic2", "hostonly",
                            "--hostonlyadapter2", "{hostonlyif:_mgmt}", "--nictype2", "virtio",
                            "--macaddress2", vbox_mac(mgmt_mac("t", vm)),
                            "--cableconnected2", "on")
        assert p.extra["boot"][vm]["cmdline"].split()[-1] == \
            f"vnet.if={mgmt_mac('t', vm)},static,192.168.63.{10 + i}/24"
    assert p.extra["mgmt"] == {"a": "192.168.63.10", "b": "192.168.63.11"}
    assert p.extra["mgmt_host_ip"] == "192.168.63.1"
    assert not any(c[1] == "dhcpserver" for c in p.commands)        # static: no DHCP on it
    assert p.extra["teardown"][-1] == ("VBoxManage", "hostonlyif", "remove",
                                       "{hostonlyif:_mgmt}")


def test_a_hostonly_lab_network_on_the_management_subnet_is_refused():
    data = lab_data("hostonly")
    data["networks"][0]["subnet"] = "192.168.63.0/24"
    with pytest.raises(Unsupported) as err:
        plan(data)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("networks.n1.subnet: 192.168.63.0/24 overlaps vnet's VirtualBox "
                              "management network 192.168.63.0/24 (VBoxContext mgmt_subnet)")
    ctx = VBoxContext(mgmt_subnet="192.168.62.0/24")      # another mgmt_subnet: accepted
    assert plan(data, ctx).extra["mgmt"]["a"] == "192.168.62.10"


def test_hostonly_outside_allowed_ranges_is_refused():
    data = lab_data("hostonly")
    data["networks"][0]["subnet"] = "192.168.150.0/24"
    with pytest.raises(Unsupported) as err:
        plan(data)
    message = str(err.value)
    assert message.startswith("networks.n1.subnet: 192.168.150.0/24 is outside")
    assert "192.168.56.0/21" in message and "/etc/vbox/networks.conf" in message
    assert "\n" not in message
    plan(data, VBoxContext(hostonly_ranges=("192.168.0.0/16",)))        # allowed by the context
    plan(data, VBoxContext(version=(6, 1, 26)))                          # before the restriction
    with pytest.raises(Unsupported):
        plan(data, VBoxContext(version=(6, 1, 28)))


def test_placeholders_must_be_bound():
    argv = ("VBoxManage", "dhcpserver", "remove", "--interface={hostonlyif:n1}")
    assert substitute(argv, {"{hostonlyif:n1}": "vboxnet3"})[-1] == "--interface=vboxnet3"
    with pytest.raises(KeyError, match="hostonlyif:n1"):
        substitute(argv, {})
    assert created_interface("0%...100%\nInterface 'vboxnet3' was successfully created\n") == \
        "vboxnet3"
    with pytest.raises(ValueError):
        created_interface("VBoxManage: error: Failed to create the host-only adapter")


# --- everything through the stand-in --------------------------------------------------------

def _runner(tmp_path, monkeypatch, in_process: bool):
    """Run argv on the stand-in: as a process through tests/fakes/VBoxManage, or (much faster,
    for the big matrix) by calling the same script's main() here with the same environment."""
    state = tmp_path / "vbox-state.json"
    base = {k: v for k, v in os.environ.items() if not k.startswith("VBOX_FAKE_")}
    module = _fake_module() if in_process else None

    def run(argv, version="7.0.20r163906", host_os="linux", **env):
        assert argv[0] == "VBoxManage"
        full = {**base, "VBOX_FAKE_STATE": str(state), "VBOX_FAKE_VERSION": version,
                "VBOX_FAKE_HOST_OS": host_os, "VBOX_FAKE_PYTHON": sys.executable, **env}
        if not in_process:
            return subprocess.run([str(FAKE), *argv[1:]], env=full, capture_output=True,
                                  text=True, timeout=30)
        for key in [k for k in os.environ if k.startswith("VBOX_FAKE_")]:
            monkeypatch.delenv(key)
        for key, value in full.items():
            if key.startswith("VBOX_FAKE_"):
                monkeypatch.setenv(key, value)
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = module.main(list(argv[1:]))
        return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())

    run.state = lambda: json.loads(state.read_text()) if state.exists() else {}
    return run


def _fake_module():
    spec = importlib.util.spec_from_file_location("vnet_fake_vboxmanage",
                                                  FAKE.with_name("vboxmanage.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def fake(tmp_path, monkeypatch):
    return _runner(tmp_path, monkeypatch, in_process=False)


@pytest.fixture
def fake_fast(tmp_path, monkeypatch):
    return _runner(tmp_path, monkeypatch, in_process=True)


def _apply_and_destroy(fake, p, **where):
    bound: dict[str, str] = {}
    for i, argv in enumerate(p.commands):
        result = fake(substitute(argv, bound), **where)
        assert result.returncode == 0, f"{argv}: {result.stderr}"
        if i in p.extra["captures"]:
            bound[p.extra["captures"][i]] = created_interface(result.stdout)
    state = fake.state()
    assert {vm["name"] for vm in state["vms"].values()} == {"vnet-t-a", "vnet-t-b"}
    assert all(vm["state"] == "running" for vm in state["vms"].values())
    for argv in p.extra["teardown"]:
        result = fake(substitute(argv, bound), **where)
        assert result.returncode == 0, f"{argv}: {result.stderr}"
    assert fake.state() and all(not v for v in fake.state().values()), fake.state()
    return state


@pytest.mark.parametrize("model", ["virtio", "e1000"])
@pytest.mark.parametrize("mode", MODES)
def test_every_command_runs_on_the_stand_in(fake_fast, mode, model):
    p = plan(lab_data(mode, model))
    state = _apply_and_destroy(fake_fast, p)
    vm = next(v for v in state["vms"].values() if v["name"] == "vnet-t-a")
    assert vm["extradata"] == {"vnet/lab": "t", "vnet/owner": "OWNER-ID-AT-UP"}
    assert vm["nics"]["1"]["type"] == NICTYPE[model]
    assert vm["nics"]["1"]["mac"] == "525400AABB01"
    assert vm["boot"] == ["dvd", "disk", "none", "none"]
    assert vm["storagectls"]["SATA"]["attachments"] == {
        "0-0": {"type": "hdd", "medium": DISK, "mtype": "multiattach"},
        "1-0": {"type": "dvddrive", "medium": "/var/lib/vnet/labs/LAB/a.boot.iso", "mtype": None}}


@pytest.mark.parametrize("mode", MODES)
def test_every_command_runs_on_a_61_stand_in(fake_fast, mode):
    _apply_and_destroy(fake_fast, plan(lab_data(mode), V61), version=FAKE_VERSION[(6, 1, 50)])


@pytest.mark.parametrize("model", ["virtio", "e1000"])
def test_hostonlynet_runs_on_a_darwin_stand_in(fake_fast, model):
    state = _apply_and_destroy(fake_fast, plan(lab_data("hostonly", model), DARWIN), host_os="darwin")
    assert sorted(state["hostonlynets"]) == ["vnet-t-_mgmt", "vnet-t-n1"]


def test_a_whole_lab_runs_through_the_executable_stand_in(fake):
    """The same run as above, but as processes through tests/fakes/VBoxManage, the way the
    executor will call it: placeholders bound from real stdout, exit codes from the process."""
    p = plan(lab_data("hostonly", "e1000"))
    bound: dict[str, str] = {}
    for i, argv in enumerate(p.commands):
        result = fake(substitute(argv, bound))
        assert result.returncode == 0, f"{argv}: {result.stderr}"
        if i in p.extra["captures"]:
            bound[p.extra["captures"][i]] = created_interface(result.stdout)
    assert bound == {"{hostonlyif:n1}": "vboxnet0", "{hostonlyif:_mgmt}": "vboxnet1"}
    info = fake(("VBoxManage", "showvminfo", "vnet-t-a", "--machinereadable")).stdout
    assert 'nictype1="82540EM"' in info and 'hostonlyadapter1="vboxnet0"' in info
    assert 'VMState="running"' in info
    assert fake(("VBoxManage", "getextradata", "vnet-t-b", "vnet/lab")).stdout == "Value: t\n"
    assert '"vnet-t-a"' in fake(("VBoxManage", "list", "runningvms")).stdout
    assert "IPAddress:       192.168.56.1" in fake(("VBoxManage", "list", "hostonlyifs")).stdout
    prop = fake(("VBoxManage", "guestproperty", "get", "vnet-t-a",
                 "/VirtualBox/GuestInfo/Net/0/V4/IP"))
    assert prop.stdout == "No value set!\n"
    for argv in p.extra["teardown"]:
        result = fake(substitute(argv, bound))
        assert result.returncode == 0, f"{argv}: {result.stderr}"
    assert all(not v for v in fake.state().values())
    # teardown twice: every step now fails with a "not found" the executor can recognise
    again = [fake(substitute(argv, bound)) for argv in p.extra["teardown"]]
    assert all(r.returncode != 0 and "error:" in r.stderr for r in again)


# --- the stand-in itself can fail -----------------------------------------------------------

def _refused(result, *words):
    assert result.returncode in (1, 2), result
    assert "VBoxManage: error:" in result.stderr
    for word in words:
        assert word in result.stderr, result.stderr


def test_stand_in_says_what_it_is(fake):
    assert "stand-in" in fake(("VBoxManage", "--fake-info")).stdout.lower()
    assert fake(("VBoxManage", "--version"), version="6.1.50r161033").stdout == "6.1.50r161033\n"


def test_stand_in_rejects_bad_flags(fake):
    assert fake(("VBoxManage", "createvm", "--name", "x", "--register")).returncode == 0
    _refused(fake(("VBoxManage", "modifyvm", "x", "--bogus1", "on")), "--bogus1")
    _refused(fake(("VBoxManage", "modifyvm", "x", "--natlocalhostreachable1", "on"),
                  version="6.1.50r161033"), "Unknown option")
    _refused(fake(("VBoxManage", "modifyvm", "x", "--host-only-net1", "hon")), "Unknown option")
    _refused(fake(("VBoxManage", "modifyvm", "x", "--nic9", "nat")), "NIC number 9")
    _refused(fake(("VBoxManage", "modifyvm", "x", "--nictype1", "e1000")), "e1000")
    _refused(fake(("VBoxManage", "modifyvm", "x", "--nic1", "bogus")), "bogus")
    _refused(fake(("VBoxManage", "startvm", "x", "--type", "invisible")), "invisible")
    _refused(fake(("VBoxManage", "frobnicate")), "frobnicate")
    # both spellings of a value parse; the name and index are split
    assert fake(("VBoxManage", "modifyvm", "x", "--nic1=nat", "--nictype1", "virtio",
                 "--nic-type2=82540EM")).returncode == 0
    nics = next(iter(fake.state()["vms"].values()))["nics"]
    assert (nics["1"]["attachment"], nics["1"]["type"], nics["2"]["type"]) == \
        ("nat", "virtio", "82540EM")


def test_stand_in_rejects_bad_macs(fake):
    assert fake(("VBoxManage", "createvm", "--name", "x", "--register")).returncode == 0
    _refused(fake(("VBoxManage", "modifyvm", "x", "--macaddress1", "52:54:00:aa:bb:01")), "MAC")
    _refused(fake(("VBoxManage", "modifyvm", "x", "--macaddress1", "010000AABB01")), "MAC")
    _refused(fake(("VBoxManage", "modifyvm", "x", "--macaddress1", "525400AABB0")), "MAC")
    assert fake(("VBoxManage", "modifyvm", "x", "--macaddress1", "525400AABB01")).returncode == 0


def test_stand_in_rejects_missing_objects(fake):
    _refused(fake(("VBoxManage", "modifyvm", "ghost", "--memory", "128")), "ghost")
    _refused(fake(("VBoxManage", "startvm", "ghost")), "ghost")
    _refused(fake(("VBoxManage", "natnetwork", "start", "--netname", "nope")), "nope")
    _refused(fake(("VBoxManage", "hostonlyif", "remove", "vboxnet7")), "vboxnet7")
    assert fake(("VBoxManage", "createvm", "--name", "x", "--register")).returncode == 0
    _refused(fake(("VBoxManage", "createvm", "--name", "x", "--register")), "already exists")
    _refused(fake(("VBoxManage", "modifyvm", "x", "--nic1", "hostonly",
                   "--hostonlyadapter1", "{hostonlyif:n1}")), "{hostonlyif:n1}")
    _refused(fake(("VBoxManage", "modifyvm", "x", "--nic1", "natnetwork",
                   "--nat-network1", "nope")), "nope")
    # a failed modifyvm changes nothing
    assert fake.state()["vms"][next(iter(fake.state()["vms"]))]["nics"] == {}


def test_stand_in_enforces_hostonly_ranges(fake):
    assert fake(("VBoxManage", "hostonlyif", "create")).returncode == 0
    ipconfig = ("VBoxManage", "hostonlyif", "ipconfig", "vboxnet0", "--ip", "10.9.0.1")
    _refused(fake(ipconfig), "E_ACCESSDENIED")
    assert fake(ipconfig, version="6.1.26r145957").returncode == 0
    assert fake(ipconfig, VBOX_FAKE_NETWORKS_CONF="* 10.0.0.0/8").returncode == 0
    assert fake(("VBoxManage", "hostonlyif", "ipconfig", "vboxnet0",
                 "--ip=192.168.57.1")).returncode == 0


def test_stand_in_refuses_one_normal_disk_in_two_vms(fake):
    for vm in ("x", "y"):
        for argv in (("createvm", "--name", vm, "--register"),
                     ("storagectl", vm, "--name", "SATA", "--add", "sata")):
            assert fake(("VBoxManage", *argv)).returncode == 0
    attach = ("VBoxManage", "storageattach", "{}", "--storagectl", "SATA", "--port", "0",
              "--device", "0", "--type", "hdd", "--medium", DISK)
    assert fake(tuple(a.replace("{}", "x") for a in attach)).returncode == 0
    _refused(fake(tuple(a.replace("{}", "y") for a in attach)), "already attached")


def test_render_and_dry_run_judge_a_lab_by_this_machines_virtualbox(tmp_path, monkeypatch,
                                                                   this_machines_virtualbox):
    """They used VirtualBox 7.0's built-in rules whatever the host allowed: a subnet the
    host's networks.conf allows was refused, with advice render could not follow."""
    from click.testing import CliRunner

    from provisioner.cli import main
    from provisioner.drivers.virtualbox import context
    from provisioner.host import runner
    from tests.conftest import ROOT

    lab = tmp_path / "lab.yaml"
    lab.write_text("name: h\nnetworks:\n  - {name: net, mode: hostonly, subnet: 10.71.5.0/24}\n"
                   "vms:\n  - {name: a, nics: [{network: net}]}\n")
    monkeypatch.setattr(context, "hostonly_ranges", lambda *a: ("10.71.0.0/16", "192.168.63.0/24"))
    monkeypatch.setenv("VNET_VBOXMANAGE", str(ROOT / "tests" / "fakes" / "VBoxManage"))
    monkeypatch.setenv("VBOX_FAKE_STATE", str(tmp_path / "vbox.json"))
    ran = CliRunner().invoke(main, ["up", str(lab), "--backend", "virtualbox", "--dry-run"])
    assert ran.exit_code == 0, ran.output
    monkeypatch.delenv("VNET_VBOXMANAGE")
    monkeypatch.setattr(runner, "which", lambda name: None)       # no VirtualBox here
    refused = CliRunner().invoke(main, ["up", str(lab), "--backend", "virtualbox", "--dry-run"])
    assert refused.exit_code == 2 and "outside the host-only ranges" in refused.output
    assert "context" not in refused.output
