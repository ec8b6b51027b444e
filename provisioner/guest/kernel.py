"""The tiny image's kernel side: the PVH vmlinux taken out of Debian's bzImage, the kernel
modules the guests need (dependencies first, read from each module's .modinfo) and the gzip
initramfs (busybox, those modules, the init) written as a cpio archive in memory."""
from __future__ import annotations

import gzip
import lzma
import re
import struct
from pathlib import Path
from typing import Callable, Iterable

from ..errors import VnetError
from . import modneeds

# tunnels (issue 17). The guest has no modprobe: what the kernel would request at run time is
# loaded at boot, e.g. ESP's authenc(hmac(sha256),cbc(aes)) with its IV generator echainiv and
# the random generator that one asks for (drbg; hmac, sha256, cbc and aes are built in), and
# xfrm_user for `ip xfrm`; wireguard's crypto libraries come in as its dependencies.
TUNNEL_MODULES = ("vxlan", "ip_gre", "esp4", "authenc", "drbg", "echainiv", "xfrm_user",
                  "xfrm_interface", "wireguard")
# insmod'ed by the initramfs with their dependencies
MODULES = ("virtio_pci", "virtio_blk", "squashfs", "virtio_net", "e1000",
           "virtio_console", "virtio_rng",
           "ahci", "sd_mod",   # SATA root (/dev/sdX): VirtualBox has no virtio disk controller
           "bonding",          # lab bonds (issue 17); the init makes them through sysfs
           "sch_netem",        # guest-side delay/loss (issue 18): the host kernel may lack it
           *TUNNEL_MODULES)
MODULE_ARGS = {"bonding": "max_bonds=0"}   # no bond0 unless the lab asks for one
# Loaded only where needed, with what only they need (guest/modneeds.py: each insmod costs TCG)
MODULE_NEEDS = {"ahci": modneeds.AHCI, "sd_mod": modneeds.AHCI, "bonding": modneeds.BOND,
                **dict.fromkeys(TUNNEL_MODULES, modneeds.TUNNEL)}


def extract_vmlinux(vmlinuz: bytes) -> bytes:
    """The ELF vmlinux inside an XZ-compressed bzImage (bootable by QEMU through PVH)."""
    pos = vmlinuz.find(b"\xfd7zXZ\x00")
    while pos >= 0:
        try:
            elf = lzma.LZMADecompressor(lzma.FORMAT_XZ).decompress(vmlinuz[pos:])
        except lzma.LZMAError:
            elf = b""
        if elf.startswith(b"\x7fELF"):
            return elf
        pos = vmlinuz.find(b"\xfd7zXZ\x00", pos + 1)
    raise VnetError("no XZ-compressed ELF kernel found in vmlinuz",
                    hint="the tiny image needs a Debian kernel built with CONFIG_KERNEL_XZ")


PT_LOAD, PAGE = 1, 4096


