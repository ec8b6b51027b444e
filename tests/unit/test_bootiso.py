"""The per-VM boot ISO (provisioner/guest/bootiso.py) and the shared guest command line
(provisioner/guest/cmdline.py): no network, no root, no QEMU.

The kernel, initramfs and isolinux.bin/ldlinux.c32 here are FAKE bytes; the ISO is a real ISO
9660 file written by pycdlib and read back with pycdlib. That the real files boot (BIOS ->
isolinux -> kernel -> SATA root) is shown in tests/integration/test_vbox_boot_iso.py."""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import io
import json
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from provisioner.guest import bootiso, cmdline as guestcmdline, images
from provisioner.host import runner
from provisioner.lab import loader as labfile
from provisioner.drivers.virtualbox import render as vbox_render
from provisioner.drivers.libvirt.render import Context, LibvirtRenderer, mgmt_mac
from provisioner.drivers.virtualbox.render import VBoxContext, VirtualBoxRenderer
from provisioner.errors import VnetError
from provisioner.host.runner import Result

pycdlib = pytest.importorskip("pycdlib", reason="pycdlib is missing: pip install -e .")

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBootIsoTestKey vnet-t"
CMDLINE = ("console=ttyS0 quiet panic=-1 vnet.host=vm1 vnet.key=ssh-ed25519:AAAAC3Nza "
           "vnet.if=52:54:00:12:34:56,static,10.0.2.15/24,10.0.2.2")
MODES = ("nat", "natnetwork", "hostonly", "internal", "bridged")


@pytest.fixture
def image(tmp_path):
    folder = tmp_path / "image"
    folder.mkdir()
    (folder / "vmlinuz").write_bytes(b"FAKE bzImage " * 1000)
    (folder / "initrd.gz").write_bytes(b"FAKE initramfs " * 300)
    return images.Image("tiny", "fake", folder / "vmlinux", folder / "initrd.gz",
                        folder / "root.ext4", "console=ttyS0 quiet panic=-1", folder / "vmlinuz")


@pytest.fixture
def loader(tmp_path):
    folder = tmp_path / "loader"
    folder.mkdir()
    (folder / "isolinux.bin").write_bytes(b"FAKE isolinux.bin".ljust(4096, b"\x90"))
    (folder / "ldlinux.c32").write_bytes(b"FAKE ldlinux.c32")
    return folder


class Iso:
    """An ISO read back with pycdlib."""

    def __init__(self, path: Path):
        self.iso = pycdlib.PyCdlib()
        self.iso.open(str(path))

    def read(self, path: str) -> bytes:
        out = io.BytesIO()
        self.iso.get_file_from_iso_fp(out, iso_path=path)
        return out.getvalue()

    def rr_names(self, folder: str) -> set[str]:
        return {child.rock_ridge.name().decode()
                for child in self.iso.list_children(iso_path=folder)
                if not (child.is_dot() or child.is_dotdot())}

    def close(self):
        self.iso.close()


@pytest.fixture
def read_iso():
    opened = []

    def open_(path):
        opened.append(Iso(path))
        return opened[-1]
    yield open_
    for iso in opened:
        iso.close()


# ---------------------------------------------------------------- the ISO

def test_the_iso_holds_isolinux_the_kernel_and_the_initrd(image, loader, tmp_path, read_iso):
    out = bootiso.build(image, CMDLINE, tmp_path / "vm1.boot.iso", loader=loader)
    iso = read_iso(out)
    assert iso.rr_names("/") == {"isolinux", "vmlinuz", "initrd.gz"}
    assert iso.rr_names("/ISOLINUX") == {"isolinux.bin", "ldlinux.c32", "isolinux.cfg",
                                         "boot.cat"}
    assert iso.read("/VMLINUZ.;1") == image.vmlinuz.read_bytes()
    assert iso.read("/INITRD.GZ;1") == image.initrd.read_bytes()
    assert iso.read("/ISOLINUX/LDLINUX.C32;1") == b"FAKE ldlinux.c32"
    cfg = iso.read("/ISOLINUX/ISOLINUX.CFG;1").decode()
    assert cfg == ("SERIAL 0 115200\nDEFAULT vnet\nPROMPT 0\nLABEL vnet\n  KERNEL /vmlinuz\n"
                   f"  APPEND initrd=/initrd.gz {CMDLINE}\n")
    assert bootiso.append_line(cfg) == CMDLINE
    assert iso.iso.pvd.volume_identifier.decode().strip() == "VNETBOOT"


