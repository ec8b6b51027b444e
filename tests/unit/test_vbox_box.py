"""The VirtualBox box (`vnet image box --provider virtualbox`): box.ovf, the streamOptimized
VMDK, the boot ISO and its per-VM slot, imported by the VBoxManage stand-in.

The image and isolinux are FAKES (small files: no Debian download), but ssh-keygen, qemu-img,
pycdlib and Ruby are real. The OVF is checked against the structure the OVF envelope schema
(DMTF DSP8023) and the CIM schemas impose where vnet's box depends on it (ovf_problems below):
NOT against the schema files themselves, which are not available offline here."""
from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import tarfile
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from provisioner.guest import bootiso, images, vagrantbox
from provisioner.host import runner
from tests.conftest import ROOT

pycdlib = pytest.importorskip("pycdlib", reason="pycdlib is missing: pip install .")
FAKE_VBOX = ROOT / "tests" / "fakes" / "VBoxManage"
OVF = "{http://schemas.dmtf.org/ovf/envelope/1}"
RASD = "{http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData}"
VSSD = "{http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData}"
# The CIM schemas' xs:sequence orders (CIM_ResourceAllocationSettingData.xsd,
# CIM_VirtualSystemSettingData.xsd): properties in alphabetical order.
RASD_ORDER = ["Address", "AddressOnParent", "AllocationUnits", "AutomaticAllocation",
              "AutomaticDeallocation", "Caption", "Connection", "ConsumerVisibility",
              "Description", "ElementName", "HostResource", "InstanceID", "Limit",
              "MappingBehavior", "OtherResourceType", "Parent", "PoolID", "Reservation",
              "ResourceSubType", "ResourceType", "VirtualQuantity", "Weight"]
VSSD_ORDER = ["AutomaticRecoveryAction", "AutomaticShutdownAction", "AutomaticStartupAction",
              "AutomaticStartupActionDelay", "AutomaticStartupActionSequenceNumber", "Caption",
              "ConfigurationDataRoot", "ConfigurationFile", "ConfigurationID", "CreationTime",
              "Description", "ElementName", "InstanceID", "LogDataRoot", "Notes",
              "RecoveryFile", "SnapshotDataRoot", "SuspendDataRoot", "SwapFileDataRoot",
              "VirtualSystemIdentifier", "VirtualSystemType"]
# DSP8023 Envelope_Type: References, then sections (DiskSection, NetworkSection, ...), then
# the content (VirtualSystem or VirtualSystemCollection).
ENVELOPE_ORDER = ["References", "DiskSection", "NetworkSection", "VirtualSystem"]
needs_ruby = pytest.mark.skipif(shutil.which("ruby") is None,
                                reason="ruby is missing: apt-get install ruby (vagrant brings it)")


def ovf_problems(path: Path) -> list[str]:
    """The schema's structural rules that matter for this box, as a list of violations."""
    problems = []
    root = ET.parse(path).getroot()
    if root.tag != OVF + "Envelope":
        return [f"root is {root.tag}, not ovf:Envelope"]
    names = [child.tag.removeprefix(OVF) for child in root]
    if names != ENVELOPE_ORDER:
        problems.append(f"Envelope children {names}, schema order {ENVELOPE_ORDER}")
    files = {}
    for f in root.iterfind(f"{OVF}References/{OVF}File"):
        if not f.get(OVF + "id") or not f.get(OVF + "href"):
            problems.append("File without ovf:id or ovf:href (both required)")
        files[f.get(OVF + "id")] = f
        size = f.get(OVF + "size")
        if size is not None and int(size) != (path.parent / f.get(OVF + "href")).stat().st_size:
            problems.append(f"File {f.get(OVF + 'href')}: ovf:size {size} is not its size")
    for section in [*root.iterfind(f"{OVF}*")][1:] + root.findall(f"{OVF}VirtualSystem/{OVF}*"):
        if section.tag.endswith("Section") and (not len(section) or section[0].tag != OVF + "Info"):
            problems.append(f"{section.tag.removeprefix(OVF)} does not start with its Info")
    disks = {}
    for d in root.iterfind(f"{OVF}DiskSection/{OVF}Disk"):
        for attr in ("diskId", "capacity"):          # required by DSP8023's VirtualDiskDesc_Type
            if d.get(OVF + attr) is None:
                problems.append(f"Disk without ovf:{attr}")
        if d.get(OVF + "fileRef") not in files:
            problems.append(f"Disk {d.get(OVF + 'diskId')}: fileRef names no File")
        disks[d.get(OVF + "diskId")] = d
    networks = {n.get(OVF + "name") for n in root.iterfind(f"{OVF}NetworkSection/{OVF}Network")}
    system = root.find(f"{OVF}VirtualSystem")
    if not system.get(OVF + "id"):
        problems.append("VirtualSystem without ovf:id (required)")
    vhs = system.find(f"{OVF}VirtualHardwareSection")
    vssd = [c.tag.removeprefix(VSSD) for c in vhs.find(f"{OVF}System")]
    if vssd != sorted(vssd, key=VSSD_ORDER.index):
        problems.append(f"System's vssd elements out of schema order: {vssd}")
    ids = {}
    for item in vhs.iterfind(f"{OVF}Item"):
        rasd = [c.tag.removeprefix(RASD) for c in item]
        if any(name not in RASD_ORDER for name in rasd) or rasd != sorted(rasd, key=RASD_ORDER.index):
            problems.append(f"Item's rasd elements out of schema order: {rasd}")
        if "InstanceID" not in rasd or "ResourceType" not in rasd:
            problems.append(f"Item without InstanceID or ResourceType: {rasd}")
        iid = item.findtext(RASD + "InstanceID")
        if iid in ids:
            problems.append(f"duplicate InstanceID {iid}")
        ids[iid] = item
    for iid, item in ids.items():
        parent = item.findtext(RASD + "Parent")
        if parent is not None and parent not in ids:
            problems.append(f"Item {iid}: Parent {parent} names no Item")
        host = item.findtext(RASD + "HostResource")
        if host is not None and host.removeprefix("ovf:").removeprefix("/disk/") not in disks:
            problems.append(f"Item {iid}: HostResource {host} names no Disk")
        connection = item.findtext(RASD + "Connection")
        if connection is not None and connection not in networks:
            problems.append(f"Item {iid}: Connection {connection} names no Network")
    return problems


