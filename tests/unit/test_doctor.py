"""vnet doctor: every rule against fake sysfs/proc/command outputs, the registry, preflight,
the CLI contract, and once against this machine (never hard-coding its answer)."""
import json
import os
from ipaddress import IPv4Address, IPv4Network

import pytest
from click.testing import CliRunner

from provisioner import doctor
from provisioner.drivers.libvirt import lifecycle
from provisioner.lab import loader as labfile
from provisioner.cli import main
from provisioner.lab.defaults import default_lab
from provisioner.doctor import host as hostmod
from provisioner.doctor.host import Host, Output
from provisioner.doctor.rules import (firewall_backend, forward_policy, kvm, libvirt_connect,
                                      libvirt_uri, sriov, subnet_collision, tools, vbox_kvm_modules,
                                      vbox_networks_conf, vdpa)
from provisioner.drivers.libvirt.render import bridge_name, mgmt_subnet_for
from provisioner.errors import Unsupported
from provisioner.host.state import Target

SANDBOX = labfile.Defaults(bridge="lan0", bridged_subnet=IPv4Network("198.51.100.0/24"),
                           bridged_host_ip=IPv4Address("198.51.100.2"),
                           bridged_router=IPv4Address("198.51.100.1"))
LIBVIRT_OK = {"ok": True, "reason": "ok", "error": None, "socket": "/run/libvirt/libvirt-sock",
              "version": "9.0.0"}


class FakeHost(Host):
    """Files, directories, programs and command outputs given as data."""

    def __init__(self, files=None, dirs=None, tools=(), commands=None, libvirt=LIBVIRT_OK,
                 accel=None, **context):
        super().__init__(**context)
        self.files = dict(files or {})
        self.dirs = {k: list(v) for k, v in (dirs or {}).items()}
        self.commands = dict(commands or {})
        self.tools = set(tools) | {argv[0] for argv in self.commands}
        self._libvirt, self._accel = libvirt, accel
        self.ran = []

    def read(self, path):
        return self.files.get(path)

    def exists(self, path):
        path = path.rstrip("/")
        return path in self.files or path in self.dirs or any(
            p.startswith(path + "/") for p in [*self.files, *self.dirs])

    def listdir(self, path):
        if path in self.dirs:
            return sorted(self.dirs[path])
        names = {p[len(path) + 1:].split("/")[0] for p in [*self.files, *self.dirs]
                 if p.startswith(path + "/")}
        return sorted(names) or None

    def which(self, name):
        return f"/usr/bin/{name}" if name in self.tools else None

    def run(self, argv, in_target=True):
        self.ran.append((tuple(argv), self.netns if in_target else None))
        if argv[0] not in self.tools:
            return None
        out = self.commands.get(tuple(argv), Output(1, "", f"{argv[0]}: no fake output"))
        return Output(0, out, "") if isinstance(out, str) else out

    def libvirt(self):
        if isinstance(self._libvirt, Exception):
            raise self._libvirt
        return self._libvirt

    def accel(self):
        return self._accel


def lab(mode="natnetwork", model="virtio", **kw):
    return labfile.resolve(default_lab(mode, model, **kw), SANDBOX)


def severities(findings):
    return {f.id: f.severity for f in findings}


# --- kvm --------------------------------------------------------------------------------------

HUNG = {"accel": "qemu", "source": "cached in /var/lib/vnet/accel.json",
        "path": "/var/lib/vnet/accel.json",
        "detail": "/dev/kvm exists but a KVM guest did not reach userspace within 10s: "
                  "falling back to TCG (slower, but it works)"}


def test_kvm_present_but_hanging_is_named_and_tcg_recommended():
    [f] = kvm.check(FakeHost(files={"/dev/kvm": ""}, accel=HUNG))
    assert f.severity == "warn"
    assert "KVM is present but does not boot guests" in f.summary
    assert "TCG" in f.summary and "VNET_ACCEL=qemu" in f.fix
    assert "/var/lib/vnet/accel.json" in f.fix


def test_kvm_that_boots_is_ok():
    [f] = kvm.check(FakeHost(files={"/dev/kvm": ""}, accel={
        "accel": "kvm", "detail": "KVM guest booted in 0.9s", "source": "probed now"}))
    assert f.severity == "ok" and "KVM boots guests" in f.summary


def test_no_dev_kvm_is_ok_and_never_probes():
    host = FakeHost(accel=HUNG)
    host.accel = lambda: pytest.fail("must not probe without /dev/kvm")
    [f] = kvm.check(host)
    assert f.severity == "ok" and "TCG" in f.summary