def test_the_iso_has_an_el_torito_no_emulation_boot_catalog(image, loader, tmp_path, read_iso):
    out = bootiso.build(image, CMDLINE, tmp_path / "vm1.boot.iso", loader=loader)
    iso = read_iso(out)
    catalog = iso.iso.eltorito_boot_catalog
    assert catalog is not None
    entry = catalog.initial_entry
    assert entry.boot_indicator == 0x88                      # bootable
    assert entry.boot_media_type == 0                        # no emulation
    assert entry.sector_count == 4                           # boot_load_size=4 (4 x 512 bytes)
    assert catalog.validation_entry.platform_id == 0         # x86 BIOS
    boot = iso.iso.get_record(iso_path="/ISOLINUX/ISOLINUX.BIN;1")
    assert entry.load_rba == boot.extent_location()
    raw = out.read_bytes()
    # the boot info table (bytes 8..63 of isolinux.bin, written by boot_info_table=True):
    # the primary volume descriptor's sector, the boot file's sector, its length, a checksum
    patched = raw[boot.extent_location() * 2048:][:len(b"FAKE isolinux.bin".ljust(4096, b"\x90"))]
    pvd, lba, length, checksum = struct.unpack_from("<IIII", patched, 8)
    assert (pvd, lba, length) == (16, boot.extent_location(), 4096)
    assert checksum == sum(struct.unpack_from("<1008I", patched, 64)) & 0xFFFFFFFF
    assert raw[17 * 2048 + 7:17 * 2048 + 30] == b"EL TORITO SPECIFICATION"


def test_a_rebuild_with_the_same_inputs_keeps_the_iso(image, loader, tmp_path):
    out = bootiso.build(image, CMDLINE, tmp_path / "vm1.boot.iso", loader=loader)
    first = (out.stat().st_ino, out.stat().st_mtime_ns, hashlib.sha256(out.read_bytes()).digest())
    bootiso.build(image, CMDLINE, out, loader=loader)
    assert (out.stat().st_ino, out.stat().st_mtime_ns,
            hashlib.sha256(out.read_bytes()).digest()) == first
    bootiso.build(image, CMDLINE + " vnet.console=shell", out, loader=loader)
    assert out.stat().st_ino != first[0]                     # a changed input: written again
    image.initrd.write_bytes(b"another initramfs")
    second = out.stat().st_ino
    bootiso.build(image, CMDLINE + " vnet.console=shell", out, loader=loader)
    assert out.stat().st_ino != second
    out.write_bytes(b"garbage")                              # not an ISO: written again
    bootiso.build(image, CMDLINE, out, loader=loader)
    assert out.read_bytes()[0x8001:0x8006] == b"CD001"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []   # no temp left


def test_an_image_without_a_bzimage_is_refused(image, loader, tmp_path):
    old = images.Image(*[getattr(image, f) for f in ("name", "digest", "kernel", "initrd",
                                                     "rootdisk", "cmdline_base")])
    assert old.vmlinuz is None
    with pytest.raises(VnetError, match="has no bzImage `vmlinuz`") as err:
        bootiso.build(old, CMDLINE, tmp_path / "x.iso", loader=loader)
    assert err.value.hint == "run `vnet image build --force`"
    with pytest.raises(VnetError, match="newline"):
        bootiso.isolinux_cfg("a\nDEFAULT evil")


def test_an_image_manifest_names_its_bzimage(tmp_path):
    folder = tmp_path / "tiny-x"
    folder.mkdir()
    manifest = {"name": "tiny", "digest": "x", "kernel": "vmlinux", "initrd": "initrd.gz",
                "rootdisk": "root.ext4", "cmdline_base": "console=ttyS0", "vmlinuz": "vmlinuz"}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    assert images._load(folder).vmlinuz == folder / "vmlinuz"
    del manifest["vmlinuz"]                                  # built before boot ISOs
    (folder / "manifest.json").write_text(json.dumps(manifest))
    assert images._load(folder).vmlinuz is None
    assert {"ahci", "sd_mod"} <= set(images.MODULES)


