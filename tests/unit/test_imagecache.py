"""`vnet image prune` and `vnet image list`: what the cache holds, what labs use, and that
nothing outside the cache (or without vnet's marker) is ever removed. No root, no QEMU."""
from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import pytest
from click.testing import CliRunner

from provisioner.guest import debs, imagecache
from provisioner.host import imageusers
from provisioner.cli import main
from provisioner.errors import VnetError

from .lab_fakes import FakeDriver

SHA_A = "a" * 64
SHA_B = "b" * 64
CURRENT_BUILDS = imagecache.current_builds


@pytest.fixture
def roots(tmp_path, monkeypatch):
    cache, state = tmp_path / "cache", tmp_path / "state"
    monkeypatch.setenv("VNET_CACHE_DIR", str(cache))
    monkeypatch.setenv("VNET_STATE_DIR", str(state))
    monkeypatch.setattr(imagecache, "current_builds", set)   # no apt look-ups in unit tests
    (cache / "images").mkdir(parents=True)
    (cache / "cloud").mkdir()
    return cache, state


def built(cache: Path, name: str, digest: str, when: str, sha256: str | None = None) -> Path:
    d = cache / "images" / f"{name}-{digest}"
    d.mkdir()
    m = {"name": name, "digest": digest, "built_at": when}
    if sha256:
        m["sha256"] = sha256
    (d / "manifest.json").write_text(json.dumps(m))
    (d / "root.ext4").write_bytes(b"\1" * 8192)
    return d


def qcow2(path: Path, backing: str | None = None) -> Path:
    """A qcow2 header (magic, version 3) naming `backing` at offset 512."""
    data = bytearray(b"QFI\xfb" + struct.pack(">I", 3) + bytes(504))
    if backing:
        struct.pack_into(">QI", data, 8, 512, len(backing))
        data += backing.encode()
    path.write_bytes(bytes(data))
    return path


def lab(state: Path, name: str, record: dict, target: str = "sandbox-h6x") -> Path:
    d = state / "labs" / target / name
    d.mkdir(parents=True)
    (d / "lab.json").write_text(json.dumps(record))
    return d


def names(entries) -> set[str]:
    return {e.path.name for e in entries}


def test_an_image_a_lab_uses_survives_keep_zero(roots):
    cache, state = roots
    old = built(cache, "tiny", "old", "2026-01-01T00:00:00Z")
    mid = built(cache, "tiny", "mid", "2026-02-01T00:00:00Z")
    new = built(cache, "tiny", "new", "2026-03-01T00:00:00Z")
    lab(state, "web", {"lab": "web", "image": str(old)})
    gone = imagecache.prune(keep=0, progress=lambda m: None)
    assert names(gone) == {mid.name, new.name}
    assert old.is_dir() and not mid.exists() and not new.exists()


def test_keep_n_keeps_the_newest_of_each_name(roots):
    cache, _ = roots
    tiny = [built(cache, "tiny", f"t{i}", f"2026-0{i}-01T00:00:00Z") for i in range(1, 5)]
    deb = [built(cache, "debian12", f"d{i}", f"2026-0{i}-01T00:00:00Z", sha256=str(i) * 64)
           for i in range(1, 3)]
    gone = imagecache.prune(keep=2, progress=lambda m: None)
    assert names(gone) == {tiny[0].name, tiny[1].name}
    assert all(p.is_dir() for p in tiny[2:] + deb)


def test_dry_run_removes_nothing(roots):
    cache, _ = roots
    a = built(cache, "tiny", "a", "2026-01-01T00:00:00Z")
    b = built(cache, "tiny", "b", "2026-02-01T00:00:00Z")
    gone = imagecache.prune(keep=0, dry_run=True, progress=lambda m: None)
    assert names(gone) == {a.name, b.name} and a.is_dir() and b.is_dir()