def test_kvm_not_probed_yet_is_ok_and_says_how():
    [f] = kvm.check(FakeHost(files={"/dev/kvm": ""}, accel=None))
    assert f.severity == "ok" and "vnet image build" in f.summary


def test_kvm_without_permission_is_a_warning():
    [f] = kvm.check(FakeHost(files={"/dev/kvm": ""}, accel=dict(
        HUNG, detail="no usable /dev/kvm: using TCG")))
    assert f.severity == "warn" and "cannot open" in f.summary and "kvm" in f.fix


def test_kvm_forced_by_environment_is_ok():
    [f] = kvm.check(FakeHost(files={"/dev/kvm": ""}, accel={
        "accel": "qemu", "detail": "forced by VNET_ACCEL=qemu", "source": "env"}))
    assert f.severity == "ok" and "VNET_ACCEL" in f.summary


# --- libvirtd ---------------------------------------------------------------------------------

def test_libvirtd_answering_is_ok():
    [f] = libvirt_connect.check(FakeHost())
    assert f.severity == "ok" and "9.0.0" in f.summary


def test_no_libvirtd_is_an_error_that_offers_the_sandbox():
    [f] = libvirt_connect.check(FakeHost(libvirt={
        "ok": False, "reason": "no-socket", "socket": "/run/libvirt/libvirt-sock",
        "error": "/run/libvirt/libvirt-sock does not exist"}))
    assert f.severity == "error" and "no libvirtd answers" in f.summary
    assert "vnet sandbox up" in f.fix


def test_sandbox_not_up():
    [f] = libvirt_connect.check(FakeHost(sandbox="lab1", libvirt={
        "ok": False, "reason": "no-socket", "socket": "/x/run/libvirt-sock", "error": "gone"}))
    assert f.severity == "error" and "sandbox lab1 is not up" in f.summary
    assert f.fix == "vnet sandbox up lab1"


def test_no_permission_on_the_socket():
    [f] = libvirt_connect.check(FakeHost(libvirt={
        "ok": False, "reason": "permission", "socket": "/run/libvirt/libvirt-sock",
        "error": "permission denied on /run/libvirt/libvirt-sock"}))
    assert f.severity == "error" and "permission" in f.summary and "group libvirt" in f.fix


def test_libvirt_python_missing():
    [f] = libvirt_connect.check(FakeHost(libvirt={"ok": False, "reason": "no-module"}))
    assert f.severity == "error" and "pip install libvirt-python" in f.fix


def test_local_sockets_of_uris(monkeypatch):
    assert hostmod.local_sockets("qemu:///system") == ["/run/libvirt/virtqemud-sock",
                                                       "/run/libvirt/libvirt-sock"]
    assert hostmod.local_sockets("qemu:///system?socket=/s/libvirt-sock") == ["/s/libvirt-sock"]
    assert hostmod.local_sockets("qemu+ssh://root@hv1/system") is None
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/1000")
    assert hostmod.local_sockets("qemu:///session")[-1] == "/run/user/1000/libvirt/libvirt-sock"


def test_probe_never_opens_a_uri_whose_socket_is_missing(tmp_path, monkeypatch):
    """Opening qemu:///session with no daemon would start one: the socket is checked first."""
    import libvirt

    monkeypatch.setattr(libvirt, "open", lambda uri: pytest.fail(f"opened {uri}"))
    fact = hostmod.probe_libvirt(f"qemu:///system?socket={tmp_path}/libvirt-sock")
    assert fact["reason"] == "no-socket" and not fact["ok"]


# --- qemu:///session --------------------------------------------------------------------------

def test_system_uri_is_ok():
    assert severities(libvirt_uri.check(FakeHost(uri="qemu:///system"))) == {"libvirt-uri": "ok"}


def test_session_uri_is_an_error_naming_the_networks():
    [f] = libvirt_uri.check(FakeHost(uri="qemu:///session", lab=lab("hostonly")))
    assert f.severity == "error" and "session" in f.summary
    assert "network net (hostonly)" in f.summary and "management network" in f.summary
    assert "--uri qemu:///system" in f.fix


def test_remote_session_uri_suggests_the_remote_system_uri():
    [f] = libvirt_uri.check(FakeHost(uri="qemu+ssh://root@hv1/session"))
    assert "qemu+ssh://root@hv1/system" in f.fix


# --- subnet collisions ------------------------------------------------------------------------