# ---------------------------------------------------------------- the command line

def lab_data(mode: str, model: str) -> dict:
    net: dict = {"name": "n1", "mode": mode}
    if mode == "natnetwork":
        net["subnet"] = "192.168.150.0/24"
    elif mode == "hostonly":
        net["subnet"] = "192.168.56.0/24"
    elif mode == "bridged":
        net.update(bridge="br0", subnet="198.51.100.0/24", dhcp=False)
    elif mode == "internal":
        net["subnet"] = "10.9.0.0/24"
    return {"name": "t", "networks": [net, {"name": "back", "mode": "internal"}], "vms": [
        {"name": "a", "nics": [{"network": "n1", "model": model, "mac": "52:54:00:aa:bb:01"},
                               {"network": "back", "model": model}]},
        {"name": "b", "nics": [{"network": "n1", "model": model, "mac": "52:54:00:aa:bb:02"}]}]}


def libvirt_cmdlines(lab) -> dict[str, str]:
    plan = LibvirtRenderer(Context(ssh_pubkey=KEY, log_dir="/state/t")).plan(lab)
    found = {}
    for doc in plan.documents:
        if doc.kind == "domain":
            vm = doc.name.removeprefix("vnet-t-")
            found[vm] = re.search(r"<cmdline>(.*)</cmdline>", doc.text).group(1)
    return found


@pytest.mark.parametrize("model", ["virtio", "e1000"])
@pytest.mark.parametrize("mode", MODES)
def test_virtualbox_gets_libvirts_cmdline_with_its_own_management_address(mode, model, tmp_path,
                                                                            image, loader, read_iso):
    lab = labfile.resolve(copy.deepcopy(lab_data(mode, model)))
    vbox = VirtualBoxRenderer(VBoxContext(ssh_pubkey=KEY, serial_dir=str(tmp_path))).plan(lab)
    for i, (vm, line) in enumerate(libvirt_cmdlines(lab).items()):
        mgmt = f"vnet.if={mgmt_mac('t', vm)},static,"
        assert sum(arg.startswith(mgmt) for arg in line.split()) == 1
        ours = f"{mgmt}192.168.63.{10 + i}/24"         # same MAC, VirtualBox's mgmt_subnet
        qemu_only = guestcmdline.QEMU_PC_ARGS.split()     # QEMU's pc machine, not VirtualBox
        assert all(arg in line.split() for arg in qemu_only)
        expected = " ".join(ours if arg.startswith(mgmt) else arg for arg in line.split()
                            if arg not in qemu_only)
        boot = vbox.extra["boot"][vm]
        assert boot["cmdline"].split()[-1] == ours and vbox.extra["mgmt"][vm] == f"192.168.63.{10 + i}"
        if mode == "natnetwork":   # VirtualBox's NAT-network DHCP cannot pin addresses
            nic = lab.vm(vm).nics[0]
            assert f"vnet.if={nic.mac},static,{nic.ip}," in boot["cmdline"]
            expected = expected.replace(f"vnet.if={nic.mac},dhcp,",
                                        f"vnet.if={nic.mac},static,{nic.ip},")
        assert boot["cmdline"] == expected
        assert boot["cmdline"] == guestcmdline.cmdline(
            "console=ttyS0 quiet panic=-1", lab, lab.vm(vm), KEY,
            management=ours[len("vnet.if="):], static_modes=vbox_render.static_on_virtualbox())
        assert "vnet.key=ssh-ed25519:AAAAC3NzaC1lZDI1NTE5AAAAIBootIsoTestKey" in boot["cmdline"]
        assert boot["iso"] == str(tmp_path / f"{vm}.boot.iso")
    iso = bootiso.build(image, vbox.extra["boot"]["a"]["cmdline"],
                        Path(vbox.extra["boot"]["a"]["iso"]), loader=loader)
    cfg = read_iso(iso).read("/ISOLINUX/ISOLINUX.CFG;1").decode()
    assert bootiso.append_line(cfg) == vbox.extra["boot"]["a"]["cmdline"]


