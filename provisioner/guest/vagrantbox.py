"""The tiny image as a local Vagrant box, so the Vagrant demos (vagrant/<mode>/) need no download.

libvirt box (vagrant-libvirt, box format v1):
    metadata.json        {"provider": "libvirt", "format": "qcow2", "virtual_size": 1}
    box.img              the shared read-only root disk as qcow2 (vagrant-libvirt layers a
                         copy-on-write volume over it per machine; the guest mounts it read-only)
    vmlinux, initrd.gz   booted directly (libvirt.kernel / libvirt.initrd)
    vagrant_private_key  this box's own SSH key; its public half is in the kernel command line
                         (vnet.key=TYPE:BASE64), the only key the tiny image accepts
    Vagrantfile          direct kernel boot, SSH as root with that key, `sh`, no synced folder

virtualbox box (what Vagrant's VirtualBox provider imports with `VBoxManage import box.ovf`):
    metadata.json        {"provider": "virtualbox"}
    box.ovf              OVF 1.0 envelope (templates/vagrant/box.ovf.j2): SATA controller, the
                         root disk on port 0, the boot ISO as a DVD on port 1, one NAT adapter
    box-disk001.vmdk     the root disk, streamOptimized (the format VirtualBox exports and imports)
    boot.iso             VirtualBox cannot boot a kernel file, so the box boots like vnet's own
                         VirtualBox labs (provisioner/bootiso.py): isolinux -> bzImage + initrd.
                         Its command line ends in a slot of SLOT bytes that names the VM and its
                         NICs; by default the box's own name and DHCP on adapter 1 (BASE_MAC)
    vagrant_private_key, Vagrantfile
The per-VM wiring: the tiny image is configured only by its kernel command line, so each VM
needs its own ISO. The box's Vagrantfile defines VnetTinyBox.virtualbox(vb, dir, name, *ifs):
it copies boot.iso to <dir>/.vagrant/vnet-boot-<name>.iso with the slot rewritten in place
(same length, so nothing else in the ISO moves: ISO 9660 keeps no checksum of file data) and
attaches it with `storageattach` on SATA port 1. Ruby alone does this; the VirtualBox host
needs neither vnet nor an ISO tool.
"""
from __future__ import annotations

import json
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import jinja2

from ..host import locks, runner
from ..host.paths import cache_dir
from ..errors import Unsupported
from ..resources import data_dir
from .cmdline import QEMU_PC_ARGS

PROVIDERS = ("libvirt", "virtualbox")
BOX_NAME = "vnet/tiny"
VIRTUAL_SIZE_GB = 1        # vagrant-libvirt sizes each machine's overlay in whole GB
# VirtualBox box: Vagrant gives adapter 1 (its NAT, for SSH) this MAC (config.vm.base_mac);
# 08:00:27 is VirtualBox's own prefix.
BASE_MAC = "08:00:27:5e:00:01"
SLOT = 640                 # bytes of the boot ISO's command line that name the VM and its NICs
OVF_NAME = "vnet-tiny"
DISK_FILE, ISO_FILE = "box-disk001.vmdk", "boot.iso"


@dataclass(frozen=True)
class Box:
    path: Path
    provider: str
    name: str
    digest: str
    notes: tuple[str, ...] = ()

    @property
    def add_argv(self) -> list[str]:
        return ["vagrant", "box", "add", "--force", "--name", self.name, str(self.path)]


def ruby_string(value: str) -> str:
    """A Ruby double-quoted string literal (JSON's escapes are Ruby's; `#{` must not interpolate)."""
    return json.dumps(value).replace("#", "\\#")


def _env() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(data_dir("templates") / "vagrant")),
                             undefined=jinja2.StrictUndefined, autoescape=False,
                             keep_trailing_newline=True)
    env.filters["ruby"] = ruby_string
    return env


def render_vagrantfile(provider: str, *, digest: str, cmdline_base: str, pubkey: str,
                       accel: str = "qemu", accel_note: str = "") -> str:
    """The box's own Vagrantfile (pure: no I/O)."""
    if provider not in PROVIDERS:
        raise Unsupported(f"provider {provider!r} is not supported; providers: {', '.join(PROVIDERS)}")
    key_type, key_b64 = pubkey.split()[:2]
    return _env().get_template(f"box-{provider}.Vagrantfile.j2").render(
        digest=digest, cmdline_base=cmdline_base, key_param=f"vnet.key={key_type}:{key_b64}",
        accel=accel, accel_note=accel_note or "the accelerator vnet found working here; "
                                              "VNET_ACCEL=kvm|qemu overrides it",
        slot=SLOT, default_slot=default_slot(), base_mac=BASE_MAC, base_mac_bare=
        BASE_MAC.replace(":", ""), iso_file=ISO_FILE)


def default_slot() -> str:
    """What the box's own boot.iso says in its per-VM slot (padded to SLOT bytes)."""
    return f"vnet.host={OVF_NAME} vnet.if={BASE_MAC},dhcp".ljust(SLOT)


