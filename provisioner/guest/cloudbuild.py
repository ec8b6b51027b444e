"""A genuine Debian cloud image built locally from the distribution's packages, for labs on
machines that cannot download one: `vnet image build --cloud debian12`.

What it is: a qcow2 disk with an MBR partition table, one ext4 root partition and GRUB in the
MBR gap, so it boots the way vnet boots any cloud image (firmware -> disk, `<boot dev='hd'/>`,
no direct kernel boot). The root is Debian's own: mmdebstrap installs the cloud kernel, systemd,
cloud-init (NoCloud only), openssh-server, python3 and netplan (cloud-init renders vnet's
version-2 network-config through it to systemd-networkd) from the configured Debian mirror.

How it is built, as root, without ever writing into the tree from the host:
- mmdebstrap runs in `root` mode inside a private mount namespace (its /proc, /sys and /dev
  mounts die with it and never show on the host); every change to the tree (fstab, grub.cfg,
  cloud-init's datasource list, emptied machine-id and SSH host keys) is made by a script that
  mmdebstrap uploads and runs *inside the chroot*, where any link resolves inside the tree;
- the host only reads the tree (mke2fs -d copies it, links as links, into the partition) and
  writes its own disk file: the MBR (GRUB's boot.img + the partition table) and GRUB's core.img
  (made by grub-mkimage inside the chroot, fetched with mmdebstrap's `download` hook).

Cached like the tiny image, by the digest of its inputs (the package list and the candidate
version of each listed package in apt's lists, the in-chroot script, the mmdebstrap command and
the disk layout: `digest`): `<cache>/images/<name>-<digest>/`
with `disk.qcow2` and `manifest.json` (its sha256, for the lab file's `sha256:`).
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..host import runner
from ..errors import Unsupported, VnetError
from ..host.paths import cache_dir
from . import builds
from .images import publish

ROOT_LABEL = "vnetcloud"
DISK = "disk.qcow2"
FS_SIZE = 3 * 2**30           # the root filesystem (sparse: qcow2 stores only what is used)
PART_START = 2048             # sectors: 1 MiB; GRUB's core.img fills sectors 1..2047
BUILD_TIMEOUT = 3600.0
LAYOUT_VERSION = 1            # bump when write_disk/mbr change what they write


@dataclass(frozen=True)
class Recipe:
    suite: str
    mirrors: tuple[str, ...]
    packages: tuple[str, ...]


RECIPES = {
    "debian12": Recipe(
        suite="bookworm",
        mirrors=("deb http://deb.debian.org/debian bookworm main",
                 "deb http://deb.debian.org/debian bookworm-updates main",
                 "deb http://deb.debian.org/debian-security bookworm-security main"),
        # dbus: cloud-init sets the hostname through hostnamectl; grub-pc-bin: grub-mkimage
        # and the i386-pc modules (no grub-pc: its postinst wants an install device)
        packages=("linux-image-cloud-amd64", "systemd-sysv", "udev", "dbus", "cloud-init",
                  "openssh-server", "python3", "netplan.io", "iproute2", "grub-pc-bin")),
}

# Runs inside the chroot (uploaded by mmdebstrap, `sh -eu`): every path here is the guest's.
CUSTOMIZE = r"""
truncate -s 0 /etc/machine-id                 # each VM makes its own (DHCP client ids)
rm -f /etc/ssh/ssh_host_*                     # each VM gets its own (cloud-init makes them)
echo "LABEL=@LABEL@ / ext4 defaults,errors=remount-ro 0 1" > /etc/fstab
echo "localhost" > /etc/hostname
# NoCloud only: no network datasource is probed (each would wait for its metadata server);
# no locale management: the image has no `locales` (cloud-init's locale-gen would fail)
printf 'datasource_list: [ NoCloud, None ]\nlocale: false\n' \
  > /etc/cloud/cloud.cfg.d/90-vnet.cfg