def ip_facts(addrs=(), routes=(), bridges=()):
    """Fake `ip -j` outputs: addrs [(dev, "a.b.c.d/p")], routes [dicts]."""
    links = {}
    for dev, cidr in addrs:
        local, prefix = cidr.split("/")
        links.setdefault(dev, []).append({"family": "inet", "local": local,
                                          "prefixlen": int(prefix)})
    return {("ip", "-j", "addr"): json.dumps([{"ifname": d, "addr_info": a}
                                              for d, a in links.items()]),
            ("ip", "-j", "route"): json.dumps([{"dst": "default", "gateway": "192.0.2.1",
                                                "dev": "eth0"}, *routes]),
            ("ip", "-j", "link", "show", "type", "bridge"): json.dumps(
                [{"ifname": b} for b in bridges])}


def test_subnet_taken_by_a_bridge_is_an_error_with_a_free_suggestion():
    the_lab = lab("natnetwork")
    host = FakeHost(lab=the_lab, commands=ip_facts(
        addrs=[("eth0", "192.0.2.2/24"), ("virbr0", "192.168.150.1/24")], bridges=["virbr0"]))
    [f] = subnet_collision.check(host)
    assert f.severity == "error" and f.id == "subnet:net"
    assert "192.168.150.0/24" in f.summary and "bridge virbr0" in f.summary
    assert "networks.net.subnet" in f.fix and "192.168.151.0/24" in f.fix


def test_subnet_taken_by_a_route_is_an_error():
    host = FakeHost(lab=lab("hostonly"), commands=ip_facts(routes=[
        {"dst": "192.168.56.0/21", "gateway": "192.0.2.9", "dev": "eth0"}]))
    [f] = subnet_collision.check(host)
    assert f.severity == "error" and "route 192.168.56.0/21 via 192.0.2.9 dev eth0" in f.summary


def test_the_labs_own_bridges_do_not_collide():
    """A second `vnet up` of a running lab sees its own bridges."""
    the_lab = lab("natnetwork")
    mgmt = mgmt_subnet_for(the_lab.name)
    host = FakeHost(lab=the_lab, netns="vnet-s-host", files={"/run/netns/vnet-s-host": ""},
                    commands=ip_facts(addrs=[
        (bridge_name(the_lab.name, "net"), "192.168.150.1/24"),
        (bridge_name(the_lab.name, "mgmt"), f"{mgmt.network_address + 1}/24")]))
    [f] = subnet_collision.check(host)
    assert f.severity == "ok"
    assert all(netns == "vnet-s-host" for _, netns in host.ran)   # read in the target namespace


def test_management_subnet_collision_says_rename():
    the_lab = lab("internal")
    mgmt = mgmt_subnet_for(the_lab.name)
    host = FakeHost(lab=the_lab, commands=ip_facts(addrs=[("vnother", f"{mgmt.network_address + 1}/24")]))
    [f] = subnet_collision.check(host)
    assert f.id == "subnet:mgmt" and "rename the lab" in f.fix


def test_without_a_lab_the_default_subnets_are_warnings():
    host = FakeHost(commands=ip_facts(addrs=[("vboxnet0", "192.168.56.1/24")]))
    found = subnet_collision.check(host)
    assert severities(found) == {"subnet:hostonly-net": "warn"}


def test_subnet_rule_without_iproute2_or_namespace():
    [f] = subnet_collision.check(FakeHost(lab=lab()))
    assert f.severity == "warn" and "iproute2" in f.summary
    [f] = subnet_collision.check(FakeHost(lab=lab(), sandbox="s", netns="vnet-s-host"))
    assert f.severity == "warn" and f.fix == "vnet sandbox up s"


# --- FORWARD policy ---------------------------------------------------------------------------

DOCKER_FORWARD = "-P FORWARD DROP\n-A FORWARD -j DOCKER-USER\n-A FORWARD -j DOCKER-ISOLATION-STAGE-1\n"
BRIDGE_NF = ("cat", "/proc/sys/net/bridge/bridge-nf-call-iptables")


def test_forward_accept_is_ok():
    [f] = forward_policy.check(FakeHost(commands={("iptables", "-S", "FORWARD"): "-P FORWARD ACCEPT\n"}))
    assert f.severity == "ok" and "ACCEPT" in f.summary


def test_docker_forward_drop_with_br_netfilter_is_an_error():
    [f] = forward_policy.check(FakeHost(commands={("iptables", "-S", "FORWARD"): DOCKER_FORWARD,
                                                  BRIDGE_NF: "1\n"}))
    assert f.severity == "error" and "DROP" in f.summary and "Docker" in f.summary
    assert "DOCKER-USER" in f.fix and "bridge-nf-call-iptables=0" in f.fix


def test_forward_drop_without_br_netfilter_is_a_warning():
    [f] = forward_policy.check(FakeHost(commands={("iptables", "-S", "FORWARD"): DOCKER_FORWARD,
                                                  BRIDGE_NF: "0\n"}))
    assert f.severity == "warn"


