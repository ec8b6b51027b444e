"""A small bootable ISO per VM, for hypervisors without direct kernel boot (VirtualBox).

BIOS -> El Torito (no emulation, boot info table) -> isolinux -> the image's bzImage `vmlinuz`
and `initrd.gz` with the VM's own kernel command line -> the initramfs finds the shared read-only
root disk (the squashfs) on SATA (/dev/sdX). Layout:

  /isolinux/isolinux.bin   from Debian's `isolinux` package (the El Torito boot image)
  /isolinux/ldlinux.c32    from Debian's `syslinux-common` (isolinux's core module)
  /isolinux/isolinux.cfg   SERIAL 0 115200 / DEFAULT vnet / PROMPT 0 / LABEL vnet /
                           KERNEL /vmlinuz / APPEND initrd=/initrd.gz <cmdline>
  /isolinux/boot.cat       the El Torito boot catalog
  /vmlinuz, /initrd.gz     the image's kernel and initramfs

isolinux.bin and ldlinux.c32 are fetched like the image's packages (`apt-get download` into
cache_dir()/debs, checked against apt's sha256, `dpkg-deb -x`) and kept in
cache_dir()/isolinux/<digest of the two .debs>. The ISO is written with pycdlib (pure Python).
A rebuild with the same inputs leaves the ISO alone: its volume set identifier carries the
digest of everything in it.
"""
from __future__ import annotations

import hashlib
import io
import re
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from . import images, isofile
from . import debs as guestdebs
from ..host import runner
from ..host.paths import cache_dir
from ..errors import VnetError

LOADER_PACKAGES = ("isolinux", "syslinux-common")
LOADER_FILES = {"isolinux.bin": ("isolinux", "usr/lib/ISOLINUX/isolinux.bin"),
                "ldlinux.c32": ("syslinux-common", "usr/lib/syslinux/modules/bios/ldlinux.c32")}
VOLUME = "VNETBOOT"
BOOT_IMAGE = "/ISOLINUX/ISOLINUX.BIN;1"
BOOT_CATALOG = "/ISOLINUX/BOOT.CAT;1"
# ISO 9660 path -> Rock Ridge name (what isolinux and Linux show)
LAYOUT = {"/ISOLINUX/ISOLINUX.BIN;1": "isolinux.bin", "/ISOLINUX/LDLINUX.C32;1": "ldlinux.c32",
          "/ISOLINUX/ISOLINUX.CFG;1": "isolinux.cfg", "/VMLINUZ.;1": "vmlinuz",
          "/INITRD.GZ;1": "initrd.gz"}


def isolinux_cfg(vm_cmdline: str) -> str:
    """Boot the one entry at once (no prompt, no menu, no timeout). isolinux also writes to the
    first serial port, so a VM's serial log shows that the boot loader ran."""
    if "\n" in vm_cmdline:
        raise VnetError("a kernel command line cannot contain a newline")
    return ("SERIAL 0 115200\nDEFAULT vnet\nPROMPT 0\nLABEL vnet\n  KERNEL /vmlinuz\n"
            f"  APPEND initrd=/initrd.gz {vm_cmdline}\n")


def append_line(cfg: str) -> str:
    """The kernel command line an isolinux.cfg passes (its APPEND without initrd=)."""
    line = next(ln.strip() for ln in cfg.splitlines() if ln.strip().startswith("APPEND "))
    return line.removeprefix("APPEND ").removeprefix("initrd=/initrd.gz ")


def build(image: images.Image, vm_cmdline: str, out: Path, *, loader: Path | None = None,
          progress: Callable[[str], None] = lambda line: None) -> Path:
    """Write (or keep, when it already holds exactly these inputs) the VM's boot ISO at `out`.
    `loader` is a folder with isolinux.bin and ldlinux.c32 (default: from Debian's packages)."""
    import pycdlib

    if image.vmlinuz is None or not image.vmlinuz.exists():
        raise VnetError(f"the image in {image.kernel.parent} has no bzImage `vmlinuz` (it was "
                        f"built before VirtualBox boot ISOs existed)",
                        hint="run `vnet image build --force`")
    loader = loader or isolinux_dir(progress)
    cfg = isolinux_cfg(vm_cmdline).encode()
    files = {"/ISOLINUX/ISOLINUX.BIN;1": (loader / "isolinux.bin").read_bytes(),
             "/ISOLINUX/LDLINUX.C32;1": (loader / "ldlinux.c32").read_bytes(),
             "/ISOLINUX/ISOLINUX.CFG;1": cfg,
             "/VMLINUZ.;1": image.vmlinuz.read_bytes(),
             "/INITRD.GZ;1": image.initrd.read_bytes()}
    h = hashlib.sha256()
    for path, data in files.items():
        h.update(f"\0{path}\0{len(data)}\0".encode())
        h.update(data)
    stamp = h.hexdigest()[:32].upper()
    out = Path(out)
    if out.exists() and _stamp(out) == stamp:
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=1, vol_ident=VOLUME, vol_set_ident=stamp, rock_ridge="1.09",
            app_ident_str="VNET BOOT ISO (ISOLINUX)")
    iso.add_directory("/ISOLINUX", rr_name="isolinux")
    for path, data in files.items():
        iso.add_fp(io.BytesIO(data), len(data), path, rr_name=LAYOUT[path])
    iso.add_eltorito(BOOT_IMAGE, bootcatfile=BOOT_CATALOG, rr_bootcatname="boot.cat",
                     boot_load_size=4, boot_info_table=True)
    return isofile.write(iso, out)