set -- /boot/vmlinuz-*
version=${1#/boot/vmlinuz-}
mkdir -p /boot/grub
cat > /boot/grub/grub.cfg <<EOF
serial --unit=0 --speed=115200
terminal_input serial
terminal_output serial
set timeout=0
menuentry "Debian (vnet cloud image)" {
  linux /boot/vmlinuz-$version root=LABEL=@LABEL@ ro console=tty0 console=ttyS0,115200
  initrd /boot/initrd.img-$version
}
EOF
grub-mkimage -O i386-pc -o /tmp/vnet-core.img -p '(hd0,msdos1)/boot/grub' \
  biosdisk part_msdos ext2 normal linux serial terminal configfile echo
dpkg-query -W -f '${Package} ${Version}\n' > /tmp/vnet-packages.txt    # for the manifest
apt-get clean
rm -rf /var/lib/apt/lists/* /tmp/vnet-customize.sh
""".replace("@LABEL@", ROOT_LABEL)


@dataclass(frozen=True)
class CloudBuild:
    name: str
    digest: str
    disk: Path
    sha256: str

    @property
    def url(self) -> str:
        return self.disk.as_uri()


def recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise Unsupported(f"--cloud: unknown cloud image {name!r}; valid: {', '.join(RECIPES)}")
    return RECIPES[name]


def versions(r: Recipe) -> dict[str, str]:
    """The candidate version of each listed package in apt's lists (the cache key's part that
    changes when Debian publishes an update; run `apt-get update` to pick one up)."""
    out = runner.run(["apt-cache", "policy", *r.packages], timeout=120).stdout
    found = dict(re.findall(r"^(\S+):\n(?:\s+Installed:.*\n)?\s+Candidate: (\S+)", out, re.M))
    missing = [p for p in r.packages if found.get(p) in (None, "(none)")]
    if missing:
        raise VnetError(f"apt knows no candidate for {', '.join(missing)}",
                        hint="run `apt-get update` (the Debian main archive must be configured)")
    return {p: found[p] for p in r.packages}


def digest(name: str, r: Recipe, pinned: dict[str, str]) -> str:
    """The cache key: what decides the image's bytes (the recipe, the pinned versions, the
    in-chroot script, the mmdebstrap command and the disk layout), not this module's prose."""
    argv = mmdebstrap_argv(r, Path("/WORK"), Path("/TREE"))
    h = hashlib.sha256(json.dumps([LAYOUT_VERSION, name, argv, sorted(pinned.items()), CUSTOMIZE,
                                   ROOT_LABEL, FS_SIZE, PART_START]).encode())
    return h.hexdigest()[:16]


def find(name: str) -> CloudBuild | None:
    """The cached build for the current inputs, or None."""
    r = recipe(name)
    return _load(cache_dir() / "images" / f"{name}-{digest(name, r, versions(r))}")


def _load(path: Path) -> CloudBuild | None:
    m = builds.manifest_of(path)           # None: not built, or not readable (never a crash)
    if m is None:
        return None
    return CloudBuild(m["name"], m["digest"], path / m["disk"], m["sha256"])


def build(name: str, progress: Callable[[str], None] = print, force: bool = False) -> CloudBuild:
    """Build (or reuse) the cloud image `name`; a second call with the same inputs returns at
    once."""
    r = recipe(name)
    for tool in ("mmdebstrap", "unshare", "mke2fs", "qemu-img"):
        if not runner.which(tool):
            raise VnetError(f"{tool} is missing: the cloud image is built with mmdebstrap, "
                            "mke2fs and qemu-img",
                            hint="apt-get install mmdebstrap e2fsprogs qemu-utils util-linux")
    pinned = versions(r)
    key = digest(name, r, pinned)
    final = cache_dir() / "images" / f"{name}-{key}"
    builds.set_aside_unreadable(final, progress)
    if not force and (found := _load(final)):
        return found
    started = time.monotonic()
    final.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".build-", dir=final.parent) as tmp:
        work = Path(tmp).resolve()
        if re.search(r"\s", str(work)):   # mmdebstrap splits its special hooks on whitespace
            raise VnetError(f"the cache path {work} contains whitespace",
                            hint="set VNET_CACHE_DIR to a path without spaces")
        (work / "customize.sh").write_text(CUSTOMIZE)
        tree = work / "tree"
        tree.mkdir()
        _mmdebstrap(r, work, tree, progress)
        out = work / "image"
        out.mkdir()
        raw = work / "disk.raw"
        progress(f"writing the ext4 root ({FS_SIZE // 2**30} GiB, sparse) and GRUB")
        write_disk(raw, tree, (work / "boot.img").read_bytes(), (work / "core.img").read_bytes())
        progress("converting to qcow2")
        runner.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw),
                    str(out / DISK)], timeout=1800)
        with open(out / DISK, "rb") as f:
            sha = hashlib.file_digest(f, "sha256").hexdigest()
        manifest = {"name": name, "kind": "cloud", "digest": key, "disk": DISK, "sha256": sha,
                    "suite": r.suite, "packages": pinned,
                    "installed": (work / "packages.txt").read_text().splitlines(),
                    "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "build_seconds": round(time.monotonic() - started, 1)}
        (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        if force and final.exists():
            builds.remove_build(final)
        publish(out, final, "manifest.json")
    progress(f"cloud image {name} ready in {time.monotonic() - started:.0f}s: {final / DISK}")
    return _load(final)


def mmdebstrap_argv(r: Recipe, work: Path, tree: Path) -> list[str]:
    """mmdebstrap in root mode inside a private mount namespace; the tree is changed only by
    hooks that run in the chroot, and files leave it only through mmdebstrap's `download`."""
    return ["unshare", "--mount", "--propagation", "private",
            "mmdebstrap", "--mode=root", "--variant=minbase",
            "--include=" + ",".join(r.packages),
            f"--customize-hook=upload {work}/customize.sh /tmp/vnet-customize.sh",
            '--customize-hook=chroot "$1" /bin/sh -eu /tmp/vnet-customize.sh',
            f"--customize-hook=download /tmp/vnet-core.img {work}/core.img",
            f"--customize-hook=download /usr/lib/grub/i386-pc/boot.img {work}/boot.img",
            f"--customize-hook=download /tmp/vnet-packages.txt {work}/packages.txt",
            '--customize-hook=chroot "$1" rm -f /tmp/vnet-core.img /tmp/vnet-packages.txt',
            r.suite, str(tree), *r.mirrors]


def _mmdebstrap(r: Recipe, work: Path, tree: Path, progress: Callable[[str], None]) -> None:
    """Run mmdebstrap, relaying its `I:` lines as progress while it works (minutes)."""
    log = work / "mmdebstrap.log"
    proc = runner.spawn(mmdebstrap_argv(r, work, tree), log_path=str(log))
    shown, started = 0, time.monotonic()
    said = started
    try:
        while proc.poll() is None:
            if time.monotonic() > started + BUILD_TIMEOUT:
                raise VnetError(f"mmdebstrap took longer than {BUILD_TIMEOUT:.0f}s")
            time.sleep(2)
            text = log.read_text(errors="replace")
            lines = text[:text.rfind("\n") + 1].splitlines()     # whole lines only
            news = [l for l in lines[shown:] if l.startswith(("I: ", "E: ", "W: "))]
            for line in news:
                progress(f"mmdebstrap: {line[3:]}")
            if news or time.monotonic() - said > 30:
                if not news:                                   # dpkg at work: say so
                    progress(f"mmdebstrap: still working ({len(lines)} log lines, "
                             f"{time.monotonic() - started:.0f}s)")
                said = time.monotonic()
            shown = len(lines)
    finally:
        if proc.poll() is None:       # its own session (runner.spawn): end apt/dpkg with it
            os.killpg(proc.pid, 9)
            proc.wait()
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise VnetError(f"mmdebstrap failed (exit {proc.returncode}):\n{tail}",
                        hint="check that the Debian mirror in the apt sources is reachable")


def mbr(boot_img: bytes, start: int, sectors: int) -> bytes:
    """Sector 0: GRUB's boot.img code (its first 440 bytes; it loads core.img from sector 1,
    its built-in default), a disk signature and one bootable Linux partition (LBA only: the
    CHS fields say "beyond 8 GiB", which every BIOS since the 90s reads as "use LBA")."""
    if len(boot_img) != 512:
        raise VnetError(f"GRUB's boot.img is {len(boot_img)} bytes, not 512")
    chs_max = b"\xfe\xff\xff"
    entry = b"\x80" + chs_max + b"\x83" + chs_max + struct.pack("<II", start, sectors)
    return boot_img[:440] + b"vnet" + b"\0\0" + entry + b"\0" * 48 + b"\x55\xaa"


def write_disk(raw: Path, tree: Path, boot_img: bytes, core_img: bytes,
               fs_size: int = FS_SIZE) -> None:
    """A sparse raw disk: MBR, core.img in the gap, ext4 (copied from the tree) at 1 MiB."""
    if len(core_img) > (PART_START - 1) * 512:
        raise VnetError(f"GRUB's core.img ({len(core_img)} bytes) does not fit before the "
                        "first partition")
    with open(raw, "xb") as f:
        f.truncate(PART_START * 512 + fs_size)
    runner.run(["mke2fs", "-q", "-F", "-t", "ext4", "-L", ROOT_LABEL, "-m", "1",
                "-E", f"offset={PART_START * 512}", "-d", str(tree), str(raw),
                f"{fs_size // 1024}k"], timeout=1800)
    with open(raw, "r+b") as f:
        f.write(mbr(boot_img, PART_START, fs_size // 512))
        f.seek(512)
        f.write(core_img)