def box_cmdline(cmdline_base: str, pubkey: str) -> str:
    """The boot ISO's whole kernel command line: the box's part, then the per-VM slot last."""
    key_type, key_b64 = pubkey.split()[:2]
    return f"{cmdline_base} vnet.key={key_type}:{key_b64} {default_slot()}"


def render_ovf(*, disk_size: int, disk_capacity: int, iso_size: int, memory: int = 128,
               cpus: int = 1) -> str:
    """box.ovf (pure). Sizes in bytes; capacity is the disk's virtual size."""
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(data_dir("templates") / "vagrant")),
                             undefined=jinja2.StrictUndefined, autoescape=True,
                             keep_trailing_newline=True)
    return env.get_template("box.ovf.j2").render(
        name=OVF_NAME, disk_file=DISK_FILE, iso_file=ISO_FILE, disk_size=disk_size,
        disk_capacity=disk_capacity, iso_size=iso_size, memory=memory, cpus=cpus)


def metadata(provider: str) -> dict:
    if provider == "libvirt":
        return {"provider": "libvirt", "format": "qcow2", "virtual_size": VIRTUAL_SIZE_GB}
    return {"provider": "virtualbox"}


def box_file_name(digest: str, provider: str) -> str:
    """The box of tiny image `digest` for `provider` (guest/imagecache.py lists and prunes them)."""
    return f"vnet-tiny-{digest}-{provider}.box"


def build(provider: str, out_dir: Path, progress: Callable[[str], None] = print) -> Box:
    """Build the tiny image if needed, then write OUT/vnet-tiny-<digest>-<provider>.box."""
    from ..host import accel
    from . import images

    if provider not in PROVIDERS:
        raise Unsupported(f"provider {provider!r} is not supported; providers: {', '.join(PROVIDERS)}")
    image = images.build_tiny(progress=progress)
    chosen = accel.choose(image, progress) if provider == "libvirt" else "qemu"
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / box_file_name(image.digest, provider)
    # staged in vnet's own cache, never in OUT: whoever can write to OUT could swap a staging
    # directory's name for their own, with a symlink where root then copies the kernel
    staging = cache_dir() / "box-staging"
    staging.mkdir(parents=True, exist_ok=True, mode=0o700)
    with tempfile.TemporaryDirectory(prefix=".box-", dir=staging) as work:
        stage = Path(work)
        progress("generating this box's own SSH key")
        key = stage / "vagrant_private_key"
        runner.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"vnet-box-{image.digest}",
                    "-f", str(key)])
        pubkey = Path(f"{key}.pub").read_text().strip()
        Path(f"{key}.pub").unlink()
        if provider == "libvirt":
            shutil.copyfile(image.kernel, stage / "vmlinux")
            shutil.copyfile(image.initrd, stage / "initrd.gz")
            progress("converting the root disk to qcow2 (box.img)")
            runner.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(image.rootdisk),
                        str(stage / "box.img")], timeout=300)
        else:
            _stage_virtualbox(stage, image, pubkey, progress)
        (stage / "metadata.json").write_text(json.dumps(metadata(provider)) + "\n")
        # a libvirt box boots on QEMU's pc machine, as vnet's own domains: the same kernel line
        base = f"{image.cmdline_base} {QEMU_PC_ARGS}" if provider == "libvirt" \
            else image.cmdline_base
        (stage / "Vagrantfile").write_text(render_vagrantfile(
            provider, digest=image.digest, cmdline_base=base, pubkey=pubkey, accel=chosen))
        progress(f"writing {target}")
        partial = stage / "box.tar"
        with tarfile.open(partial, "w") as tar:     # uncompressed: the kernel and disk
            for item in sorted(stage.iterdir()):    # compress poorly, and `box add` is faster
                if item != partial:
                    tar.add(item, arcname=item.name)
        locks.copy_atomic(partial, target)
    notes = () if provider == "libvirt" else (
        "VirtualBox does not run on vnet's build machines: this box's OVF is checked and "
        "imported by a VBoxManage stand-in, and its boot path (isolinux from a SATA DVD, the "
        "root on SATA) was shown under QEMU; only a VirtualBox host shows it boot there",)
    return Box(path=target, provider=provider, name=BOX_NAME, digest=image.digest, notes=notes)


def _stage_virtualbox(stage: Path, image, pubkey: str, progress: Callable[[str], None]) -> None:
    """box-disk001.vmdk, boot.iso and box.ovf in `stage`."""
    from . import bootiso

    progress(f"converting the root disk to a streamOptimized VMDK ({DISK_FILE})")
    runner.run(["qemu-img", "convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized",
                str(image.rootdisk), str(stage / DISK_FILE)], timeout=300)
    progress(f"writing the boot ISO ({ISO_FILE}: isolinux, the kernel, the initramfs)")
    bootiso.build(image, box_cmdline(image.cmdline_base, pubkey), stage / ISO_FILE,
                  progress=progress)
    (stage / "box.ovf").write_text(render_ovf(
        disk_size=(stage / DISK_FILE).stat().st_size, disk_capacity=image.rootdisk.stat().st_size,
        iso_size=(stage / ISO_FILE).stat().st_size))