def test_if_arg_covers_dhcp_static_and_no_address():
    nat = labfile.resolve(copy.deepcopy(lab_data("natnetwork", "virtio")))
    assert guestcmdline.if_arg(nat, nat.vm("a").nics[0]) == \
        "vnet.if=52:54:00:aa:bb:01,dhcp,192.168.150.1"
    lab = labfile.resolve(copy.deepcopy(lab_data("bridged", "virtio")))
    a = lab.vm("a")
    assert guestcmdline.if_arg(lab, a.nics[0]) == \
        "vnet.if=52:54:00:aa:bb:01,static,198.51.100.10/24"
    assert guestcmdline.if_arg(lab, a.nics[1]) == \
        "vnet.if=52:54:00:71:ea:8c,static,192.168.150.10/24"
    assert guestcmdline.if_arg(lab, dataclasses.replace(a.nics[1], ip=None)) is None
    assert LibvirtRenderer._if_arg(lab, a.nics[0]) == guestcmdline.if_arg(lab, a.nics[0])
    assert guestcmdline.key_arg(KEY) == \
        "vnet.key=ssh-ed25519:AAAAC3NzaC1lZDI1NTE5AAAAIBootIsoTestKey"


# ---------------------------------------------------------------- isolinux from Debian

def _deb(tmp: Path, name: str, files: dict[str, bytes]) -> Path:
    root = tmp / f"pkg-{name}"
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    (root / "DEBIAN").mkdir()
    (root / "DEBIAN" / "control").write_text(
        f"Package: {name}\nVersion: 1\nArchitecture: all\nMaintainer: t <t@t>\n"
        f"Description: FAKE {name} for the test\n")
    out = tmp / f"{name}_1_all.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-b", str(root), str(out)], check=True,
                   capture_output=True)
    return out


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="dpkg-deb (dpkg) is not installed")
def test_isolinux_comes_from_the_two_debian_packages_and_is_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("VNET_CACHE_DIR", str(tmp_path / "cache"))
    debdir = tmp_path / "cache" / "debs"
    debdir.mkdir(parents=True)
    debs = [_deb(tmp_path, "isolinux", {"usr/lib/ISOLINUX/isolinux.bin": b"FAKE isolinux"}),
            _deb(tmp_path, "syslinux-common",
                 {"usr/lib/syslinux/modules/bios/ldlinux.c32": b"FAKE ldlinux"})]
    for deb in debs:
        shutil.copy(deb, debdir)
    uris = "".join(f"'http://deb.example/{d.name}' {d.name} {d.stat().st_size} "
                   f"SHA256:{hashlib.sha256(d.read_bytes()).hexdigest()}\n" for d in debs)
    real_run, calls = runner.run, []

    def run(argv, **kw):
        calls.append(argv[:3])
        if argv[:3] == ["apt-get", "download", "--print-uris"]:
            assert argv[3:] == ["isolinux", "syslinux-common"]
            return Result(argv, 0, uris, "")
        assert argv[0] == "dpkg-deb", argv                 # nothing is downloaded: cached
        return real_run(argv, **kw)
    monkeypatch.setattr(runner, "run", run)
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: f"/usr/bin/{name}")
    said = []
    folder = bootiso.isolinux_dir(said.append)
    assert (folder / "isolinux.bin").read_bytes() == b"FAKE isolinux"
    assert (folder / "ldlinux.c32").read_bytes() == b"FAKE ldlinux"
    assert folder.parent == tmp_path / "cache" / "isolinux"
    assert sum(c[0] == "dpkg-deb" for c in calls) == 2
    calls.clear()
    assert bootiso.isolinux_dir(said.append) == folder                # cached: no unpacking
    assert calls == [["apt-get", "download", "--print-uris"]]

    def no_apt(argv, **kw):
        raise VnetError("apt-get is not installed or not on PATH")
    monkeypatch.setattr(runner, "run", no_apt)
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None)
    assert bootiso.isolinux_dir(said.append) == folder                # offline: newest cached
    shutil.rmtree(folder)
    with pytest.raises(VnetError, match="apt-get is missing"):
        bootiso.isolinux_dir(said.append)
