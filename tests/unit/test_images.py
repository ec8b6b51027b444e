"""Unit tests of the tiny-image builder: no network, no root, no QEMU."""
from __future__ import annotations

import json
import lzma
import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from provisioner.guest import buildtree, images, kernel
from provisioner.guest import debs as guestdebs
from provisioner.errors import VnetError

GUEST = images.GUEST


# ---------------------------------------------------------------- the tree guard

@pytest.fixture
def tree(tmp_path):
    return buildtree.Tree(tmp_path / "root")


@pytest.fixture
def host_file(tmp_path):
    """Stands for a host file such as /bin/busybox, outside the build tree."""
    victim = tmp_path / "host-busybox"
    victim.write_bytes(b"host original")
    return victim


def test_write_makes_regular_files_with_their_mode(tree):
    tree.write("usr/lib/vnet/init", b"#!/bin/sh\n", 0o100755)
    p = tree.root / "usr/lib/vnet/init"
    assert p.read_bytes() == b"#!/bin/sh\n" and not p.is_symlink()
    assert p.stat().st_mode & 0o7777 == 0o755


@pytest.mark.parametrize("rel", ["../escape", "usr/../../escape", "/../escape", ".."])
def test_write_refuses_paths_that_leave_the_tree(tree, rel):
    with pytest.raises(VnetError, match="refusing to write"):
        tree.write(rel, b"x")
    assert not (tree.root.parent / "escape").exists()


def test_write_refuses_to_write_through_a_link_to_a_host_file(tree, host_file):
    """The hazard seen on this machine: an applet link to /bin/busybox, then a write to it."""
    (tree.root / "bin").mkdir()
    os.symlink(host_file, tree.root / "bin" / "busybox")
    with pytest.raises(VnetError, match="refusing to write"):
        tree.write("bin/busybox", b"#!/bin/sh\n# guest init\n", 0o755)
    assert host_file.read_bytes() == b"host original"


def test_write_refuses_a_linked_directory_even_inside_the_tree(tree, host_file):
    os.symlink(host_file.parent, tree.root / "usr")  # usr -> a host directory
    with pytest.raises(VnetError, match="refusing to write"):
        tree.write("usr/new-file", b"x")
    assert not (host_file.parent / "new-file").exists()
    (tree.root / "real").mkdir()
    os.symlink("real", tree.root / "alias")  # in-tree, relative: still never written through
    with pytest.raises(VnetError, match="refusing to write"):
        tree.write("alias/file", b"x")