def test_cloud_images_in_use_by_sha256_or_by_an_overlay_survive(roots):
    cache, state = roots
    pinned = qcow2(cache / "cloud" / f"{SHA_A}.qcow2")
    backing = qcow2(cache / "cloud" / f"{SHA_B}.qcow2")
    spare = qcow2(cache / "cloud" / f"{'c' * 64}.qcow2")
    lab(state, "one", {"lab": "one", "image": "/x/images/tiny-z",
                       "lab_data": {"images": {"deb": {"url": "file:///x", "sha256": SHA_A}}}})
    other = lab(state, "two", {"lab": "two", "image": "/x/images/tiny-z"}, target="uri-0123")
    qcow2(other / "web1.overlay.qcow2", backing=str(backing))
    built_cloud = built(cache, "debian12", "d1", "2026-01-01T00:00:00Z", sha256=SHA_A)
    gone = imagecache.prune(keep=0, progress=lambda m: None)
    assert names(gone) == {spare.name}
    assert pinned.is_file() and backing.is_file() and built_cloud.is_dir()


def test_a_record_naming_no_tiny_image_keeps_every_tiny_image(roots):
    cache, state = roots
    a = built(cache, "tiny", "a", "2026-01-01T00:00:00Z")
    lab(state, "old", {"lab": "old", "backend": "libvirt"})      # before records named it
    assert imagecache.prune(keep=0, progress=lambda m: None) == []
    assert a.is_dir()


def test_nothing_without_vnets_marker_or_outside_the_cache_is_removed(roots, tmp_path):
    cache, _ = roots
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "manifest.json").write_text(json.dumps({"name": "tiny", "digest": "x",
                                                       "built_at": "2020-01-01T00:00:00Z"}))
    (cache / "images" / "tiny-link").symlink_to(outside)            # a link out of the cache
    foreign = cache / "images" / "tiny-foreign"                     # no manifest: not ours
    foreign.mkdir()
    (foreign / "data").write_text("keep me")
    not_qcow2 = cache / "cloud" / f"{SHA_A}.qcow2"                  # right name, wrong content
    not_qcow2.write_bytes(b"not a disk image")
    odd_name = qcow2(cache / "cloud" / "mine.qcow2")               # not named by a sha256
    victim = qcow2(tmp_path / f"{SHA_B}.qcow2")
    (cache / "cloud" / f"{SHA_B}.qcow2").symlink_to(victim)         # a link out of the cache
    gone = imagecache.prune(keep=0, progress=lambda m: None)
    assert gone == []
    assert (outside / "manifest.json").is_file() and (foreign / "data").is_file()
    assert not_qcow2.is_file() and odd_name.is_file() and victim.is_file()


def test_removal_rechecks_the_path_under_the_cache(roots, tmp_path):
    """An entry whose path was swapped for a link out of the cache between listing and removal
    is refused, and its target stays."""
    cache, _ = roots
    d = built(cache, "tiny", "a", "2026-01-01T00:00:00Z")
    entry = imagecache.entries()[0]
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "manifest.json").write_text("{}")
    os.rename(d, tmp_path / "moved")
    d.symlink_to(outside)
    with pytest.raises(VnetError, match="refusing"):
        imagecache._remove(entry)
    assert (outside / "manifest.json").is_file()


def test_backing_file_is_read_from_the_qcow2_header(tmp_path):
    assert imageusers.backing_file(qcow2(tmp_path / "o.qcow2", "/c/base.qcow2")) == \
        "/c/base.qcow2"
    assert imageusers.backing_file(qcow2(tmp_path / "b.qcow2")) is None
    (tmp_path / "junk").write_bytes(b"junk")
    assert imageusers.backing_file(tmp_path / "junk") is None