def test_forward_drop_spares_a_lab_without_bridged_or_internal_networks():
    host = FakeHost(lab=lab("natnetwork"), commands={("iptables", "-S", "FORWARD"): DOCKER_FORWARD,
                                                     BRIDGE_NF: "1\n"})
    assert forward_policy.check(host)[0].severity == "warn"
    host.lab = lab("internal")
    assert forward_policy.check(host)[0].severity == "error"


def test_forward_rule_without_iptables_or_permission():
    assert forward_policy.check(FakeHost())[0].severity == "ok"
    [f] = forward_policy.check(FakeHost(commands={("iptables", "-S", "FORWARD"): Output(
        4, "", "iptables v1.8.9 (nf_tables): Permission denied (you must be root)")}))
    assert f.severity == "warn" and "Permission denied" in f.summary


# --- firewall backend -------------------------------------------------------------------------

def fw_host(version="9.0.0", ufw=False, firewalld=False, files=None, tools=("nft",)):
    commands = {("ufw", "status"): "Status: active\n" if ufw else "Status: inactive\n",
                ("firewall-cmd", "--state"): Output(0, "running\n", "") if firewalld
                else Output(252, "", "not running")}
    return FakeHost(commands=commands, files=files, tools=tools,
                    libvirt=dict(LIBVIRT_OK, version=version))


def test_no_host_firewall_is_ok():
    [f] = firewall_backend.check(fw_host())
    assert f.severity == "ok" and "iptables" in f.summary


def test_ufw_with_libvirt_nftables_backend_is_a_warning():
    [f] = firewall_backend.check(fw_host(version="10.6.0", ufw=True))
    assert f.severity == "warn" and "nftables" in f.summary
    assert "ufw route allow in on" in f.fix and 'firewall_backend = "iptables"' in f.fix


def test_ufw_with_iptables_backend_is_ok():
    assert firewall_backend.check(fw_host(version="9.0.0", ufw=True))[0].severity == "ok"
    conf = {"/etc/libvirt/network.conf": 'firewall_backend = "iptables"\n'}
    assert firewall_backend.check(fw_host(version="10.6.0", ufw=True, files=conf))[0].severity == "ok"


def test_firewalld_without_libvirt_zone_is_an_error():
    [f] = firewall_backend.check(fw_host(firewalld=True))
    assert f.severity == "error" and "'libvirt' zone" in f.summary
    zone = {"/usr/lib/firewalld/zones/libvirt.xml": "<zone/>"}
    assert firewall_backend.check(fw_host(firewalld=True, files=zone))[0].severity == "ok"


def test_sandbox_is_out_of_reach_of_the_host_firewall():
    host = fw_host(ufw=True, firewalld=True)
    host.sandbox = "s"
    assert firewall_backend.check(host)[0].severity == "ok"


# --- tools ------------------------------------------------------------------------------------

def test_all_tools_present():
    host = FakeHost(tools=["qemu-system-x86_64", "dnsmasq", "qemu-img", "passt"])
    assert severities(tools.check(host)) == {"tools": "ok"}


def test_missing_tools_name_their_packages():
    found = {f.id: f for f in tools.check(FakeHost(tools=["qemu-system-x86_64", "qemu-img"]))}
    assert found["tools:dnsmasq"].severity == "error"
    assert found["tools:dnsmasq"].fix == "apt-get install dnsmasq-base"
    assert found["tools:passt"].severity == "warn"
    assert found["tools"].severity == "ok"


def test_virtualbox_needs_vboxmanage():
    found = severities(tools.check(FakeHost(backend="virtualbox", tools=["qemu-img"])))
    assert found == {"tools:VBoxManage": "error", "tools": "ok"}


# --- VirtualBox networks.conf -----------------------------------------------------------------

def test_networks_conf_parsing():
    assert vbox_networks_conf.parse(None)[0] == (IPv4Network("192.168.56.0/21"),)
    assert vbox_networks_conf.parse("")[0] == ()
    ranges, problems = vbox_networks_conf.parse(
        "# lab ranges\n* 10.0.0.0/8 192.168.0.0/16 2001::/64\n10.1.0.0/16\n* bogus\n")
    assert ranges == (IPv4Network("10.0.0.0/8"), IPv4Network("192.168.0.0/16"))
    assert len(problems) == 2


def vbox_lab(subnet):
    return labfile.resolve({"name": "v", "networks": [{"name": "ho", "mode": "hostonly",
                                                       "subnet": subnet}],
                            "vms": [{"name": "a", "nics": [{"network": "ho"}]}]})


