"""`vnet image box` rendering and `vnet verify --vagrant`'s inventory, without Vagrant or VMs."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from provisioner.lab import loader as labfile
from provisioner.ops import vagrant
from provisioner.guest import vagrantbox
from provisioner.verify import ansible as guest_ansible, run as verifier
from provisioner.cli import main
from provisioner.errors import LabFileError, NotFound, Unsupported
from provisioner.lab.model import Backend
from provisioner.host.state import Target
from tests.conftest import ROOT

PUBKEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl vnet-box"
SSH_CONFIG = """\
Host vm1
  HostName 192.168.121.210
  User root
  Port 22
  UserKnownHostsFile /dev/null
  StrictHostKeyChecking no
  PasswordAuthentication no
  IdentityFile "/tmp/vh/boxes/vnet-VAGRANTSLASH-tiny/0/libvirt/vagrant_private_key"
  IdentitiesOnly yes
  LogLevel FATAL

Host vm2
  HostName 192.168.121.64
  User root
  Port 2200
  IdentityFile /tmp/vh/boxes/vnet-VAGRANTSLASH-tiny/0/libvirt/vagrant_private_key
"""


# --- the box ------------------------------------------------------------------------------------

def render(provider="libvirt"):
    return vagrantbox.render_vagrantfile(provider, digest="0123456789abcdef",
                                         cmdline_base="console=ttyS0 quiet panic=-1",
                                         pubkey=PUBKEY, accel="qemu")


def test_libvirt_box_boots_the_kernel_directly_with_its_own_key():
    text = render()
    key = PUBKEY.split()[1]
    assert f'"console=ttyS0 quiet panic=-1", "vnet.key=ssh-ed25519:{key}"' in text
    for line in ('libvirt.kernel = File.join(VnetTinyBox.dir, "vmlinux")',
                 'libvirt.initrd = File.join(VnetTinyBox.dir, "initrd.gz")',
                 "libvirt.cmd_line = VnetTinyBox.cmdline",
                 'config.ssh.private_key_path = File.join(VnetTinyBox.dir, "vagrant_private_key")',
                 "config.ssh.insert_key = false", 'config.ssh.shell = "sh"',
                 'config.vm.synced_folder ".", "/vagrant", disabled: true',
                 "config.vm.allow_fstab_modification = false", "config.vm.guest = :linux",
                 'libvirt.driver = ENV.fetch("VNET_ACCEL", "qemu")',
                 'libvirt.random model: "random"'):
        assert line in text
    assert "insecure" not in text.replace("insecure key is never accepted", "")


def test_virtualbox_box_boots_its_per_vm_iso_with_its_own_key():
    text = render("virtualbox")
    key = PUBKEY.split()[1]
    assert ":virtualbox" in text and "RENDERED ONLY" not in text
    assert '"--storagectl", "SATA Controller", "--port", "1"' in text
    assert f"SLOT = {vagrantbox.SLOT}" in text and "insert_key = false" in text
    assert vagrantbox.box_cmdline("console=ttyS0", PUBKEY).startswith(
        f"console=ttyS0 vnet.key=ssh-ed25519:{key} vnet.host=vnet-tiny")
    assert vagrantbox.metadata("virtualbox") == {"provider": "virtualbox"}


def test_metadata_is_vagrant_libvirt_box_format_v1():
    assert vagrantbox.metadata("libvirt") == {"provider": "libvirt", "format": "qcow2",
                                              "virtual_size": 1}


def test_unknown_provider_is_refused_with_the_choices():
    with pytest.raises(Unsupported, match="libvirt, virtualbox"):
        render("hyperv")


def test_ruby_string_cannot_interpolate():
    assert vagrantbox.ruby_string('a"#{x}') == '"a\\"\\#{x}"'


@pytest.mark.skipif(shutil.which("ruby") is None,
                    reason="ruby is missing: apt-get install ruby (vagrant brings it)")
@pytest.mark.parametrize("provider", vagrantbox.PROVIDERS)
def test_box_vagrantfile_is_valid_ruby(provider, tmp_path):
    path = tmp_path / "Vagrantfile"
    path.write_text(render(provider))
    proc = subprocess.run(["ruby", "-c", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_image_box_is_a_command():
    result = CliRunner().invoke(main, ["image", "box", "--help"])
    assert result.exit_code == 0 and "--provider [libvirt|virtualbox]" in result.output


# --- verify --vagrant ------------------------------------------------------------------------------

def test_parse_ssh_config():
    machines = vagrant.parse_ssh_config(SSH_CONFIG)
    assert sorted(machines) == ["vm1", "vm2"]
    assert machines["vm1"]["hostname"] == "192.168.121.210"
    assert machines["vm1"]["identityfile"].endswith("/libvirt/vagrant_private_key")
    assert machines["vm2"]["port"] == "2200"


def demo_lab():
    return vagrant.load_lab(ROOT / "vagrant" / "natnetwork")


def test_hosts_come_from_ssh_config():
    hosts = vagrant.hosts_from(demo_lab(), vagrant.parse_ssh_config(SSH_CONFIG))
    assert hosts["vm2"] == {"ansible_host": "192.168.121.64", "ansible_port": 2200,
                            "ansible_user": "root", "ansible_ssh_private_key_file":
                            "/tmp/vh/boxes/vnet-VAGRANTSLASH-tiny/0/libvirt/vagrant_private_key"}


def test_a_lab_vm_without_a_vagrant_machine_is_named():
    machines = vagrant.parse_ssh_config(SSH_CONFIG.split("Host vm2")[0])
    with pytest.raises(NotFound, match="vm2.*Vagrant has: vm1"):
        vagrant.hosts_from(demo_lab(), machines)


def test_a_project_without_vnet_yaml_is_refused(tmp_path):
    (tmp_path / "Vagrantfile").write_text("")
    with pytest.raises(LabFileError, match="vnet.yaml"):
        vagrant.load_lab(tmp_path)
    with pytest.raises(NotFound, match="no Vagrantfile"):
        vagrant.load_lab(tmp_path / "missing")


def test_ssh_config_runs_on_the_sandbox_host(monkeypatch):
    from provisioner.host import sandbox

    monkeypatch.setattr(sandbox, "load", sandbox.describe)
    argv = vagrant.ssh_config_argv("s1")
    assert argv[:4] == ["ip", "netns", "exec", "vnet-s1-host"]
    assert argv[-2:] == ["vagrant", "ssh-config"]
    assert vagrant.ssh_config_argv(None) == ["vagrant", "ssh-config"]


def test_verify_needs_a_lab_or_a_vagrant_project():
    result = CliRunner().invoke(main, ["verify"])
    assert result.exit_code == 2 and "LAB_NAME, or --vagrant DIR" in result.output


def test_ansible_inventory_comes_from_the_pluggable_inventory(monkeypatch, tmp_path):
    """verify.py's Ansible run takes hosts from the Inventory it is given (vagrant ssh-config
    here), and still gives every guest only probes bound to the NIC under test."""
    monkeypatch.setenv("VNET_STATE_DIR", str(tmp_path / "state"))
    seen = {}
    lab = demo_lab()
    inv = verifier.Inventory(
        hosts=vagrant.hosts_from(lab, vagrant.parse_ssh_config(SSH_CONFIG)),
        mgmt_host_ip="192.168.121.1", work_dir=tmp_path / "work", source="vagrant ssh-config")
    from provisioner.verify import checks

    ends = checks.Endpoints(host_listener_port=20000, internet_ip="203.0.113.1",
                            host_uplink_ip="203.0.113.2", mgmt_host_ip=inv.mgmt_host_ip)
    cells = checks.build(lab, Backend.LIBVIRT, ends)
    guest_ansible.run_guests(lab, Target(uri="qemu:///system"), cells, inv, lambda _m: None,
                             playbook=lambda private, playbook, inventory, env:     # FAKE run
                             seen.update(inventory) or {})
    hosts = seen["all"]["hosts"]
    assert hosts["vm1"]["ansible_host"] == "192.168.121.210"
    assert hosts["vm2"]["ansible_port"] == 2200
    macs = {vm.name: vm.nics[0].mac for vm in lab.vms}
    for vm, host in hosts.items():
        assert host["vnet_probes"] and all(p["bind_mac"] == macs[vm] for p in host["vnet_probes"])
    json.dumps(seen)     # ansible-runner writes it as JSON


def test_lab_record_inventory_is_unchanged(monkeypatch, tmp_path):
    """A lab vnet created is still reached over its own management network and key."""
    monkeypatch.setenv("VNET_STATE_DIR", str(tmp_path))
    from provisioner.host import state

    target = Target(uri="qemu:///system")
    lab = labfile.resolve({"name": "demo", "networks": [{"name": "n", "mode": "hostonly"}],
                           "vms": [{"name": "a", "nics": [{"network": "n"}]}]})
    state.save(target, "demo", {"mgmt": {"a": "100.64.9.10"}})
    monkeypatch.setattr(state, "ssh_key", lambda t, n: (Path("/k/id_ed25519"), "ssh-ed25519 X"))
    inv = verifier.lab_inventory(lab, target)
    assert inv.hosts == {"a": {"ansible_host": "100.64.9.10", "ansible_user": "root",
                               "ansible_ssh_private_key_file": "/k/id_ed25519"}}
    assert inv.work_dir == state.lab_dir(target, "demo") and inv.source == "vnet"
