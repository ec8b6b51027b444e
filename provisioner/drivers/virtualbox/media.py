"""What a VirtualBox lab boots from, made before any VBoxManage command runs: the tiny image's
root disk as a VDI (qemu-img, once per image) and one boot ISO per VM (isolinux with the image's
kernel, initramfs and the VM's kernel command line; provisioner/guest/bootiso.py)."""
from __future__ import annotations

import os
from pathlib import Path

from ...errors import VnetError
from ...guest import bootiso, images
from ...host import runner
from ...progress import Progress
from ..base import Plan


def convert_vdi(raw: Path, progress: Progress) -> Path:
    """raw root disk -> <same dir>/<same name>.vdi with qemu-img, once; reused while newer."""
    vdi = raw.with_suffix(".vdi")
    if vdi.exists() and vdi.stat().st_mtime_ns >= raw.stat().st_mtime_ns:
        return vdi
    if not runner.which("qemu-img"):
        raise VnetError("qemu-img is missing: it converts the tiny image to VDI for VirtualBox",
                        hint="apt-get install qemu-utils")
    tmp = vdi.with_name(f".{vdi.name}.{os.getpid()}.tmp")
    progress(f"converting {raw} to VDI for VirtualBox")
    try:
        runner.run(["qemu-img", "convert", "-f", "raw", "-O", "vdi", str(raw), str(tmp)],
                   timeout=900)
        tmp.replace(vdi)
    finally:
        tmp.unlink(missing_ok=True)
    return vdi


def build_boot_isos(plan: Plan, image: images.Image | None, progress: Progress) -> list[Path]:
    """Write each tiny-image VM's boot ISO where the plan attaches it (the lab's state dir),
    before any command runs; an ISO that already holds the same inputs is kept."""
    boot = plan.extra.get("boot", {})
    if not boot:
        return []
    image = image or images.build_tiny(progress=progress)
    done = []
    for vm, entry in boot.items():
        progress(f"vm {vm}: boot ISO {entry['iso']}")
        done.append(bootiso.build(image, entry["cmdline"], Path(entry["iso"]),
                                  progress=progress))
    return done