def test_hostonly_subnet_inside_the_default_range_is_ok():
    found = vbox_networks_conf.check(FakeHost(backend="virtualbox", lab=vbox_lab("192.168.57.0/24")))
    assert severities(found) == {"vbox-networks-conf": "ok"}


def test_hostonly_subnet_outside_the_allowed_ranges_is_an_error():
    [f] = vbox_networks_conf.check(FakeHost(backend="virtualbox", lab=vbox_lab("10.1.0.0/24")))
    assert f.severity == "error" and f.id == "vbox-networks-conf:ho"
    assert "* 10.1.0.0/24" in f.fix and "/etc/vbox/networks.conf" in f.fix


def test_empty_networks_conf_allows_nothing():
    host = FakeHost(backend="virtualbox", files={"/etc/vbox/networks.conf": ""})
    [f] = vbox_networks_conf.check(host)         # the default hostonly lab: 192.168.56.0/24
    assert f.severity == "error" and "allows nothing" in f.summary


def test_old_virtualbox_has_no_restriction():
    host = FakeHost(backend="virtualbox", lab=vbox_lab("10.1.0.0/24"),
                    commands={("VBoxManage", "--version"): "6.1.26r145957\n"})
    assert severities(vbox_networks_conf.check(host)) == {"vbox-networks-conf": "ok"}


# --- KVM modules against VirtualBox -----------------------------------------------------------

MODULES = "kvm_intel 409600 0 - Live 0x0\nkvm 1142784 1 kvm_intel, Live 0x0\nvboxdrv 696320 2 - Live 0x0\n"


def test_kvm_modules_while_virtualbox_is_wanted_is_an_error():
    found = {f.id: f for f in vbox_kvm_modules.check(FakeHost(backend="virtualbox",
                                                              files={"/proc/modules": MODULES}))}
    assert found["vbox-kvm"].severity == "error" and "kvm_intel" in found["vbox-kvm"].summary
    assert "modprobe -r kvm_intel kvm_amd kvm" in found["vbox-kvm"].fix
    assert "vbox-driver" not in found


def test_no_kvm_and_vboxdrv_loaded_is_ok():
    host = FakeHost(backend="virtualbox", files={"/proc/modules": "vboxdrv 696320 2 - Live 0x0\n"})
    assert severities(vbox_kvm_modules.check(host)) == {"vbox-kvm": "ok"}


def test_vboxdrv_missing_is_an_error():
    host = FakeHost(backend="virtualbox", files={"/proc/modules": "e1000e 1 0 - Live 0x0\n"})
    assert severities(vbox_kvm_modules.check(host)) == {"vbox-kvm": "ok", "vbox-driver": "error"}


def test_built_in_kvm_is_a_warning():
    host = FakeHost(backend="virtualbox", files={"/dev/kvm": ""})
    assert severities(vbox_kvm_modules.check(host)) == {"vbox-kvm": "warn"}


# --- SR-IOV -----------------------------------------------------------------------------------

def sriov_lab(pf="enp4s0f0", vms=2):
    return lab("bridged", "sriov", vms=vms, pf=pf)


def sysfs_pf(pf="enp4s0f0", total="8", numvfs="0", iommu=True):
    files = {f"/sys/class/net/{pf}/device/sriov_totalvfs": total + "\n",
             f"/sys/class/net/{pf}/device/sriov_numvfs": numvfs + "\n",
             "/sys/class/net/eth0/address": "02:00:00:00:00:01\n"}
    dirs = {"/sys/kernel/iommu_groups": ["0", "1"] if iommu else []}
    return files, dirs


def test_sriov_pf_without_vfs_is_an_error_with_the_echo_fix():
    files, dirs = sysfs_pf(numvfs="0")
    [f] = sriov.check(FakeHost(lab=sriov_lab(), files=files, dirs=dirs))
    assert f.severity == "error" and f.id == "sriov:enp4s0f0"
    assert f.summary.startswith("no hardware: ") and "sriov_numvfs=0 of sriov_totalvfs=8" in f.summary
    assert f.fix == "echo 2 > /sys/class/net/enp4s0f0/device/sriov_numvfs (as root)"


def test_sriov_missing_pf_lists_capable_nics():
    files, dirs = sysfs_pf(pf="enp5s0")
    [f] = sriov.check(FakeHost(lab=sriov_lab("enp4s0f0"), files=files, dirs=dirs))
    assert f.severity == "error" and "no network interface enp4s0f0" in f.summary
    assert "SR-IOV capable NICs here: enp5s0" in f.summary


def test_sriov_pf_not_capable():
    [f] = sriov.check(FakeHost(lab=sriov_lab("eth0"), files={"/sys/class/net/eth0/address": "x"}))
    assert f.severity == "error" and "not SR-IOV capable" in f.summary