def trim_zero_tails(elf: bytes) -> bytes:
    """The ELF64 with each loadable segment's trailing zero bytes moved from the file into its
    memory size (p_filesz shrinks, p_memsz stays): the same memory image, as a loader zero-fills
    up to p_memsz. Debian's vmlinux stores its 19 MiB .bss and the 4 MiB .init.scratch as file
    zeros (a PROGBITS section after .bss), and QEMU keeps the file mapped for resets, so every
    VM held those pages: memory beyond guest RAM, issue 15."""
    if elf[:6] != b"\x7fELF\x02\x01":
        raise VnetError("the kernel is not an ELF64 little-endian file")
    out = bytearray(elf)
    phoff, = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    for i in range(phnum):
        at = phoff + i * phentsize
        p_type, = struct.unpack_from("<I", elf, at)
        offset, = struct.unpack_from("<Q", elf, at + 8)
        filesz, = struct.unpack_from("<Q", elf, at + 32)
        if p_type != PT_LOAD:
            continue
        if offset + filesz > len(elf):     # QEMU refuses such a file: so does this
            raise VnetError(f"the kernel's segment {i} reaches past the end of the file")
        used = len(elf[offset:offset + filesz].rstrip(b"\0"))
        if used:        # an all-zero segment keeps its data: a loader may skip an empty one
            struct.pack_into("<Q", out, at + 32, min(filesz, -(-used // PAGE) * PAGE))
    return bytes(out)


def modinfo(ko: bytes) -> dict[str, str]:
    """The .modinfo section of an ELF64 little-endian kernel module."""
    if ko[:5] != b"\x7fELF\x02":
        raise VnetError("not an ELF64 kernel module")
    shoff, = struct.unpack_from("<Q", ko, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", ko, 0x3A)
    sections = [struct.unpack_from("<I20xQQ", ko, shoff + i * shentsize) for i in range(shnum)]
    names = sections[shstrndx][1]
    for name, off, size in sections:
        if ko[names + name:ko.index(b"\0", names + name)] == b".modinfo":
            fields = ko[off:off + size].decode(errors="replace").split("\0")
            return dict(f.split("=", 1) for f in fields if "=" in f)
    return {}


def module_order(wanted: Iterable[str], load: Callable[[str], bytes | None],
                 builtin: set[str]) -> list[str]:
    """Modules to insmod, dependencies first; load(name) gives a module's bytes or None."""
    order: list[str] = []

    def visit(name: str, seen: tuple[str, ...]) -> None:
        if name in order or name in builtin:
            return
        if name in seen:
            raise VnetError(f"kernel module dependency cycle: {' -> '.join(seen + (name,))}")
        data = load(name)
        if data is None:
            raise VnetError(f"kernel module {name} is neither built in nor in the kernel package")
        for dep in filter(None, modinfo(data).get("depends", "").split(",")):
            visit(dep.replace("-", "_"), seen + (name,))
        order.append(name)

    for name in wanted:
        visit(name, ())
    return order


def kernel_and_modules(pkg: Path, vmlinux: Path) -> list[tuple[str, bytes]]:
    vmlinuz = sorted((pkg / "boot").glob("vmlinuz-*"))
    if not vmlinuz:
        raise VnetError(f"no /boot/vmlinuz-* in the kernel package ({pkg.name})")
    vmlinux.write_bytes(trim_zero_tails(extract_vmlinux(vmlinuz[0].read_bytes())))
    moddir = next((pkg / "lib" / "modules").iterdir())
    index = {re.sub(r"\.ko(\.xz)?$", "", p.name).replace("-", "_"): p
             for p in moddir.rglob("*.ko*") if re.search(r"\.ko(\.xz)?$", p.name)}
    builtin = {Path(line).name.removesuffix(".ko").replace("-", "_")
               for line in (moddir / "modules.builtin").read_text().split()}

    def load(name: str) -> bytes | None:
        p = index.get(name)
        return None if p is None else (lzma.decompress(p.read_bytes()) if p.suffix == ".xz"
                                       else p.read_bytes())
    return [(m, load(m)) for m in module_order(MODULES, load, builtin)]


def cpio_newc(entries: Iterable[tuple[str, int, bytes, int]]) -> bytes:
    """An initramfs cpio archive from (path, mode, data, rdev) in memory: no files on the host.
    A symlink's data is its target; rdev is (major << 8 | minor) for device nodes."""
    out = bytearray()
    for ino, (name, mode, data, rdev) in enumerate([*entries, ("TRAILER!!!", 0, b"", 0)], 1):
        fields = (ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev >> 8, rdev & 0xFF, len(name) + 1, 0)
        out += b"070701" + b"".join(b"%08X" % f for f in fields) + name.encode() + b"\0"
        out += b"\0" * (-len(out) % 4) + data
        out += b"\0" * (-len(out) % 4)
    return bytes(out)


def module_needs(modules: list[tuple[str, bytes]]) -> bytes:
    """lib/modules/needs: which modules the init skips where their condition fails."""
    data = dict(modules)
    depends = {m: [d.replace("-", "_") for d in modinfo(ko).get("depends", "").split(",") if d]
               for m, ko in data.items()}
    return modneeds.needs_file(modneeds.conditional(
        MODULES, list(data), lambda m: depends.get(m, []), MODULE_NEEDS))


def initramfs(path: Path, init: bytes, busybox: bytes, modules: list[tuple[str, bytes]],
              needs: bytes = b"") -> None:
    """init: the initramfs's /init script (provisioner/guest/files/initramfs-init); needs:
    lib/modules/needs (module_needs)."""
    d, f, lnk, chr_ = 0o40755, 0o100644, 0o120777, 0o20600
    entries = [(n, d, b"", 0) for n in ("bin", "dev", "proc", "sys", "newroot", "lib",
                                        "lib/modules")]
    entries += [("dev/console", chr_, b"", 5 << 8 | 1), ("bin/busybox", 0o100755, busybox, 0),
                ("bin/sh", lnk, b"busybox", 0),
                ("init", 0o100755, init, 0),
                ("lib/modules/order", f, "".join(f"{m} {MODULE_ARGS.get(m, '')}".rstrip() + "\n"
                                                 for m, _ in modules).encode(), 0)]
    entries += [(f"lib/modules/{m}.ko", f, data, 0) for m, data in modules]
    entries += [("lib/modules/needs", f, needs, 0)]
    path.write_bytes(gzip.compress(cpio_newc(entries), compresslevel=6, mtime=0))