def test_links_are_relative_and_made_last(tree):
    tree.write("usr/bin/busybox", b"\x7fELF", 0o755)
    tree.link("usr/bin/sh", "busybox")
    tree.link("usr/lib64/ld-linux-x86-64.so.2", "/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
    tree.link("bin", "usr/bin")
    assert not (tree.root / "usr/bin/sh").exists()  # nothing made before seal()
    tree.seal()
    assert os.readlink(tree.root / "usr/lib64/ld-linux-x86-64.so.2") == \
        "../lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
    assert os.readlink(tree.root / "bin") == "usr/bin"
    assert (tree.root / "bin/sh").resolve() == (tree.root / "usr/bin/busybox").resolve()
    with pytest.raises(VnetError, match="sealed"):
        tree.write("etc/passwd", b"root")


def test_link_refuses_targets_that_leave_the_tree(tree):
    with pytest.raises(VnetError, match="leaves the build tree"):
        tree.link("usr/bin/busybox", "../../../bin/busybox")


def test_seal_keeps_existing_files(tree):
    tree.write("usr/bin/python3", b"real file")
    tree.link("usr/bin/python3", "python3.11")
    tree.seal()
    assert (tree.root / "usr/bin/python3").read_bytes() == b"real file"


@pytest.mark.parametrize("rel, merged", [("bin/sh", "usr/bin/sh"), ("lib64", "usr/lib64"),
                                         ("lib/x86_64-linux-gnu/libc.so.6",
                                          "usr/lib/x86_64-linux-gnu/libc.so.6"),
                                         ("usr/bin/python3.11", "usr/bin/python3.11"),
                                         ("etc/shells", "etc/shells")])
def test_usr_merge_mapping(rel, merged):
    assert buildtree.merged(rel) == merged


# ---------------------------------------------------------------- kernel, modules, initramfs

def test_extract_vmlinux_from_a_synthetic_bzimage():
    elf = b"\x7fELF\x02\x01\x01" + os.urandom(4096)
    decoy = b"\xfd7zXZ\x00" + b"not really xz"
    blob = b"MZ" + b"\0" * 500 + decoy + lzma.compress(elf, format=lzma.FORMAT_XZ) + b"trailer"
    assert images.extract_vmlinux(blob) == elf


def test_extract_vmlinux_wants_an_elf():
    blob = b"MZ" + lzma.compress(b"not an elf", format=lzma.FORMAT_XZ)
    with pytest.raises(VnetError, match="no XZ-compressed ELF"):
        images.extract_vmlinux(blob)


def make_ko(depends: str, name: str = "x") -> bytes:
    """A minimal ELF64 relocatable with .shstrtab and .modinfo sections."""
    shstrtab = b"\0.shstrtab\0.modinfo\0"
    modinfo = f"license=GPL\0depends={depends}\0name={name}\0".encode()
    body = shstrtab + modinfo
    shoff = 64 + len(body)
    header = (b"\x7fELF\x02\x01\x01" + b"\0" * 9 +
              struct.pack("<HHIQQQIHHHHHH", 1, 62, 1, 0, 0, shoff, 0, 64, 0, 0, 64, 3, 1))
    null = b"\0" * 64
    sh_str = struct.pack("<IIQQQQIIQQ", 1, 3, 0, 0, 64, len(shstrtab), 0, 0, 1, 0)
    sh_mod = struct.pack("<IIQQQQIIQQ", 11, 1, 2, 0, 64 + len(shstrtab), len(modinfo), 0, 0, 1, 0)
    return header + body + null + sh_str + sh_mod


def test_modinfo_reads_depends():
    info = images.modinfo(make_ko("virtio,virtio_ring", "virtio_net"))
    assert info["depends"] == "virtio,virtio_ring" and info["name"] == "virtio_net"


def test_module_order_puts_dependencies_first_and_skips_builtins():
    kos = {"virtio_net": make_ko("net_failover,virtio,virtio_ring"),
           "net_failover": make_ko("failover"), "failover": make_ko(""),
           "virtio": make_ko("virtio_ring"), "virtio_ring": make_ko(""),
           "ext4": make_ko("mbcache,jbd2,crc16"), "mbcache": make_ko(""), "jbd2": make_ko("")}
    order = images.module_order(["virtio_net", "ext4"], kos.get, builtin={"crc16"})
    assert order.index("failover") < order.index("net_failover") < order.index("virtio_net")
    assert order.index("virtio_ring") < order.index("virtio") < order.index("virtio_net")
    assert sorted(order) == sorted(kos) and "crc16" not in order


def test_module_order_reports_missing_modules_and_cycles():
    with pytest.raises(VnetError, match="neither built in"):
        images.module_order(["a"], {"a": make_ko("b")}.get, set())
    with pytest.raises(VnetError, match="cycle"):
        images.module_order(["a"], {"a": make_ko("b"), "b": make_ko("a")}.get, set())


def read_cpio(data: bytes) -> dict[str, tuple[int, bytes, int]]:
    entries, pos = {}, 0
    while True:
        assert data[pos:pos + 6] == b"070701"
        f = [int(data[pos + 6 + 8 * i:pos + 14 + 8 * i], 16) for i in range(13)]
        name = data[pos + 110:pos + 110 + f[11] - 1].decode()
        pos = (pos + 110 + f[11] + 3) & ~3
        body = data[pos:pos + f[6]]
        pos = (pos + f[6] + 3) & ~3
        if name == "TRAILER!!!":
            return entries
        entries[name] = (f[1], body, f[9] << 8 | f[10])


def test_cpio_newc_round_trip():
    data = images.cpio_newc([("bin", 0o40755, b"", 0), ("bin/busybox", 0o100755, b"\x7fELF!", 0),
                             ("bin/sh", 0o120777, b"busybox", 0),
                             ("dev/console", 0o20600, b"", 5 << 8 | 1)])
    assert len(data) % 4 == 0
    got = read_cpio(data)
    assert got["bin/busybox"] == (0o100755, b"\x7fELF!", 0)
    assert got["bin/sh"] == (0o120777, b"busybox", 0)
    assert got["dev/console"] == (0o20600, b"", 5 << 8 | 1)


@pytest.mark.skipif(not (shutil.which("cpio") or shutil.which("busybox")),
                    reason="neither cpio nor busybox is installed")
def test_cpio_newc_is_readable_by_cpio():
    data = images.cpio_newc([("init", 0o100755, b"#!/bin/sh\n", 0), ("lib", 0o40755, b"", 0)])
    cpio = [shutil.which("cpio")] if shutil.which("cpio") else [shutil.which("busybox"), "cpio"]
    listing = subprocess.run([*cpio, "-t"], input=data, capture_output=True, check=True)
    assert listing.stdout.split() == [b"init", b"lib"]


def test_initramfs_carries_init_busybox_modules_and_console(tmp_path):
    import gzip
    kernel.initramfs(tmp_path / "initrd.gz", (GUEST / "initramfs-init").read_bytes(),
                     b"\x7fELF busybox", [("virtio", b"ko1"), ("virtio_net", b"ko2")])
    got = read_cpio(gzip.decompress((tmp_path / "initrd.gz").read_bytes()))
    assert got["init"][1] == (GUEST / "initramfs-init").read_bytes()
    assert got["lib/modules/order"][1] == b"virtio\nvirtio_net\n"
    assert got["lib/modules/virtio_net.ko"][1] == b"ko2"
    assert got["dev/console"][2] == 5 << 8 | 1


# ---------------------------------------------------------------- digest and cache

DEBS = [{"name": name, "file": f"{name}_1.0-1_amd64.deb", "sha256": f"{i:064x}"}
        for i, name in enumerate(["linux-image-6.1.0-56-amd64", *guestdebs.PACKAGES])]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VNET_CACHE_DIR", str(tmp_path / "cache"))
    debdir = tmp_path / "cache" / "debs"           # apt's answer, remembered for these lists
    debdir.mkdir(parents=True)
    (debdir / guestdebs.MEMO).write_text(json.dumps({"stamp": guestdebs.lists_stamp(),
                                                     "debs": DEBS}))

    def no_commands(*a, **k):
        raise AssertionError(f"a cached image must not run anything: {a}")
    monkeypatch.setattr(images.runner, "run", no_commands)
    return tmp_path / "cache"


def fake_image(cache: Path, digest: str, built_at: str = "2026-11-28T00:00:00Z") -> Path:
    d = cache / "images" / f"tiny-{digest}"
    d.mkdir(parents=True)
    for name in ("vmlinux", "initrd.gz", "root.ext4"):
        (d / name).write_bytes(b"x" * 8192)
    (d / "manifest.json").write_text(json.dumps({
        "name": "tiny", "digest": digest, "code": images._code_digest(), "kernel": "vmlinux",
        "initrd": "initrd.gz", "rootdisk": "root.ext4", "cmdline_base": "console=ttyS0",
        "built_at": built_at}))
    return d


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("VNET_CACHE_DIR", str(tmp_path))
    assert images.cache_dir() == tmp_path
    monkeypatch.delenv("VNET_CACHE_DIR")
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert images.cache_dir() == tmp_path / "user" / ".cache" / "vnet"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert images.cache_dir() == tmp_path / "xdg" / "vnet"


def test_root_never_caches_in_the_home_sudo_e_keeps(monkeypatch, tmp_path):
    """`sudo -E vnet ...` keeps the user's HOME: root's images and boxes went there, owned by
    root, in the user's home."""
    monkeypatch.delenv("VNET_CACHE_DIR", raising=False)
    monkeypatch.setattr("os.geteuid", lambda: 0)
    monkeypatch.setenv("HOME", str(tmp_path / "user"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "user" / ".cache"))
    assert images.cache_dir() == Path("/var/cache/vnet")


def test_digest_covers_packages_and_code():
    base = images._digest(DEBS)
    assert len(base) == 16 and base == images._digest(DEBS)
    assert images._digest([DEBS[0], {**DEBS[1], "sha256": "c" * 64}, *DEBS[2:]]) != base
    assert images._digest([DEBS[0], {**DEBS[1], "file": "busybox-static_2_amd64.deb"},
                           *DEBS[2:]]) != base


def test_build_tiny_returns_a_cached_image_without_running_anything(cache):
    d = fake_image(cache, images._digest(DEBS))
    image = images.build_tiny(progress=lambda line: None)
    assert image == images.Image("tiny", images._digest(DEBS), d / "vmlinux", d / "initrd.gz",
                                 d / "root.ext4", "console=ttyS0")
    assert images.find_tiny() == image


def test_find_tiny_is_none_when_nothing_is_cached(cache):
    assert images.find_tiny() is None


def test_find_tiny_without_apt_takes_the_newest_image_of_this_code(cache, monkeypatch):
    (cache / "debs" / guestdebs.MEMO).unlink()
    monkeypatch.setenv("PATH", str(cache / "empty"))     # no apt-get on it
    fake_image(cache, "1111111111111111", "2026-11-01T00:00:00Z")
    newest = fake_image(cache, "2222222222222222", "2026-11-20T00:00:00Z")
    assert images.find_tiny().kernel == newest / "vmlinux"


def test_list_cached(cache):
    d = fake_image(cache, "3333333333333333")
    (rows,) = images.list_cached()
    assert rows["name"] == "tiny" and rows["digest"] == "3333333333333333"
    assert rows["path"] == str(d) and rows["built_at"] == "2026-11-28T00:00:00Z"
    assert rows["size_mib"] >= 0


# ---------------------------------------------------------------- guest files

@pytest.mark.parametrize("script", ["initramfs-init", "rootfs/usr/lib/vnet/init",
                                    "rootfs/usr/lib/vnet/udhcpc", "rootfs/usr/lib/vnet/echo"])
def test_guest_scripts_parse(script):
    shell = shutil.which("busybox") or shutil.which("sh")
    argv = [shell, "sh", "-n"] if shell.endswith("busybox") else [shell, "-n"]
    # -n only parses: a guest init must never run on the host
    res = subprocess.run([*argv, str(GUEST / script)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert (GUEST / script).read_text().startswith("#!/bin/sh\n")


def test_guest_links_are_relative():
    for line in (GUEST / "links.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            path, target = line.split()
            assert not target.startswith("/") and not path.startswith("/")


def test_root_login_is_key_only():
    passwd = (GUEST / "rootfs/etc/passwd").read_text()
    shadow = (GUEST / "rootfs/etc/shadow").read_text()
    assert passwd.startswith("root:x:0:0:root:/root:/bin/sh\n")
    assert shadow.startswith("root:*:")  # no password can match "*"
    assert "/bin/sh" in (GUEST / "rootfs/etc/shells").read_text().split()


def test_the_cache_key_covers_every_guest_module_the_builder_imports():
    """The image's code digest hashes images.BUILDERS: a module of provisioner/guest/ that the
    builder reaches (directly or through another builder module) and that is left out of it
    would change the image without changing its cache key. Read with ast: nothing runs."""
    import ast

    package = Path(images.__file__).resolve().parent
    reached, todo = set(), ["images"]
    while todo:
        name = todo.pop()
        if name in reached:
            continue
        reached.add(name)
        for node in ast.walk(ast.parse((package / f"{name}.py").read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                names = [node.module] if node.module else [a.name for a in node.names]
                todo += [n for n in names if (package / f"{n}.py").is_file()]
    assert reached >= {"images", "buildtree", "debs", "kernel"}
    assert {p.stem for p in images.BUILDERS} == reached
    assert all(p.parent == package for p in images.BUILDERS)


def test_the_code_digest_changes_with_each_builder_module(monkeypatch, tmp_path):
    base = images._code_digest()
    for i, source in enumerate(images.BUILDERS):
        edited = tmp_path / source.name
        edited.write_bytes(source.read_bytes() + b"\n# edited\n")
        others = list(images.BUILDERS)
        others[i] = edited
        monkeypatch.setattr(images, "BUILDERS", tuple(others))
        assert images._code_digest() != base, source.name


def _elf64(segments: list[tuple[int, bytes, int]]) -> bytes:
    """An ELF64 header and program headers (type, data, memsz) with each segment's data after
    them, page-aligned: enough for trim_zero_tails, which reads only those."""
    phoff, phentsize = 64, 56
    data_at = 4096
    header = bytearray(b"\x7fELF\x02\x01\x01" + bytes(57))
    struct.pack_into("<Q", header, 0x20, phoff)
    struct.pack_into("<HH", header, 0x36, phentsize, len(segments))
    body, phdrs = bytearray(), bytearray()
    for p_type, data, memsz in segments:
        offset = data_at + len(body)
        phdrs += struct.pack("<IIQQQQQQ", p_type, 0, offset, 0, 0, len(data), memsz, 4096)
        body += data + bytes(-len(data) % 4096)
    return bytes(header + phdrs + bytes(data_at - 64 - len(phdrs)) + body)


def _loaded(elf: bytes) -> list[bytes]:
    """What a loader puts in memory for each PT_LOAD: p_filesz bytes of the file, zeros to
    p_memsz."""
    phnum, = struct.unpack_from("<H", elf, 0x38)
    images = []
    for i in range(phnum):
        p_type, _, offset, _, _, filesz, memsz, _ = struct.unpack_from("<IIQQQQQQ", elf, 64 + 56 * i)
        if p_type == kernel.PT_LOAD:
            images.append(elf[offset:offset + filesz] + bytes(memsz - filesz))
    return images


def test_trimmed_vmlinux_loads_the_same_memory_and_maps_fewer_file_pages():
    code = b"\x90" * 5000 + bytes(3 * 4096)            # code, then zeros stored in the file
    bss_like = b"\x01\x02" + bytes(10 * 4096)          # a live byte, then a .bss stored as zeros
    note = bytes(64)
    elf = _elf64([(kernel.PT_LOAD, code, len(code)), (4, note, len(note)),
                  (kernel.PT_LOAD, bss_like, len(bss_like) + 8192)])
    trimmed = kernel.trim_zero_tails(elf)
    assert _loaded(trimmed) == _loaded(elf)
    sizes = [struct.unpack_from("<Q", trimmed, 64 + 56 * i + 32)[0] for i in range(3)]
    assert sizes == [8192, len(note), 4096]            # whole pages; the note is left as it was
    assert len(trimmed) == len(elf)


def test_trimming_an_already_trimmed_kernel_changes_nothing():
    elf = _elf64([(kernel.PT_LOAD, b"\x90" * 4096, 8 * 4096)])
    assert kernel.trim_zero_tails(kernel.trim_zero_tails(elf)) == kernel.trim_zero_tails(elf)


def test_an_all_zero_segment_keeps_its_data():
    elf = _elf64([(kernel.PT_LOAD, bytes(3 * 4096), 3 * 4096)])
    assert kernel.trim_zero_tails(elf) == elf


@pytest.mark.parametrize("damage", ["not elf64", "segment past the end"])
def test_a_damaged_kernel_is_refused_not_trimmed(damage):
    elf = _elf64([(kernel.PT_LOAD, b"\x90" * 4096, 4096)])
    if damage == "not elf64":
        elf = elf[:4] + b"\x01" + elf[5:]                    # ELFCLASS32
    else:
        elf = elf[:-100]                                      # the file ends inside the segment
    with pytest.raises(VnetError):
        kernel.trim_zero_tails(elf)


@pytest.mark.parametrize("force", [False, True])
def test_a_build_with_an_unreadable_manifest_is_set_aside_and_built_again(cache, monkeypatch,
                                                                           force):
    """It crashed a plain build (JSON error) and --force refused to remove it, so nothing could
    rebuild it. vnet cannot tell it built that folder: it renames it, never removes it."""
    monkeypatch.setenv("VNET_STATE_DIR", str(cache.parent / "state"))   # no lab uses it
    d = fake_image(cache, images._digest(DEBS))
    (d / "manifest.json").write_text('{"name": "tiny", "dig')           # torn
    monkeypatch.setattr(images.runner, "which", lambda tool: None)      # stop at the build
    said = []
    with pytest.raises(VnetError, match="needs mksquashfs"):
        images.build_tiny(progress=said.append, force=force)
    [aside] = [p for p in (cache / "images").iterdir() if p.name.startswith(".unreadable-")]
    assert not d.exists() and (aside / "vmlinux").read_bytes() == b"x" * 8192
    assert any("moved aside" in m and str(aside) in m for m in said)
    assert images.find_tiny() is None and images.list_cached() == []


def test_an_unreadable_build_a_lab_uses_is_left_where_it_is(cache, monkeypatch):
    """Moved aside, it would leave the lab's overlays and kernel paths pointing at nothing."""
    state_dir = cache.parent / "state"
    monkeypatch.setenv("VNET_STATE_DIR", str(state_dir))
    d = fake_image(cache, images._digest(DEBS))
    (d / "manifest.json").write_text("not json")
    lab = state_dir / "labs" / "sandbox-x" / "web"
    lab.mkdir(parents=True)
    (lab / "lab.json").write_text(json.dumps({"lab": "web", "image": str(d)}))
    with pytest.raises(VnetError, match="lab sandbox-x/web uses it"):
        images.build_tiny(progress=lambda m: None, force=True)
    assert d.is_dir() and (d / "vmlinux").exists()


def test_an_older_vnets_cache_in_roots_home_is_pointed_out(monkeypatch, tmp_path):
    """Root's cache moved to /var/cache/vnet (only read here): the old one would sit unseen."""
    from click.testing import CliRunner

    from provisioner.cli import main

    monkeypatch.delenv("VNET_CACHE_DIR", raising=False)
    monkeypatch.setenv("VNET_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setattr("os.geteuid", lambda: 0)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home" / ".cache" / "vnet" / "images").mkdir(parents=True)
    result = CliRunner().invoke(main, ["image", "list"])
    assert f"note: {tmp_path / 'home' / '.cache' / 'vnet'} is an older vnet's cache" \
        in result.output, result.output


@pytest.mark.parametrize("bad", [{"file": "../../../../etc/x.deb"},
                                 {"name": "../../../../etc", "file": "x_1_amd64.deb"},
                                 {"sha256": "not hex"}])
def test_a_memo_whose_entries_are_no_package_files_is_no_resolution(cache, bad):
    """resolved.json's names and files become paths root unpacks into and reads: a memo that
    anything else wrote is read as a miss (apt is asked again), never followed."""
    debs = [dict(DEBS[0], **bad), *DEBS[1:]]
    memo = cache / "debs" / guestdebs.MEMO
    memo.write_text(json.dumps({"stamp": guestdebs.lists_stamp(), "debs": debs}))
    with pytest.raises(AssertionError, match="must not run anything"):      # apt asked again
        guestdebs.resolve(cache / "debs", update=False)
    memo.write_text(json.dumps({"stamp": guestdebs.lists_stamp(), "debs": DEBS}))
    assert guestdebs.resolve(cache / "debs", update=False) == DEBS


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root: it tells folders root owns from "
                                              "others, and makes one owned by another uid")
def test_root_works_only_in_folders_no_other_user_can_change(monkeypatch, tmp_path):
    """`sudo -E` keeps VNET_STATE_DIR and VNET_CACHE_DIR: in a folder a user owns, a symlink
    planted there turns root's next write or removal onto any file."""
    from provisioner.errors import LabFileError
    from provisioner.host import paths

    monkeypatch.setattr("os.geteuid", lambda: 0)
    mine = tmp_path / "mine"
    mine.mkdir()
    monkeypatch.setenv("VNET_CACHE_DIR", str(mine / "cache"))
    assert paths.cache_dir() == (mine / "cache").resolve()          # root's, 0700 above it
    theirs, open_ = tmp_path / "theirs", tmp_path / "open"
    theirs.mkdir()
    os.chown(theirs, 1000, 1000)                 # another user's folder
    monkeypatch.setenv("VNET_STATE_DIR", str(theirs / "state"))
    with pytest.raises(LabFileError, match=r"VNET_STATE_DIR: .* is owned by uid 1000"):
        paths.state_root()
    open_.mkdir()
    open_.chmod(0o777)                           # root's, but anyone may write there
    monkeypatch.setenv("VNET_STATE_DIR", str(open_ / "state"))
    with pytest.raises(LabFileError, match=r"VNET_STATE_DIR: .* is writable by others"):
        paths.state_root()
    sticky = tmp_path / "sticky"
    sticky.mkdir()
    sticky.chmod(0o1777)                         # as /tmp: others cannot replace root's files
    monkeypatch.setenv("VNET_STATE_DIR", str(sticky / "state"))
    assert paths.state_root() == (sticky / "state").resolve()
    monkeypatch.setenv("VNET_STATE_DIR", str(sticky))       # but not as the folder itself:
    with pytest.raises(LabFileError, match="is writable by others"):   # others name its
        paths.state_root()                                    # entries (labs/...) first