def test_sriov_too_few_vfs():
    files, dirs = sysfs_pf(numvfs="1")
    [f] = sriov.check(FakeHost(lab=sriov_lab(vms=3), files=files, dirs=dirs))
    assert f.severity == "error" and "only 1 VF(s) configured for 3 NIC(s)" in f.summary


def test_sriov_with_vfs_and_iommu_is_ok_but_needs_the_iommu():
    files, dirs = sysfs_pf(numvfs="4")
    assert severities(sriov.check(FakeHost(lab=sriov_lab(), files=files, dirs=dirs))) == {
        "sriov:enp4s0f0": "ok"}
    files, dirs = sysfs_pf(numvfs="4", iommu=False)
    found = severities(sriov.check(FakeHost(lab=sriov_lab(), files=files, dirs=dirs)))
    assert found == {"sriov:enp4s0f0": "ok", "sriov:iommu": "error"}


def test_sriov_vf_address():
    the_lab = labfile.load("tests/golden/sriov/lab.yaml")       # one pf NIC, one vf_address NIC
    files, dirs = sysfs_pf(numvfs="2")
    found = severities(sriov.check(FakeHost(lab=the_lab, files=files, dirs=dirs)))
    assert found == {"sriov:enp4s0f0": "ok", "sriov:0000:04:10.1": "error"}
    files["/sys/bus/pci/devices/0000:04:10.1/physfn"] = "../0000:04:00.0"
    found = severities(sriov.check(FakeHost(lab=the_lab, files=files, dirs=dirs)))
    assert found == {"sriov:enp4s0f0": "ok", "sriov:0000:04:10.1": "ok"}


# --- vDPA -------------------------------------------------------------------------------------

def test_vdpa_without_devices_is_an_error():
    [f] = vdpa.check(FakeHost(lab=lab("bridged", "vdpa", vms=1), tools=["vdpa"], dirs={"/dev": ["null"]}))
    assert f.severity == "error" and f.summary.startswith("no hardware: ")
    assert "/dev/vhost-vdpa-0" in f.summary and "vdpa dev add" in f.fix


def test_vdpa_without_the_tool_says_so():
    [f] = vdpa.check(FakeHost(lab=lab("bridged", "vdpa", vms=1), dirs={"/dev": []}))
    assert "`vdpa` tool" in f.summary and "apt-get install iproute2" in f.fix


def test_vdpa_devices_present():
    host = FakeHost(lab=lab("bridged", "vdpa"), dirs={"/dev": ["vhost-vdpa-0", "vhost-vdpa-1"]})
    assert severities(vdpa.check(host)) == {"vdpa:vm1": "ok", "vdpa:vm2": "ok", "vdpa:tool": "warn"}


# --- registry, report, preflight --------------------------------------------------------------

EXPECTED_RULES = {"kvm", "libvirtd", "libvirt-uri", "subnet", "forward-policy", "firewall",
                  "tools", "vbox-networks-conf", "vbox-kvm", "sriov", "vdpa", "openvswitch",
                  "passthrough-sandbox"}


def test_registry_discovers_every_rule_module():
    rules = doctor.all_rules()
    assert {r.id for r in rules} == EXPECTED_RULES
    assert len(rules) == len({r.id for r in rules})
    assert all(callable(r.check) and r.title for r in rules)
    assert {r.id for r in rules if r.hardware} == {"sriov", "vdpa", "passthrough-sandbox"}


def quiet_host(**kw):
    """A healthy libvirt host."""
    return FakeHost(tools=["qemu-system-x86_64", "dnsmasq", "qemu-img", "passt", "nft"],
                    commands={**ip_facts(), ("iptables", "-S", "FORWARD"): "-P FORWARD ACCEPT\n",
                              ("ufw", "status"): "Status: inactive\n"}, **kw)


def test_run_reports_not_applicable_rules_and_json_shape():
    report = doctor.run(quiet_host())
    assert report.status == "ok" and not report.errors
    assert set(report.not_applicable) == {"vbox-networks-conf", "vbox-kvm", "sriov", "vdpa",
                                          "passthrough-sandbox"}
    data = report.as_json()
    assert all(set(f) == {"id", "severity", "summary", "fix"} for f in data["findings"])
    assert "0 error(s)" in report.text()


def test_a_broken_rule_does_not_hide_the_others():
    report = doctor.run(quiet_host(libvirt=RuntimeError("boom")))
    broken = [f for f in report.findings if f.id == "libvirtd"]
    assert broken[0].severity == "warn" and "boom" in broken[0].summary
    assert any(f.id == "tools" for f in report.findings)