@pytest.fixture
def box_dir(tmp_path, monkeypatch):
    """`vagrantbox.build("virtualbox")` with a fake image and isolinux, unpacked."""
    folder = tmp_path / "image"
    folder.mkdir()
    (folder / "vmlinuz").write_bytes(b"FAKE bzImage " * 1000)
    (folder / "vmlinux").write_bytes(b"FAKE vmlinux")
    (folder / "initrd.gz").write_bytes(b"FAKE initramfs " * 300)
    with open(folder / "root.ext4", "wb") as disk:         # a sparse 64 MiB raw disk
        disk.truncate(64 << 20)
        disk.write(b"FAKE ext4 superblock")
    image = images.Image("tiny", "fakedigest", folder / "vmlinux", folder / "initrd.gz",
                         folder / "root.ext4", "console=ttyS0 quiet panic=-1", folder / "vmlinuz")
    loader = tmp_path / "loader"
    loader.mkdir()
    (loader / "isolinux.bin").write_bytes(b"FAKE isolinux.bin".ljust(4096, b"\x90"))
    (loader / "ldlinux.c32").write_bytes(b"FAKE ldlinux.c32")
    monkeypatch.setattr(images, "build_tiny", lambda progress: image)
    monkeypatch.setattr(bootiso, "isolinux_dir", lambda progress=None: loader)
    monkeypatch.setenv("VNET_CACHE_DIR", str(tmp_path / "cache"))
    real_run, staged_in = runner.run, []

    def run(argv, *args, **kwargs):
        if argv[0] == "ssh-keygen":
            staged_in.append(Path(argv[argv.index("-f") + 1]).parent.parent)
        return real_run(argv, *args, **kwargs)
    monkeypatch.setattr(runner, "run", run)
    box = vagrantbox.build("virtualbox", tmp_path / "boxes", progress=lambda m: None)
    # staged in vnet's cache: whoever can write to --out could swap a staging directory there
    assert staged_in == [tmp_path / "cache" / "box-staging"], staged_in
    assert [p.name for p in (tmp_path / "boxes").iterdir()] == [box.path.name]
    out = tmp_path / "box"
    with tarfile.open(box.path) as tar:
        tar.extractall(out, filter="data")
    return out


def read_cfg(iso_path: Path) -> str:
    iso = pycdlib.PyCdlib()
    iso.open(str(iso_path))
    try:
        data = io.BytesIO()
        iso.get_file_from_iso_fp(data, iso_path="/ISOLINUX/ISOLINUX.CFG;1")
        assert iso.eltorito_boot_catalog is not None          # still bootable
        return data.getvalue().decode()
    finally:
        iso.close()


