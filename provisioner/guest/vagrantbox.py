"""The tiny image as a local Vagrant box, so the Vagrant demos (vagrant/<mode>/) need no download.

libvirt box (vagrant-libvirt, box format v1):
    metadata.json        {"provider": "libvirt", "format": "qcow2", "virtual_size": 1}
    box.img              the shared read-only root disk as qcow2 (vagrant-libvirt layers a
                         copy-on-write volume over it per machine; the guest mounts it read-only)
    vmlinux, initrd.gz   booted directly (libvirt.kernel / libvirt.initrd)
    vagrant_private_key  this box's own SSH key; its public half is in the kernel command line
                         (vnet.key=TYPE:BASE64), the only key the tiny image accepts
    Vagrantfile          direct kernel boot, SSH as root with that key, `sh`, no synced folder

virtualbox box: metadata {"provider": "virtualbox"}, the root disk as VDI, the same key and
Vagrantfile settings. It is rendered only (VirtualBox does not run here, and cannot boot a
kernel directly: see the box's Vagrantfile).
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

from ..host import runner
from ..errors import Unsupported
from ..resources import data_dir

PROVIDERS = ("libvirt", "virtualbox")
BOX_NAME = "vnet/tiny"
VIRTUAL_SIZE_GB = 1        # vagrant-libvirt sizes each machine's overlay in whole GB


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
                                              "VNET_ACCEL=kvm|qemu overrides it")


def metadata(provider: str) -> dict:
    if provider == "libvirt":
        return {"provider": "libvirt", "format": "qcow2", "virtual_size": VIRTUAL_SIZE_GB}
    return {"provider": "virtualbox"}


def build(provider: str, out_dir: Path, progress: Callable[[str], None] = print) -> Box:
    """Build the tiny image if needed, then write OUT/vnet-tiny-<digest>-<provider>.box."""
    from ..host import accel
    from . import images

    if provider not in PROVIDERS:
        raise Unsupported(f"provider {provider!r} is not supported; providers: {', '.join(PROVIDERS)}")
    image = images.build_tiny(progress=progress)
    chosen = accel.choose(image, progress) if provider == "libvirt" else "qemu"
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"vnet-tiny-{image.digest}-{provider}.box"
    with tempfile.TemporaryDirectory(prefix=".box-", dir=out_dir) as work:
        stage = Path(work)
        progress("generating this box's own SSH key")
        key = stage / "vagrant_private_key"
        runner.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"vnet-box-{image.digest}",
                    "-f", str(key)])
        pubkey = Path(f"{key}.pub").read_text().strip()
        Path(f"{key}.pub").unlink()
        shutil.copyfile(image.kernel, stage / "vmlinux")
        shutil.copyfile(image.initrd, stage / "initrd.gz")
        if provider == "libvirt":
            progress("converting the root disk to qcow2 (box.img)")
            runner.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(image.rootdisk),
                        str(stage / "box.img")], timeout=300)
        else:
            progress("converting the root disk to VDI (box-disk.vdi)")
            runner.run(["qemu-img", "convert", "-f", "raw", "-O", "vdi", str(image.rootdisk),
                        str(stage / "box-disk.vdi")], timeout=300)
        (stage / "metadata.json").write_text(json.dumps(metadata(provider)) + "\n")
        (stage / "Vagrantfile").write_text(render_vagrantfile(
            provider, digest=image.digest, cmdline_base=image.cmdline_base, pubkey=pubkey,
            accel=chosen))
        progress(f"writing {target}")
        partial = stage / "box.tar"
        with tarfile.open(partial, "w") as tar:     # uncompressed: the kernel and disk
            for item in sorted(stage.iterdir()):    # compress poorly, and `box add` is faster
                if item != partial:
                    tar.add(item, arcname=item.name)
        partial.replace(target)
    notes = () if provider == "libvirt" else (
        "rendered only: VirtualBox cannot boot a kernel directly and the tiny image takes its "
        "configuration from the kernel command line, so this box has no box.ovf and no boot "
        "loader yet; it has never run",)
    return Box(path=target, provider=provider, name=BOX_NAME, digest=image.digest, notes=notes)