def test_preflight_refuses_missing_hardware_before_anything(monkeypatch):
    host = quiet_host(dirs={"/dev": []})
    monkeypatch.setattr(doctor, "SystemHost", lambda *a, **kw: _with_context(host, *a))
    from provisioner.guest import images
    monkeypatch.setattr(images, "build_tiny", lambda **kw: pytest.fail("created something"))
    the_lab = lab("bridged", "vdpa", vms=1)
    with pytest.raises(Unsupported) as caught:
        lifecycle.up(the_lab, Target(uri="qemu:///system"), lambda m: None)
    exc = caught.value
    assert "no hardware: vDPA device /dev/vhost-vdpa-0" in exc.message
    assert "vdpa dev add" in exc.hint
    assert exc.hardware and [f.id for f in exc.findings] == ["vdpa:vm1"]


@pytest.mark.parametrize("model", ["sriov", "vdpa"])
def test_a_sandbox_never_passes_a_host_device_into_a_guest(monkeypatch, model):
    """Even where the hardware is there (VFs configured, the IOMMU on, the vDPA device made):
    PCI devices and /dev are not per network namespace, so the sandbox's libvirtd would hand
    the machine's real device, and its wire, to the guest. Skipped as hardware the sandbox
    lacks, with the reason."""
    files, dirs = sysfs_pf(total="8", numvfs="8")
    dirs["/dev"] = ["vhost-vdpa-0"]
    host = quiet_host(files=files, dirs=dirs)
    monkeypatch.setattr(doctor, "SystemHost", lambda *a, **kw: _with_context(host, *a))
    the_lab = sriov_lab(vms=1) if model == "sriov" else lab("bridged", "vdpa", vms=1)
    sandboxed = Target(uri="qemu:///system?socket=/x", sandbox="default", netns="vnet-default-host")
    with pytest.raises(Unsupported) as caught:
        doctor.preflight(the_lab, sandboxed)
    assert caught.value.hardware and "never gives a guest a path" in caught.value.message
    reasons = doctor.hardware_reasons(the_lab, caught.value.findings)
    assert "in sandbox default" in reasons["vm1"]
    doctor.preflight(the_lab, Target(uri="qemu:///system"))     # a lab host: the point of it


def test_preflight_passes_a_plain_lab_and_runs_only_preflight_rules(monkeypatch):
    host = quiet_host()
    monkeypatch.setattr(doctor, "SystemHost", lambda *a, **kw: _with_context(host, *a))
    report = doctor.preflight(lab("hostonly"), Target(uri="qemu:///system"))
    assert {f.rule for f in report.findings} == {"libvirt-uri", "subnet"}


def test_preflight_refuses_a_taken_subnet_as_not_hardware(monkeypatch):
    host = quiet_host()
    host.commands.update(ip_facts(addrs=[("vboxnet0", "192.168.56.1/24")]))
    monkeypatch.setattr(doctor, "SystemHost", lambda *a, **kw: _with_context(host, *a))
    with pytest.raises(Unsupported) as caught:
        doctor.preflight(lab("hostonly"), Target(uri="qemu:///system"))
    assert not caught.value.hardware and "vboxnet0" in caught.value.message


def _with_context(host, backend, uri, lab, sandbox, netns):
    host.backend, host.uri, host.lab, host.sandbox, host.netns = backend, uri, lab, sandbox, netns
    return host


# --- CLI --------------------------------------------------------------------------------------

