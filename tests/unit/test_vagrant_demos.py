"""Lint of the Vagrant demos (vagrant/<mode>/): each Vagrantfile parses, renders both providers,
wires exactly the NICs of its vnet.yaml, tells the tiny guest about them on the kernel command
line as vnet's own renderer would, and never relies on Vagrant's shared insecure key.

The Vagrantfiles are rendered by tests/fakes/vagrant_recorder.rb (a recording stand-in for
Vagrant), and, where vagrant is installed, validated by `vagrant validate` for each provider."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from ipaddress import IPv4Address, IPv4Network

import pytest

from provisioner.lab import loader as labfile, modes
from provisioner.host import sandbox
from provisioner.drivers.libvirt.render import LibvirtRenderer
from tests.conftest import ROOT

DEMOS = ROOT / "vagrant"
MODES = sorted(modes.names())
FAKES = ROOT / "tests" / "fakes"
RECORDER = FAKES / "vagrant_recorder.rb"
RUBY = shutil.which("ruby")
VAGRANT = shutil.which("vagrant")
needs_ruby = pytest.mark.skipif(
    RUBY is None, reason="ruby is missing: apt-get install ruby (vagrant brings it)")
# The sandbox's LAN: what the bridged demo's vnet.yaml describes.
SANDBOX_LAN = labfile.Defaults(bridge="lan0", bridged_subnet=IPv4Network(sandbox.LAN_SUBNET),
                               bridged_host_ip=IPv4Address(sandbox.HOST_LAN_IP),
                               bridged_router=IPv4Address(sandbox.LAN_GATEWAY))
VBOX_TYPE = {"virtio": "virtio", "e1000": "82540EM"}
# How each mode's lab NIC is wired under vagrant-libvirt (README: mode mapping on libvirt).
LIBVIRT_WIRING = {
    "natnetwork": ("private_network", {"libvirt__forward_mode": "nat"}),
    "hostonly": ("private_network", {"libvirt__forward_mode": "none"}),
    "internal": ("private_network", {"libvirt__forward_mode": "veryisolated"}),
    "bridged": ("public_network", {"type": "bridge", "mode": "bridge"}),
}
# ... and under VirtualBox: a Vagrant network type with options, or `modifyvm --nic2 KIND`.
VBOX_WIRING = {
    "hostonly": ("private_network", {}),
    "internal": ("private_network", {"virtualbox__intnet": "vnet-demo-internal"}),
    "bridged": ("public_network", {}),
    "nat": ("--nic2", "nat"),
    "natnetwork": ("--nic2", "natnetwork"),
}
INSECURE = re.compile(r"insecure_private_key|vagrant\.pub|insert_key\s*=\s*true|"
                      r"ssh\.password|AAAAB3NzaC1yc2EAAAABIwAAAQEA6NF8iallvQVp22WDkTkyrtvp9eWW6A8YVr")


def lab_of(mode: str):
    return labfile.load(DEMOS / mode / "vnet.yaml", SANDBOX_LAN)


@pytest.fixture(scope="module")
def rendered():
    """mode -> {machine: {provider: {...}}} as the recorder saw each Vagrantfile."""
    if RUBY is None:
        pytest.skip("ruby is missing: apt-get install ruby (vagrant brings it)")
    out = {}
    for mode in MODES:
        proc = subprocess.run([RUBY, str(RECORDER), str(DEMOS / mode / "Vagrantfile")],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, f"{mode}: {proc.stderr}"
        (config,) = json.loads(proc.stdout)
        assert config["vm"]["settings"]["box"] == "vnet/tiny", mode
        out[mode] = {name: m["vm"]["providers"] for name, m in config["vm"]["machines"].items()}
    return out


def test_every_mode_has_a_demo_and_the_readme_explains_it():
    assert sorted(p.parent.name for p in DEMOS.glob("*/Vagrantfile")) == MODES
    readme = (DEMOS / "README.md").read_text()
    for mode in MODES:
        assert f"vagrant/{mode}" in readme, mode
    assert "VirtualBox host" in readme


@pytest.mark.parametrize("mode", MODES)
def test_lab_file_is_a_valid_vnet_lab_of_its_mode(mode):
    lab = lab_of(mode)
    assert [n.mode for n in lab.networks] == [mode]
    assert len(lab.vms) == 2 and all(len(vm.nics) == 1 for vm in lab.vms)
    assert {vm.nics[0].model for vm in lab.vms} == {"virtio", "e1000"}   # both NIC types shown


@needs_ruby
@pytest.mark.parametrize("path", sorted(DEMOS.glob("*/Vagrantfile")) + sorted(DEMOS.glob("lib/*.rb")),
                         ids=lambda p: str(p.relative_to(DEMOS)))
def test_ruby_syntax(path):
    proc = subprocess.run([RUBY, "-c", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("mode", MODES)
def test_both_providers_wire_exactly_the_lab_nics(rendered, mode):
    lab = lab_of(mode)
    machines = rendered[mode]
    assert sorted(machines) == sorted(vm.name for vm in lab.vms)
    for vm in lab.vms:
        providers = machines[vm.name]
        assert set(providers) == {"libvirt", "virtualbox"}, (mode, vm.name)
        nic = vm.nics[0]
        _check_libvirt(mode, lab, vm, nic, providers["libvirt"])
        _check_virtualbox(mode, vm, nic, providers["virtualbox"])


def _check_libvirt(mode, lab, vm, nic, libvirt):
    settings = libvirt["provider"]["settings"]
    calls = libvirt["provider"]["calls"]
    mgmt = settings["management_network_mac"]
    assert settings["nic_model_type"] == nic.model
    assert settings["memory"] == vm.memory
    words = settings["cmd_line"].split()
    # The box's part (console and its own key) first, then this machine's parameters.
    assert words[:2] == ["<box", "cmdline"] and f"vnet.host={vm.name}" in words
    if_params = [w for w in words if w.startswith("vnet.if=")]
    # Management NIC: DHCP and no route (it must not carry a probe); the lab NIC exactly as
    # vnet's own libvirt renderer configures it.
    assert if_params == [f"vnet.if={mgmt},dhcp", LibvirtRenderer._if_arg(lab, nic)]
    networks = libvirt["override"]["vm"]["networks"]
    if mode == "nat":
        assert networks == []
        args = [c["options"]["value"] for c in calls if c["method"] == "qemuargs"]
        assert args[0] == "-netdev" and args[1].startswith("user,")
        for pf in lab.networks[0].port_forwards:
            if pf.vm == vm.name:
                assert f"hostfwd={pf.proto}::{pf.host_port}-:{pf.guest_port}" in args[1]
        assert f"mac={nic.mac}" in args[3]
        return
    kind, expected = LIBVIRT_WIRING[mode]
    (net,) = networks
    options = net["options"]
    assert net["type"] == kind
    assert options["mac"] == nic.mac and options["auto_config"] is False
    assert options["libvirt__model_type"] == nic.model
    for key, value in expected.items():
        assert options[key] == value, (mode, key)
    if kind == "private_network":
        assert options["ip"] == str(nic.ip.ip)
    else:
        assert options["dev"] == lab.networks[0].bridge


def _check_virtualbox(mode, vm, nic, virtualbox):
    settings = virtualbox["provider"]["settings"]
    customize = [c["args"][0] for c in virtualbox["provider"]["calls"] if c["method"] == "customize"]
    networks = virtualbox["override"]["vm"]["networks"]
    assert settings["memory"] == vm.memory
    kind, expected = VBOX_WIRING[mode]
    mac = nic.mac.replace(":", "")
    if kind.startswith("--"):
        (first, *more) = customize
        assert first[first.index(kind) + 1] == expected
        assert first[first.index("--macaddress2") + 1] == mac
        assert first[first.index("--nictype2") + 1] == VBOX_TYPE[nic.model]
        assert networks == []
        return
    (net,) = networks
    assert net["type"] == kind
    assert net["options"]["mac"] == mac and net["options"]["nic_type"] == VBOX_TYPE[nic.model]
    assert net["options"]["auto_config"] is False
    for key, value in expected.items():
        assert net["options"][key] == value


def test_no_shared_insecure_key_anywhere():
    files = [*DEMOS.glob("*/Vagrantfile"), *DEMOS.glob("lib/*.rb"),
             *(ROOT / "templates" / "vagrant").glob("*.j2")]
    assert files
    for path in files:
        assert not INSECURE.search(path.read_text()), path
    for template in (ROOT / "templates" / "vagrant").glob("box-*.j2"):
        text = template.read_text()
        assert 'config.ssh.private_key_path = File.join(' in text
        assert "config.ssh.insert_key = false" in text
        assert 'config.ssh.shell = "sh"' in text
        assert 'config.vm.synced_folder ".", "/vagrant", disabled: true' in text


# --- vagrant validate: Vagrant's own and vagrant-libvirt's config validation -------------------

@pytest.fixture(scope="module")
def vagrant_env(tmp_path_factory):
    if VAGRANT is None:
        pytest.skip("vagrant is missing: apt-get install vagrant vagrant-libvirt")
    home = tmp_path_factory.mktemp("vagrant-home")
    env = dict(os.environ, VAGRANT_HOME=str(home), VAGRANT_CHECKPOINT_DISABLE="1")
    plugins = subprocess.run([VAGRANT, "plugin", "list"], capture_output=True, text=True,
                             env=env, timeout=120).stdout
    return env, "vagrant-libvirt" in plugins


@pytest.mark.parametrize("provider", ["libvirt", "virtualbox"])
@pytest.mark.parametrize("mode", MODES)
def test_vagrant_validate(vagrant_env, mode, provider, tmp_path):
    env, has_libvirt = vagrant_env
    if provider == "libvirt" and not has_libvirt:
        pytest.skip("the vagrant-libvirt plugin is missing: apt-get install vagrant-libvirt")
    if provider == "libvirt" and mode == "bridged":
        pytest.skip("vagrant-libvirt validates a public_network's bridge by asking libvirtd, "
                    "and no libvirtd may run outside a vnet sandbox")
    if provider == "virtualbox":
        # Vagrant's VirtualBox provider asks VBoxManage for its version before it validates;
        # tests/fakes/VBoxManage answers (it is NOT VirtualBox; only the config is checked).
        env = dict(env, PATH=f"{FAKES}{os.pathsep}{env.get('PATH', '')}",
                   VBOX_FAKE_STATE=str(tmp_path / "vbox-state"), VBOX_FAKE_PYTHON=sys.executable)
    shutil.copytree(DEMOS / "lib", tmp_path / "lib")       # validate writes .vagrant/ beside
    shutil.copytree(DEMOS / mode, tmp_path / mode)         # the Vagrantfile: not in the tree
    proc = subprocess.run([VAGRANT, "validate"], cwd=tmp_path / mode, capture_output=True,
                          text=True, timeout=120, env=dict(env, VAGRANT_DEFAULT_PROVIDER=provider))
    assert proc.returncode == 0, proc.stdout + proc.stderr