def test_cli_list_shows_sizes_and_total(roots):
    cache, _ = roots
    d = built(cache, "tiny", "a", "2026-01-01T00:00:00Z")
    (d / "root.ext4").write_bytes(b"\1" * 3 * 2**20)
    qcow2(cache / "cloud" / f"{SHA_A}.qcow2")
    result = CliRunner().invoke(main, ["image", "list", "--format", "json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert {i["name"] for i in data["images"]} == {"tiny", "cloud"}
    assert [i["size_mib"] for i in data["images"] if i["name"] == "tiny"][0] >= 3.0
    assert abs(data["total_mib"] - sum(i["size_mib"] for i in data["images"])) < 0.2
    table = CliRunner().invoke(main, ["image", "list"])
    assert "size_mib" in table.output and "total:" in table.output


def test_cli_prune_refuses_a_negative_keep_and_removes_nothing(roots):
    cache, _ = roots
    a = built(cache, "tiny", "a", "2026-01-01T00:00:00Z")
    result = CliRunner().invoke(main, ["image", "prune", "--keep", "-1"])
    assert result.exit_code == 2 and a.is_dir()
    result = CliRunner().invoke(main, ["image", "prune", "--keep", "0"])
    assert result.exit_code == 0 and not a.exists() and "freed" in result.output


def test_a_libvirt_lab_record_names_its_tiny_image(roots, monkeypatch, tmp_path):
    """`vnet up` writes the tiny image's directory into the lab record, so prune can keep it."""
    from provisioner.host import accel, forwarding, state
    from provisioner import doctor
    from provisioner.guest import images
    from provisioner.lab import loader as labfile
    from provisioner.drivers.libvirt import lifecycle

    cache, _ = roots
    d = built(cache, "tiny", "abc", "2026-01-01T00:00:00Z")
    image = images.Image("tiny", "abc", d / "vmlinux", d / "initrd.gz", d / "root.ext4",
                         "console=ttyS0")
    monkeypatch.setattr(doctor, "preflight", lambda *a, **kw: None)
    monkeypatch.setattr(images, "build_tiny", lambda **kw: image)
    monkeypatch.setattr(accel, "choose", lambda *a, **kw: "qemu")
    monkeypatch.setattr(state, "ssh_key", lambda *a: (tmp_path / "k", "ssh-ed25519 AAAA x"))
    monkeypatch.setattr(forwarding, "check_host_ports", lambda *a: None)

    monkeypatch.setattr(lifecycle, "LibvirtDriver", FakeDriver)
    saved = []

    class Saved(Exception):
        pass

    def save(target, name, record):
        saved.append(json.loads(json.dumps(record, default=str)))
        raise Saved
    monkeypatch.setattr(state, "save", save)
    the_lab = labfile.resolve({"name": "web", "networks": [{"name": "lan", "mode": "hostonly"}],
                               "vms": [{"name": "vm1", "nics": [{"network": "lan"}]}]})
    with pytest.raises(Saved):
        lifecycle.up(the_lab, state.Target(uri="qemu:///system"), lambda m: None)
    assert saved[0]["image"] == str(d)
    lab_dir = roots[1] / "labs" / "uri-x" / "web"
    lab_dir.mkdir(parents=True)
    (lab_dir / "lab.json").write_text(json.dumps(saved[0]))
    newer = built(cache, "tiny", "new", "2026-05-01T00:00:00Z")
    assert names(imagecache.prune(keep=0, progress=lambda m: None)) == {newer.name}
    assert d.is_dir()


def test_the_build_for_the_current_inputs_is_kept(roots, monkeypatch):
    from provisioner.guest import cloudbuild, images

    cache, _ = roots
    current = built(cache, "tiny", "cur", "2026-01-01T00:00:00Z")
    newer = built(cache, "tiny", "new", "2026-02-01T00:00:00Z")
    monkeypatch.setattr(images, "find_tiny", lambda: images.Image(
        "tiny", "cur", current / "vmlinux", current / "initrd.gz", current / "root.ext4", ""))
    monkeypatch.setattr(cloudbuild, "find", lambda name: None)
    monkeypatch.setattr(imagecache, "current_builds", CURRENT_BUILDS)
    assert names(imagecache.prune(keep=0, progress=lambda m: None)) == {newer.name}
    assert current.is_dir()


# --- Vagrant boxes (found on a build machine: ten boxes, 1.2 GiB, that nothing listed) --------

def box(cache: Path, digest: str, provider: str = "libvirt", mtime: float = 0.0) -> Path:
    """A box as vagrantbox.build writes it: an uncompressed tar by that exact name."""
    import io
    import tarfile

    (cache / "boxes").mkdir(exist_ok=True)
    path = cache / "boxes" / f"vnet-tiny-{digest}-{provider}.box"
    with tarfile.open(path, "w") as tar:
        data = b'{"provider": "libvirt"}'
        info = tarfile.TarInfo("metadata.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    if mtime:
        os.utime(path, (mtime, mtime))
    return path


def test_boxes_are_listed_and_pruned_keeping_the_newest_per_provider(roots):
    cache, _ = roots
    old = box(cache, "1" * 16, mtime=1_700_000_000)
    new = box(cache, "2" * 16, mtime=1_800_000_000)
    vbox = box(cache, "1" * 16, "virtualbox", mtime=1_700_000_000)
    assert {(e.kind, e.name) for e in imagecache.entries()} == \
        {("box", "box-libvirt"), ("box", "box-virtualbox")}
    assert names(imagecache.prune(keep=1, progress=lambda m: None)) == {old.name}
    assert new.is_file() and vbox.is_file() and not old.exists()


def test_the_boxes_of_the_current_tiny_image_are_kept(roots, monkeypatch):
    from provisioner.guest import cloudbuild, images

    cache, _ = roots
    current = built(cache, "tiny", "c" * 16, "2026-01-01T00:00:00Z")
    kept, gone = box(cache, "c" * 16), box(cache, "d" * 16, mtime=1_900_000_000)
    monkeypatch.setattr(images, "find_tiny", lambda: images.Image(
        "tiny", "c" * 16, current / "vmlinux", current / "initrd.gz", current / "root.ext4", ""))
    monkeypatch.setattr(cloudbuild, "find", lambda name: None)
    monkeypatch.setattr(imagecache, "current_builds", CURRENT_BUILDS)
    assert names(imagecache.prune(keep=0, progress=lambda m: None)) == {gone.name}
    assert kept.is_file()


def test_what_only_looks_like_a_box_is_never_removed(roots, tmp_path):
    cache, _ = roots
    (cache / "boxes").mkdir()
    not_tar = cache / "boxes" / f"vnet-tiny-{'a' * 16}-libvirt.box"
    not_tar.write_bytes(b"not a tar" * 100)
    odd_name = box(cache, "b" * 16)
    odd_name = odd_name.rename(cache / "boxes" / "mine.box")
    outside = box(tmp_path, "e" * 16)
    (cache / "boxes" / outside.name).symlink_to(outside)           # a link out of the cache
    assert imagecache.prune(keep=0, progress=lambda m: None) == []
    assert not_tar.is_file() and odd_name.is_file() and outside.is_file()


def deb(cache: Path, name: str, mtime: float, body: bytes = b"!<arch>\n debian-binary") -> Path:
    (cache / "debs").mkdir(exist_ok=True)
    path = cache / "debs" / name
    path.write_bytes(body)
    os.utime(path, (mtime, mtime))
    return path


def loader(cache: Path, digest: str, mtime: float, extra: str | None = None) -> Path:
    d = cache / "isolinux" / digest
    d.mkdir(parents=True)
    for name in ("isolinux.bin", "ldlinux.c32", *([extra] if extra else [])):
        (d / name).write_bytes(b"\0" * 512)
    os.utime(d, (mtime, mtime))
    return d


def test_old_packages_and_loaders_go_the_newest_and_the_resolved_stay(roots, tmp_path):
    """debs/ and isolinux/ grew with every Debian point release: nothing pruned them."""
    cache, _ = roots
    old = deb(cache, "iproute2_6.1.0-2_amd64.deb", 1_000_000)
    new = deb(cache, "iproute2_6.1.0-3_amd64.deb", 2_000_000)
    pinned = deb(cache, "dropbear-bin_2022.83-1_amd64.deb", 1_000_000)
    deb(cache, "dropbear-bin_2022.83-2_amd64.deb", 2_000_000)
    (cache / "debs" / "resolved.json").write_text(json.dumps({"stamp": "s", "debs": [
        {"name": name, "file": pinned.name if name == "dropbear-bin" else f"{name}_1_amd64.deb",
         "sha256": SHA_A} for name in ["linux-image-6.1.0-9-amd64", *debs.PACKAGES]]}))
    fake = deb(cache, "notes_1_all.deb", 1, body=b"not an ar archive")   # no ar header: not ours
    outside = tmp_path / "elsewhere_1_amd64.deb"
    outside.write_bytes(b"!<arch>\n")
    (cache / "debs" / "linked_1_amd64.deb").symlink_to(outside)
    stale, newest = loader(cache, "1" * 16, 1_000_000), loader(cache, "2" * 16, 2_000_000)
    foreign = loader(cache, "3" * 16, 500, extra="README")       # more than vnet puts there

    gone = imagecache.prune(keep=0, progress=lambda m: None)
    assert names(gone) == {old.name, stale.name}
    assert not old.exists() and not stale.exists()
    assert new.exists() and pinned.exists() and newest.exists()
    assert fake.exists() and outside.exists() and foreign.exists()
    kinds = {e.kind for e in imagecache.entries()}
    assert {"package", "loader"} <= kinds