def test_cli_exit_codes_and_json(monkeypatch):
    clean = doctor.run(quiet_host())
    monkeypatch.setattr(doctor, "diagnose", lambda **kw: clean)
    result = CliRunner().invoke(main, ["doctor", "--format", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["status"] == "ok"
    broken = doctor.run(quiet_host(uri="qemu:///session"))
    monkeypatch.setattr(doctor, "diagnose", lambda **kw: broken)
    result = CliRunner().invoke(main, ["doctor"])
    assert result.exit_code == 3
    assert "ERROR  libvirt-uri" in result.output and "fix: use --uri" in result.output


def test_cli_passes_backend_sandbox_and_lab(monkeypatch, tmp_path):
    seen = {}

    def fake(**kw):
        seen.update(kw)
        return doctor.run(quiet_host())
    monkeypatch.setattr(doctor, "diagnose", fake)
    lab_file = tmp_path / "lab.yaml"
    lab_file.write_text("name: x\nnetworks: [{name: n, mode: hostonly}]\n"
                        "vms: [{name: a, nics: [{network: n}]}]\n")
    CliRunner().invoke(main, ["doctor", "--backend", "virtualbox", "--sandbox", "s1",
                              "--lab", str(lab_file)])
    assert seen["backend"] == "virtualbox" and seen["sandbox"] == "s1" and seen["lab"].name == "x"


# --- this machine -----------------------------------------------------------------------------

def test_doctor_on_this_machine_judges_kvm_by_the_verdict():
    """Runs every rule for real (reads only). The KVM finding must name the KVM problem exactly
    when /dev/kvm exists and vnet's verdict (cached or probed now) is TCG."""
    from provisioner.host import accel

    report = doctor.diagnose()
    [finding] = [f for f in report.findings if f.id == "kvm"]
    verdict = accel.cached()
    forced = os.environ.get("VNET_ACCEL") in ("kvm", "qemu")
    if os.path.exists("/dev/kvm") and not forced and verdict and verdict["accel"] == "qemu":
        assert finding.severity == "warn", finding
        assert "KVM" in finding.summary and "TCG" in finding.summary
    else:
        assert finding.severity == "ok", finding
    assert report.status in ("ok", "warn", "error")
    assert all(f.fix for f in report.findings if f.severity != "ok")


def test_hardware_reasons_map_findings_to_vms():
    the_lab = labfile.load("tests/golden/sriov/lab.yaml")     # a: pf enp4s0f0, b: a VF address
    findings = [doctor.error("sriov:enp4s0f0", "no hardware: PF enp4s0f0 has no VFs", "echo"),
                doctor.error("sriov:0000:04:10.1", "no hardware: VF 0000:04:10.1 is missing", "x")]
    assert doctor.hardware_reasons(the_lab, findings) == {
        "a": "PF enp4s0f0 has no VFs", "b": "VF 0000:04:10.1 is missing"}


def test_openvswitch_rule_says_which_datapath_and_why():
    from provisioner.doctor.rules import openvswitch

    tools = ["ovsdb-server", "ovs-vswitchd", "ovs-vsctl", "ovs-ofctl"]
    userspace = {f.id: f for f in openvswitch.check(FakeHost(tools=tools))}
    assert "netdev datapath: this kernel has no openvswitch module" in \
        userspace["openvswitch:datapath"].summary
    kernel = {f.id: f for f in openvswitch.check(
        FakeHost(tools=tools, dirs={"/sys/module/openvswitch": ["parameters"]}))}
    assert "the system datapath" in kernel["openvswitch:datapath"].summary
    assert "never restarts it" in userspace["openvswitch"].summary


def test_openvswitch_missing_is_an_error_only_for_a_lab_that_needs_it():
    from provisioner.doctor.rules import openvswitch

    [idle] = openvswitch.check(FakeHost())
    assert idle.severity == "ok" and "only switch: openvswitch networks need it" in idle.summary
    lab = labfile.resolve({"name": "of", "networks": [
        {"name": "fabric", "mode": "internal", "switch": "openvswitch"}],
        "vms": [{"name": "v1", "nics": [{"network": "fabric"}]}]})
    [needed] = openvswitch.check(FakeHost(lab=lab))
    assert needed.severity == "error" and needed.fix == "apt-get install openvswitch-switch"


def test_a_sandbox_lab_across_hosts_never_passes_a_host_device_into_a_guest(monkeypatch):
    """Such a lab goes to multihost.up, which ran none of lifecycle.up's preflight: a VF of
    this machine went to a guest on the sandbox's hv2 (a review's find)."""
    import dataclasses

    from provisioner.drivers.libvirt import multihost
    from provisioner.host import sandbox

    sb = sandbox.describe("default")
    sb = dataclasses.replace(sb, hosts=2) if hasattr(sb, "hosts") else sb
    data = {"name": "mh", "hosts": [{"name": "hv1"}, {"name": "hv2"}],
            "networks": [{"name": "lan", "mode": "bridged"}, {"name": "n", "mode": "natnetwork"}],
            "vms": [{"name": "a", "host": "hv2", "nics": [{"network": "lan", "model": "sriov",
                                                           "pf": "eth9"}]},
                    {"name": "b", "host": "hv1", "nics": [{"network": "n"}]}]}
    the_lab = labfile.resolve(data, labfile.sandbox_defaults(sb))
    host = quiet_host()
    monkeypatch.setattr(doctor, "SystemHost", lambda *a, **kw: _with_context(host, *a))
    monkeypatch.setattr(multihost, "host_targets",
                        lambda *a: pytest.fail("went on past the preflight"))
    with pytest.raises(Unsupported, match="never gives a guest a path"):
        multihost.up(the_lab, Target(uri=sb.uri, sandbox="default", netns=sb.host_netns),
                     lambda m: None)
