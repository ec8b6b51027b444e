"""The Debian cloud image builder without building one: the mmdebstrap command (every change to
the tree happens inside the chroot), the disk layout (MBR, GRUB's core.img in the gap, ext4 at
1 MiB) from a small tree, the cache key and the cache hit. No root, no network."""
from __future__ import annotations

import json
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from provisioner import cloudbuild
from provisioner.cli import main
from provisioner.errors import Unsupported

RECIPE = cloudbuild.recipe("debian12")
PINNED = {p: "1.0" for p in RECIPE.packages}


def test_unknown_cloud_image_is_bad_input_with_the_choices(tmp_path, monkeypatch):
    monkeypatch.setenv("VNET_CACHE_DIR", str(tmp_path))
    with pytest.raises(Unsupported, match="valid: debian12"):
        cloudbuild.recipe("nope")
    result = CliRunner().invoke(main, ["image", "build", "--cloud", "nope"])
    assert result.exit_code == 2 and "debian12" in result.output
    assert not any(tmp_path.iterdir())


def test_mmdebstrap_changes_the_tree_only_from_inside_the_chroot(tmp_path):
    argv = cloudbuild.mmdebstrap_argv(RECIPE, tmp_path / "w", tmp_path / "t")
    assert argv[:4] == ["unshare", "--mount", "--propagation", "private"]
    assert "--mode=root" in argv and argv[-4:-3] == [str(tmp_path / "t")]
    hooks = [a.split("=", 1)[1] for a in argv if a.startswith("--customize-hook=")]
    for hook in hooks:
        # mmdebstrap's special hooks copy in/out through the chroot; anything else is chroot
        assert hook.split()[0] in ("upload", "download") or hook.startswith('chroot "$1" ')
    downloads = [h.split()[2] for h in hooks if h.startswith("download ")]
    assert downloads == [f"{tmp_path}/w/core.img", f"{tmp_path}/w/boot.img",
                         f"{tmp_path}/w/packages.txt"]
    assert set(RECIPE.packages) <= set(argv[argv.index("--variant=minbase") + 1]
                                       .removeprefix("--include=").split(","))


def test_customize_script_empties_identity_and_probes_nocloud_only():
    script = cloudbuild.CUSTOMIZE
    assert "truncate -s 0 /etc/machine-id" in script and "rm -f /etc/ssh/ssh_host_*" in script
    assert "datasource_list: [ NoCloud, None ]" in script
    assert f"root=LABEL={cloudbuild.ROOT_LABEL}" in script and "console=ttyS0" in script


def test_cache_key_follows_versions_and_the_script(monkeypatch):
    base = cloudbuild.digest("debian12", RECIPE, PINNED)
    assert base == cloudbuild.digest("debian12", RECIPE, dict(PINNED))
    assert base != cloudbuild.digest("debian12", RECIPE, {**PINNED, "cloud-init": "2.0"})
    monkeypatch.setattr(cloudbuild, "CUSTOMIZE", cloudbuild.CUSTOMIZE + "true\n")
    assert base != cloudbuild.digest("debian12", RECIPE, PINNED)


def test_a_cached_build_is_reused_without_running_anything(tmp_path, monkeypatch):
    monkeypatch.setenv("VNET_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(cloudbuild, "versions", lambda r: PINNED)
    monkeypatch.setattr(cloudbuild.runner, "which", lambda tool: f"/usr/bin/{tool}")
    monkeypatch.setattr(cloudbuild.runner, "spawn", lambda *a, **kw: pytest.fail("built"))
    key = cloudbuild.digest("debian12", RECIPE, PINNED)
    d = tmp_path / "images" / f"debian12-{key}"
    d.mkdir(parents=True)
    (d / "manifest.json").write_text(json.dumps({"name": "debian12", "digest": key,
                                                 "disk": "disk.qcow2", "sha256": "f" * 64}))
    got = cloudbuild.build("debian12", progress=lambda m: None)
    assert got.disk == d / "disk.qcow2" and got.sha256 == "f" * 64
    assert got.url == (d / "disk.qcow2").as_uri()


def test_mbr_has_grub_code_one_bootable_linux_partition_and_the_signature():
    boot = bytes(range(256)) * 2
    sector = cloudbuild.mbr(boot, 2048, 4096)
    assert len(sector) == 512 and sector[:440] == boot[:440] and sector[510:] == b"\x55\xaa"
    status, ptype = sector[446], sector[450]
    start, count = struct.unpack_from("<II", sector, 454)
    assert (status, ptype, start, count) == (0x80, 0x83, 2048, 4096)
    assert sector[462:510] == bytes(48)


@pytest.mark.skipif(not shutil.which("mke2fs"), reason="mke2fs (e2fsprogs) is not installed")
def test_disk_layout_from_a_small_tree(tmp_path):
    tree = tmp_path / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc" / "hostname").write_text("localhost\n")
    (tree / "vmlinuz").symlink_to("boot/vmlinuz-x")           # a link stays a link in ext4
    raw = tmp_path / "disk.raw"
    core = b"\xc0" * 3000
    size = 16 * 2**20
    cloudbuild.write_disk(raw, tree, b"\xb0" * 510 + b"\x55\xaa", core, fs_size=size)
    data = raw.read_bytes()
    assert len(data) == 2048 * 512 + size
    assert data[:440] == b"\xb0" * 440 and data[510:512] == b"\x55\xaa"
    assert data[512:512 + len(core)] == core
    sb = 2048 * 512 + 1024                                     # the ext4 superblock
    assert data[sb + 56:sb + 58] == b"\x53\xef"
    assert data[sb + 120:sb + 136].rstrip(b"\0") == cloudbuild.ROOT_LABEL.encode()
    if shutil.which("debugfs"):
        part = tmp_path / "part.ext4"
        part.write_bytes(data[2048 * 512:])
        out = subprocess.run(["debugfs", "-R", "cat /etc/hostname", str(part)],
                             capture_output=True, text=True).stdout
        assert out == "localhost\n"
    assert not (tmp_path / "boot").exists()                    # nothing written via the link


def test_core_img_too_big_for_the_gap_is_refused(tmp_path):
    (tmp_path / "t").mkdir()
    with pytest.raises(Exception, match="does not fit"):
        cloudbuild.write_disk(tmp_path / "d.raw", tmp_path / "t", bytes(512),
                              bytes(2048 * 512), fs_size=2**20)
    assert not (tmp_path / "d.raw").exists()