def _stamp(path: Path) -> str | None:
    """The digest build() left in an ISO's volume set identifier, or None."""
    import pycdlib

    iso = pycdlib.PyCdlib()
    try:
        iso.open(str(path))
        return iso.pvd.volume_set_identifier.decode(errors="replace").strip() or None
    except Exception:          # not an ISO, truncated, ...: build it again
        return None
    finally:
        try:
            iso.close()
        except Exception:
            pass


# ---------------------------------------------------------------- isolinux from Debian

def isolinux_dir(progress: Callable[[str], None] = print) -> Path:
    """A folder with isolinux.bin and ldlinux.c32 for the current Debian packages; cached.
    Without apt (not Debian), the newest cached folder is used."""
    base = cache_dir() / "isolinux"
    debdir = cache_dir() / "debs"
    try:
        debs = _resolve()
    except VnetError:
        cached = sorted((p.parent for p in base.glob("*/ldlinux.c32")
                         if (p.parent / "isolinux.bin").exists()),
                        key=lambda p: p.stat().st_mtime_ns)
        if cached:
            return cached[-1]
        raise
    folder = base / _digest(debs)
    if all((folder / name).exists() for name in LOADER_FILES):
        return folder
    try:
        guestdebs.download(debdir, debs, progress)
    except VnetError:          # stale lists: the mirror dropped the versions they name
        progress("a download failed: apt-get update, then resolving isolinux again")
        runner.run(["apt-get", "update"], timeout=600)
        debs = _resolve()
        folder = base / _digest(debs)
        guestdebs.download(debdir, debs, progress)
    base.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".unpack-", dir=base) as work:
        work = Path(work)
        out = work / "out"
        out.mkdir()
        for d in debs:
            runner.run(["dpkg-deb", "-x", str(debdir / d["file"]), str(work / d["name"])])
        for name, (package, rel) in LOADER_FILES.items():
            src = work / package / rel
            if not src.is_file():
                raise VnetError(f"{package} has no /{rel}")
            shutil.copyfile(src, out / name)
        images.publish(out, folder, "ldlinux.c32")
    progress(f"isolinux ready: {folder}")
    return folder


def _resolve() -> list[dict]:
    """[{name, file, sha256}] for LOADER_PACKAGES as apt would fetch them now (local lists)."""
    if not shutil.which("apt-get"):
        raise VnetError("apt-get is missing: the VirtualBox boot ISO takes isolinux from Debian "
                        "packages", hint="run vnet on Debian/Ubuntu, or copy "
                                         f"{cache_dir() / 'isolinux'} from one")
    try:
        out = runner.run(["apt-get", "download", "--print-uris", *LOADER_PACKAGES]).stdout
    except VnetError:
        runner.run(["apt-get", "update"], timeout=600)
        out = runner.run(["apt-get", "download", "--print-uris", *LOADER_PACKAGES]).stdout
    found = {}
    for m in re.finditer(r"^'[^']+' (\S+) \d+ SHA256:([0-9a-f]{64})$", out, re.M):
        name = m.group(1).split("_")[0]
        found[name] = {"name": name, "file": m.group(1), "sha256": m.group(2)}
    if set(LOADER_PACKAGES) - set(found):
        raise VnetError(f"apt cannot find {sorted(set(LOADER_PACKAGES) - set(found))}")
    debs = [found[n] for n in LOADER_PACKAGES]
    if not all(guestdebs.safe_entry(d) for d in debs):      # they become paths (isolinux_dir)
        raise VnetError(f"apt named a package file vnet will not use as a path: {debs}")
    return debs


def _digest(debs: list[dict]) -> str:
    return hashlib.sha256("".join(f"\0{d['file']}\0{d['sha256']}" for d in debs)
                          .encode()).hexdigest()[:16]