def test_the_box_holds_the_ovf_the_vmdk_and_the_boot_iso(box_dir):
    assert sorted(p.name for p in box_dir.iterdir()) == [
        "Vagrantfile", "boot.iso", "box-disk001.vmdk", "box.ovf", "metadata.json",
        "vagrant_private_key"]
    assert json.loads((box_dir / "metadata.json").read_text()) == {"provider": "virtualbox"}
    info = json.loads(subprocess.run(["qemu-img", "info", "--output", "json",
                                      str(box_dir / "box-disk001.vmdk")], capture_output=True,
                                     text=True, check=True).stdout)
    assert info["format"] == "vmdk" and info["virtual-size"] == 64 << 20
    assert info["format-specific"]["data"]["create-type"] == "streamOptimized"
    cfg = read_cfg(box_dir / "boot.iso")
    append = bootiso.append_line(cfg)
    assert append.startswith("console=ttyS0 quiet panic=-1 vnet.key=ssh-ed25519:")
    assert f"vnet.host=vnet-tiny vnet.if={vagrantbox.BASE_MAC},dhcp" in append
    assert cfg.count(vagrantbox.default_slot()) == 1


def test_the_ovf_keeps_the_envelope_schemas_structure(box_dir):
    assert ovf_problems(box_dir / "box.ovf") == []


def test_the_structural_checks_catch_what_the_schema_forbids(box_dir):
    """Each check can fail: break the OVF one way at a time."""
    text = (box_dir / "box.ovf").read_text()
    broken = {
        "rasd elements out of schema order": text.replace(
            "<rasd:Caption>sataController0</rasd:Caption>\n        <rasd:Description>",
            "<rasd:Description>SATA</rasd:Description>\n        <rasd:Caption>sataController0"
            "</rasd:Caption>\n        <rasd:Description>"),
        "names no Disk": text.replace("/disk/iso2", "/disk/iso9"),
        "names no Item": text.replace("<rasd:Parent>3</rasd:Parent>", "<rasd:Parent>9</rasd:Parent>", 1),
        "fileRef names no File": text.replace('ovf:fileRef="file2"', 'ovf:fileRef="file7"'),
        "is not its size": text.replace('ovf:id="file1" ovf:size="', 'ovf:id="file1" ovf:size="1'),
        "does not start with its Info": text.replace(
            "<Info>Logical networks used in the package</Info>", ""),
    }
    for why, variant in broken.items():
        bad = box_dir / "bad.ovf"
        bad.write_text(variant)
        assert any(why in p for p in ovf_problems(bad)), why


def vbox(tmp_path, *args) -> subprocess.CompletedProcess:
    env = dict(os.environ, VBOX_FAKE_STATE=str(tmp_path / "vbox.json"), HOME=str(tmp_path))
    return subprocess.run([str(FAKE_VBOX), *args], capture_output=True, text=True, env=env,
                          timeout=60)


def test_the_vboxmanage_stand_in_imports_the_box(box_dir, tmp_path):
    """As Vagrant's VirtualBox provider does: a dry run for the suggested name and disks, then
    the import under the machine's own name."""
    ovf = str(box_dir / "box.ovf")
    dry = vbox(tmp_path, "import", ovf, "-n")
    assert dry.returncode == 0, dry.stderr
    assert 'Suggested VM name "vnet-tiny"' in dry.stdout
    assert "Hard disk image: source image=box-disk001.vmdk" in dry.stdout
    done = vbox(tmp_path, "import", ovf, "--vsys", "0", "--vmname", "natnetwork_vm1_1")
    assert done.returncode == 0, done.stderr
    info = vbox(tmp_path, "showvminfo", "natnetwork_vm1_1", "--machinereadable").stdout
    assert 'ostype="Linux26_64"' in info and "memory=128" in info
    assert 'nic1="nat"' in info and 'nictype1="82540EM"' in info
    assert '"SATA Controller-0-0"=' in info or 'SATA Controller-0-0="' in info
    assert info.count("box-disk001.vmdk") == 1 and info.count("boot.iso") == 1
    again = vbox(tmp_path, "import", ovf, "--vsys", "0", "--vmname", "natnetwork_vm1_1")
    assert again.returncode == 1 and "already exists" in again.stderr


def test_the_stand_in_refuses_an_ovf_virtualbox_would_refuse(box_dir, tmp_path):
    (box_dir / "boot.iso").unlink()
    refused = vbox(tmp_path, "import", str(box_dir / "box.ovf"))
    assert refused.returncode == 1 and "Cannot find the file 'boot.iso'" in refused.stderr


RUBY_BOX = """
module Vagrant
  def self.configure(_version); end
end
load ARGV[0]
args = ARGV[3..]
puts VnetTinyBox.boot_iso(ARGV[1], ARGV[2], *args)
"""


def per_vm_iso(box_dir: Path, out: Path, name: str, *ifs: str) -> subprocess.CompletedProcess:
    script = box_dir.parent / "per_vm.rb"
    script.write_text(RUBY_BOX)
    return subprocess.run(["ruby", str(script), str(box_dir / "Vagrantfile"), str(out), name,
                           *ifs], capture_output=True, text=True, timeout=60)


@needs_ruby
def test_each_vm_gets_its_own_boot_iso_and_it_attaches_and_starts(box_dir, tmp_path):
    iso = tmp_path / "project" / ".vagrant" / "vnet-boot-vm1.iso"
    nic = "08:00:27:16:00:0a,static,192.168.56.10/24"
    made = per_vm_iso(box_dir, iso, "vm1", nic)
    assert made.returncode == 0, made.stderr
    assert iso.stat().st_size == (box_dir / "boot.iso").stat().st_size
    append = bootiso.append_line(read_cfg(iso))
    key = bootiso.append_line(read_cfg(box_dir / "boot.iso")).split(" vnet.host=")[0]
    assert append.split(" vnet.host=")[0] == key                 # the box's key stays
    assert append.split() == [*key.split(), "vnet.host=vm1",
                              f"vnet.if={vagrantbox.BASE_MAC},dhcp", f"vnet.if={nic}"]
    for step in (["import", str(box_dir / "box.ovf"), "--vsys", "0", "--vmname", "vm1"],
                 ["storageattach", "vm1", "--storagectl", "SATA Controller", "--port", "1",
                  "--device", "0", "--type", "dvddrive", "--medium", str(iso)],
                 ["modifyvm", "vm1", "--boot1", "dvd", "--boot2", "disk", "--boot3", "none",
                  "--boot4", "none"],
                 ["startvm", "vm1", "--type", "headless"]):
        ran = vbox(tmp_path, *step)
        assert ran.returncode == 0, (step, ran.stderr)
    info = vbox(tmp_path, "showvminfo", "vm1", "--machinereadable").stdout
    assert str(iso) in info and 'boot1="dvd"' in info and 'VMState="running"' in info


@needs_ruby
def test_a_command_line_over_the_slot_is_refused(box_dir, tmp_path):
    many = [f"08:00:27:00:00:{i:02x},static,192.168.56.{i}/24" for i in range(20)]
    made = per_vm_iso(box_dir, tmp_path / "x.iso", "vm1", *many)
    assert made.returncode != 0 and f"over {vagrantbox.SLOT} bytes" in made.stderr
    assert not (tmp_path / "x.iso").exists()


@needs_ruby
def test_the_box_vagrantfile_customizes_only_through_the_virtualbox_provider(box_dir):
    text = (box_dir / "Vagrantfile").read_text()
    assert 'config.vm.base_mac = "0800275e0001"' in text
    assert '"--boot1", "dvd", "--boot2", "disk"' in text
    assert subprocess.run(["ruby", "-c", str(box_dir / "Vagrantfile")],
                          capture_output=True).returncode == 0


@needs_ruby
def test_every_demo_gives_its_virtualbox_machines_their_own_boot_iso():
    """Rendered by the Vagrant recorder: each demo's VirtualBox machine asks the box for its own
    boot ISO with exactly the lab NIC's vnet.if that its libvirt side puts on the command line."""
    from provisioner.lab import modes

    for mode in modes.names():
        proc = subprocess.run(["ruby", str(ROOT / "tests" / "fakes" / "vagrant_recorder.rb"),
                               str(ROOT / "vagrant" / mode / "Vagrantfile")],
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        (config,) = json.loads(proc.stdout)
        for name, machine in config["vm"]["machines"].items():
            providers = machine["vm"]["providers"]
            calls = [c["args"] for c in providers["virtualbox"]["provider"]["calls"]
                     if c["method"] == "vnet_boot_iso"]
            assert len(calls) == 1, (mode, name)
            vm_name, *ifs = calls[0]
            assert vm_name == name and ifs
            line = providers["libvirt"]["provider"]["settings"]["cmd_line"]
            assert all(f"vnet.if={value}" in line.split() for value in ifs), (mode, line, ifs)


RUBY_MACHINE = """
require "json"
module Vagrant
  def self.configure(_version); end
end
load ARGV[0]
class FakeVb
  attr_reader :calls
  def initialize; @calls = []; end
  def customize(args); @calls << args.map { |a| a == :id ? "ID" : a }; end
end
vb = FakeVb.new
VnetTinyBox.virtualbox(vb, ARGV[1], "vm1")
puts JSON.generate(vb.calls)
"""


@needs_ruby
def test_each_vm_writes_its_serial_console_where_vnet_reads_it(box_dir, tmp_path):
    """The console, as for the libvirt demos, in the project's .vagrant/VM.serial.log
    (ops/vagrant.py reads it: the echo's VNET-LISTEN stamps, verify/refusals.py)."""
    import json

    script = tmp_path / "machine.rb"
    script.write_text(RUBY_MACHINE)
    project = tmp_path / "project"
    ran = subprocess.run(["ruby", str(script), str(box_dir / "Vagrantfile"), str(project)],
                         capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran.stderr
    assert ["modifyvm", "ID", "--uart1", "0x3F8", "4", "--uartmode1", "file",
            str(project / ".vagrant" / "vm1.serial.log")] in json.loads(ran.stdout)
