"""Cloud images: the sha256-pinned download cache, overlays, the NoCloud seed ISO, the lab file
forms and the rendered domain. Local files only (file:// URLs); no network, no QEMU boot (that is
tests/integration/test_cloud_image.py, which needs a real image)."""
from __future__ import annotations

import copy
import hashlib
import io
import json
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pycdlib
import pytest
import yaml

from provisioner.guest import cloudimages, seed
from provisioner.drivers.libvirt import lifecycle
from provisioner.host import runner, state
from provisioner.lab import loader as labfile
from provisioner.drivers.libvirt.render import Context, LibvirtRenderer, mgmt_mac
from provisioner.errors import ExitStatus, LabFileError, VnetError
from provisioner.lab.model import CloudImage
from provisioner.resources import data_dir
from tests.conftest import ROOT, regen_golden

GOLDEN = ROOT / "tests" / "golden" / "cloud"
PUBKEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHVuaXQtdGVzdC1rZXktbm90LXJlYWwtYXQtYWxs vnet-t"


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VNET_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def qcow2_like(path: Path, size: int, *options: str) -> CloudImage:
    """A real (tiny) qcow2 image padded to `size` bytes, and the CloudImage that pins it.
    `options` go to `qemu-img create` (a backing file, an external data file)."""
    if not shutil.which("qemu-img"):
        pytest.skip("qemu-img is missing: apt-get install qemu-utils")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", *options, str(path), "1M"],
                   check=True)
    data = path.read_bytes()
    data += bytes(range(256)) * ((size - len(data)) // 256)
    path.write_bytes(data)
    return CloudImage(name="img", url=path.as_uri(), sha256=hashlib.sha256(data).hexdigest())


@pytest.fixture
def count_urlopen(monkeypatch):
    calls = []
    real = cloudimages.urllib.request.urlopen

    def counting(url, *a, **kw):
        calls.append(url)
        return real(url, *a, **kw)
    monkeypatch.setattr(cloudimages.urllib.request, "urlopen", counting)
    return calls


# ---------------------------------------------------------------- fetch

def test_fetch_verifies_and_caches_under_the_digest(tmp_path, cache, count_urlopen):
    image = qcow2_like(tmp_path / "deb.qcow2", 3 << 20)
    lines = []
    path = cloudimages.fetch(image, lines.append, stream=io.StringIO())
    assert path == cache / "cloud" / f"{image.sha256}.qcow2"
    assert path.read_bytes() == (tmp_path / "deb.qcow2").read_bytes()
    assert count_urlopen == [image.url]
    assert "downloading cloud image img" in lines[0] and "verified" in lines[-1]
    # a second fetch reuses the file: no download at all, no progress lines
    lines.clear()
    assert cloudimages.fetch(image, lines.append, stream=io.StringIO()) == path
    assert count_urlopen == [image.url] and lines == []


def test_sha256_mismatch_is_refused_and_leaves_no_file(tmp_path, cache):
    image = qcow2_like(tmp_path / "deb.qcow2", 1 << 20)
    wrong = CloudImage(image.name, image.url, "0" * 64)
    with pytest.raises(VnetError) as exc:
        cloudimages.fetch(wrong, lambda m: None, stream=io.StringIO())
    assert f"expected {'0' * 64}, got {image.sha256}" in exc.value.message
    assert list((cache / "cloud").iterdir()) == []          # no partial file, no cached file
    # the right digest still downloads afterwards
    assert cloudimages.fetch(image, lambda m: None, stream=io.StringIO()).exists()


def test_a_file_that_is_not_qcow2_is_refused(tmp_path, cache):
    data = b"\x00" * 4096
    (tmp_path / "raw.img").write_bytes(data)
    image = CloudImage("raw", (tmp_path / "raw.img").as_uri(), hashlib.sha256(data).hexdigest())
    with pytest.raises(VnetError, match="is not a qcow2 image"):
        cloudimages.fetch(image, lambda m: None, stream=io.StringIO())
    assert list((cache / "cloud").iterdir()) == []


def test_a_failed_download_says_why_and_leaves_no_file(tmp_path, cache):
    image = CloudImage("gone", (tmp_path / "missing.qcow2").as_uri(), "a" * 64)
    with pytest.raises(VnetError, match="cannot download cloud image gone from file://"):
        cloudimages.fetch(image, lambda m: None, stream=io.StringIO())
    assert list((cache / "cloud").iterdir()) == []


def test_progress_plain_lines_when_not_a_tty(tmp_path):
    image = qcow2_like(tmp_path / "deb.qcow2", 5 << 20)
    out = io.StringIO()
    cloudimages.fetch(image, lambda m: None, stream=out)
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert lines[-1] == "img: 100% 5.0/5.0 MiB"
    assert 2 <= len(lines) <= 11 and all("%" in line and "MiB" in line for line in lines)


class Tty(io.StringIO):
    def isatty(self):
        return True


def test_progress_updates_one_line_in_place_on_a_tty(tmp_path):
    image = qcow2_like(tmp_path / "deb.qcow2", 5 << 20)
    out = Tty()
    cloudimages.fetch(image, lambda m: None, stream=out)
    text = out.getvalue()
    assert text.count("\n") == 1 and text.endswith("\rimg: 100% 5.0/5.0 MiB\n")
    frames = text.rstrip("\n").split("\r")[1:]
    assert len(frames) >= 3 and all(f.startswith("img: ") and "MiB" in f for f in frames)


# ---------------------------------------------------------------- what QEMU would follow

def test_a_backing_file_is_refused_before_qemu_sees_it(tmp_path, cache):
    """A published image that names a backing file would make the guest read a host file."""
    secret = tmp_path / "host-secret.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(secret), "1M"], check=True)
    image = qcow2_like(tmp_path / "evil.qcow2", 1 << 20, "-F", "qcow2", "-b", str(secret))
    with pytest.raises(VnetError, match=f"names a backing file \\('{secret}'\\): refused"):
        cloudimages.fetch(image, lambda m: None, stream=io.StringIO())
    assert list((cache / "cloud").iterdir()) == []


def test_an_external_data_file_is_refused_before_qemu_sees_it(tmp_path, cache):
    data_file = tmp_path / "host-disk.raw"
    image = qcow2_like(tmp_path / "evil.qcow2", 1 << 20, "-o", f"data_file={data_file}")
    with pytest.raises(VnetError, match="keeps its data in an external file"):
        cloudimages.fetch(image, lambda m: None, stream=io.StringIO())
    assert list((cache / "cloud").iterdir()) == []


def test_qemu_img_info_is_asked_too(tmp_path, monkeypatch):
    """The header looks clean; qemu-img's answer still decides (a second opinion on the file)."""
    image = qcow2_like(tmp_path / "ok.qcow2", 1 << 20)
    path = tmp_path / "ok.qcow2"
    cloudimages.check_image(path, "x")                     # the real qemu-img agrees
    answer = json.dumps({"format": "qcow2", "backing-filename": "/dev/sda"})
    monkeypatch.setattr(runner, "run", lambda argv, **kw: runner.Result(argv, 0, answer, ""))
    with pytest.raises(VnetError, match=r"names a backing file \('/dev/sda'\)"):
        cloudimages.check_image(path, "x")
    del image


def test_a_changed_cached_image_is_hashed_again_and_replaced(tmp_path, cache, count_urlopen):
    image = qcow2_like(tmp_path / "deb.qcow2", 1 << 20)
    path = cloudimages.fetch(image, lambda m: None, stream=io.StringIO())
    with open(path, "r+b") as f:                         # same size, one byte flipped
        f.seek(300_000)
        f.write(b"\xff")
    lines = []
    assert cloudimages.fetch(image, lines.append, stream=io.StringIO()) == path
    assert "no longer matches its sha256" in lines[0] and len(count_urlopen) == 2
    assert hashlib.sha256(path.read_bytes()).hexdigest() == image.sha256


def test_a_cached_image_swapped_for_one_with_a_backing_file_is_refused(tmp_path, cache):
    """Even a file whose digest matches is checked again before each use."""
    secret = tmp_path / "secret.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(secret), "1M"], check=True)
    evil = qcow2_like(tmp_path / "evil.qcow2", 1 << 20, "-F", "qcow2", "-b", str(secret))
    cached = cloudimages.cached_path(evil)
    cached.parent.mkdir(parents=True)
    shutil.copyfile(tmp_path / "evil.qcow2", cached)       # as if placed there by hand
    with pytest.raises(VnetError, match="cached cloud image img .* names a backing file"):
        cloudimages.fetch(evil, lambda m: None, stream=io.StringIO())


def test_downloads_stop_at_the_size_cap(tmp_path, cache, monkeypatch):
    image = qcow2_like(tmp_path / "big.qcow2", 3 << 20)
    monkeypatch.setenv("VNET_CLOUD_IMAGE_MAX_GIB", str(2 / 1024))       # 2 MiB
    with pytest.raises(VnetError, match=r"larger than the 0.00195312 GiB download cap") as exc:
        cloudimages.fetch(image, lambda m: None, stream=io.StringIO())
    assert "VNET_CLOUD_IMAGE_MAX_GIB" in exc.value.hint
    assert list((cache / "cloud").iterdir()) == []
    monkeypatch.setenv("VNET_CLOUD_IMAGE_MAX_GIB", "1")
    assert cloudimages.fetch(image, lambda m: None, stream=io.StringIO()).exists()


def test_the_cap_also_holds_without_a_content_length(tmp_path, cache, monkeypatch):
    image = qcow2_like(tmp_path / "big.qcow2", 3 << 20)
    monkeypatch.setenv("VNET_CLOUD_IMAGE_MAX_GIB", str(2 / 1024))
    real = cloudimages.urllib.request.urlopen

    def no_length(url, *a, **kw):
        response = real(url, *a, **kw)
        del response.headers["Content-Length"]
        return response
    monkeypatch.setattr(cloudimages.urllib.request, "urlopen", no_length)
    with pytest.raises(VnetError, match="download cap"):
        cloudimages.fetch(image, lambda m: None, stream=io.StringIO())
    assert list((cache / "cloud").iterdir()) == []


def test_default_cap_is_8_gib_and_a_bad_setting_exits_2(monkeypatch):
    monkeypatch.delenv("VNET_CLOUD_IMAGE_MAX_GIB", raising=False)
    assert cloudimages.max_bytes() == 8 << 30
    for bad in ("lots", "-1", "0", "nan"):
        monkeypatch.setenv("VNET_CLOUD_IMAGE_MAX_GIB", bad)
        with pytest.raises(LabFileError) as exc:
            cloudimages.max_bytes()
        assert exc.value.status == ExitStatus.BAD_INPUT
        assert exc.value.message.startswith("VNET_CLOUD_IMAGE_MAX_GIB: ")


# ---------------------------------------------------------------- overlay

def test_overlay_argv_and_an_existing_overlay_is_kept(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(runner, "run", lambda argv, **kw: calls.append(argv))
    base, target = tmp_path / "base.qcow2", tmp_path / "lab" / "a.overlay.qcow2"
    cloudimages.overlay(base, target)
    assert calls == [["qemu-img", "create", "-f", "qcow2", "-F", "qcow2", "-b", str(base),
                      str(target)]]
    target.write_bytes(b"the VM's disk")
    cloudimages.overlay(base, target)
    assert len(calls) == 1 and target.read_bytes() == b"the VM's disk"


def test_overlay_with_real_qemu_img(tmp_path):
    if not shutil.which("qemu-img"):
        pytest.skip("qemu-img is missing: apt-get install qemu-utils")
    base = tmp_path / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "64M"], check=True)
    overlay = cloudimages.overlay(base, tmp_path / "lab" / "a.overlay.qcow2")
    info = yaml.safe_load(subprocess.run(["qemu-img", "info", "--output=json", str(overlay)],
                                         check=True, capture_output=True, text=True).stdout)
    assert info["format"] == "qcow2" and info["backing-filename"] == str(base)
    assert info["backing-filename-format"] == "qcow2" and info["virtual-size"] == 64 << 20


# ---------------------------------------------------------------- lab file

def cloud_lab(image, images=None, **vm) -> dict:
    data = {"name": "c", "networks": [{"name": "lan", "mode": "natnetwork"}],
            "vms": [{"name": "a", "image": image, "nics": [{"network": "lan"}], **vm}]}
    if images is not None:
        data["images"] = images
    return data


SHA = hashlib.sha256(b"x").hexdigest()
URL = "file:///srv/images/debian-12-genericcloud-amd64.qcow2"


def test_image_forms_resolve_to_cloud_images():
    inline = labfile.resolve(cloud_lab({"url": URL, "sha256": SHA.upper()})).vms[0]
    assert inline.image == CloudImage(f"cloud-{SHA[:12]}", URL, SHA)
    assert inline.memory == labfile.CLOUD_MEMORY                 # the default for cloud images
    named = labfile.resolve(cloud_lab("deb12", {"deb12": {"url": URL, "sha256": SHA}},
                                      memory=256)).vms[0]
    assert named.image == CloudImage("deb12", URL, SHA) and named.memory == 256  # user's value
    assert labfile.resolve(cloud_lab("tiny")).vms[0].image == "tiny"
    assert labfile.resolve(cloud_lab({"url": URL, "sha256": SHA, "name": "deb"})).vms[0].image.name == "deb"


BAD = [
    (cloud_lab({"url": URL}), "vms.a.image.sha256", "is required"),
    (cloud_lab({"url": URL, "sha256": "abc"}), "vms.a.image.sha256", "64 hex digits"),
    (cloud_lab({"url": URL, "sha256": "g" * 64}), "vms.a.image.sha256", "64 hex digits"),
    (cloud_lab("deb13", {"deb12": {"url": URL, "sha256": SHA}}), "vms.a.image",
     "valid images: tiny, deb12"),
    (cloud_lab("deb12"), "vms.a.image", "valid images: tiny"),
    (cloud_lab("deb12", {"deb12": {"url": URL}}), "images.deb12.sha256", "is required"),
    (cloud_lab("tiny", {"tiny": {"url": URL, "sha256": SHA}}), "images.tiny", "built-in"),
    (cloud_lab("x", {"Deb": {"url": URL, "sha256": SHA}}), "images.Deb", "not a valid name"),
    (cloud_lab({"url": "ftp://h/x.qcow2", "sha256": SHA}), "vms.a.image.url", "file://"),
    (cloud_lab({"url": "file://relative/x.qcow2", "sha256": SHA}), "vms.a.image.url", "file:///"),
    (cloud_lab({"url": URL, "sha256": SHA, "size": 1}), "vms.a.image.size", "valid fields"),
    (cloud_lab(["tiny"]), "vms.a.image", "valid images: tiny"),
]


@pytest.mark.parametrize("data,path,words", BAD, ids=[b[1] + ":" + b[2] for b in BAD])
def test_bad_images_name_the_field(data, path, words):
    with pytest.raises(LabFileError) as exc:
        labfile.resolve(data)
    assert exc.value.path == path and words in exc.value.message
    assert exc.value.status == ExitStatus.BAD_INPUT and "\n" not in exc.value.message


# ---------------------------------------------------------------- rendering and the seed

@pytest.fixture
def golden_plan(tmp_path):
    lab = labfile.load(GOLDEN / "lab.yaml")
    log_dir = tmp_path / "state" / "labs" / "gcloud"
    plan = LibvirtRenderer(Context(ssh_pubkey=PUBKEY, log_dir=str(log_dir))).plan(lab)
    assert not log_dir.exists()                       # rendering computes paths, creates nothing
    return lab, plan, log_dir


def domain(plan, vm: str) -> ET.Element:
    return ET.fromstring(next(d.text for d in plan.documents if d.name == f"vnet-gcloud-{vm}"))


def test_a_cloud_vm_boots_from_its_overlay_with_the_seed_as_cdrom(golden_plan):
    _, plan, log_dir = golden_plan
    dom = domain(plan, "deb")
    assert [b.get("dev") for b in dom.findall("os/boot")] == ["hd"]
    assert dom.find("os/kernel") is None and dom.find("os/cmdline") is None
    disk, cdrom = dom.findall("devices/disk")
    assert disk.get("device") == "disk" and disk.find("driver").get("type") == "qcow2"
    assert disk.find("source").get("file") == str(log_dir / "deb.overlay.qcow2")
    assert disk.find("readonly") is None and disk.find("shareable") is None
    assert cdrom.get("device") == "cdrom" and cdrom.find("target").get("bus") == "ide"
    assert cdrom.find("source").get("file") == str(log_dir / "deb.seed.iso")
    assert cdrom.find("readonly") is not None
    assert dom.find("devices/serial/source").get("path") == str(log_dir / "deb.serial.log")
    tiny = domain(plan, "tiny1")                       # the tiny VM of the same lab is unchanged
    assert tiny.find("os/kernel") is not None and tiny.find("os/boot") is None
    assert [d.get("device") for d in tiny.findall("devices/disk")] == ["disk"]
    assert set(plan.extra["cloud"]) == {"deb", "jammy"}


def read_iso(path: Path) -> tuple[str, dict[str, str]]:
    iso = pycdlib.PyCdlib()
    iso.open(str(path))
    try:
        label = iso.pvd.volume_identifier.decode().strip()
        names = [c.rock_ridge.name().decode() for c in iso.list_children(rr_path="/")
                 if c.is_file()]
        texts = {}
        for name in names:
            buf = io.BytesIO()
            iso.get_file_from_iso_fp(buf, rr_path=f"/{name}")
            texts[name] = buf.getvalue().decode()
            joliet = io.BytesIO()
            iso.get_file_from_iso_fp(joliet, joliet_path=f"/{name}")
            assert joliet.getvalue() == buf.getvalue()
    finally:
        iso.close()
    return label, texts


def test_seed_iso_reads_back_with_label_files_key_and_macs(golden_plan, tmp_path):
    lab, plan, _ = golden_plan
    cloud = plan.extra["cloud"]["deb"]
    path = seed.build(cloud["seed"], tmp_path / "deb.seed.iso")
    label, files = read_iso(path)
    assert label == "cidata"
    assert sorted(files) == ["meta-data", "network-config", "user-data"]
    assert list(tmp_path.glob(".deb.seed.iso-*")) == []          # no temporary file left

    user = files["user-data"]
    assert user.startswith("#cloud-config\n")
    config = yaml.safe_load(user)
    assert config["ssh_authorized_keys"] == [PUBKEY] and config["disable_root"] is False
    assert config["ssh_pwauth"] is False
    written = {f["path"]: f["content"] for f in config["write_files"]}
    probe = (data_dir("playbooks") / "library" / "vnet_probe.py").read_text()
    assert written["/usr/local/lib/vnet/vnet_probe.py"] == probe
    assert "ExecStart=/usr/bin/python3 /usr/local/lib/vnet/vnet_probe.py --serve 7 deb\n" \
        in written["/etc/systemd/system/vnet-echo.service"]
    assert ["systemctl", "enable", "--now", "vnet-echo.service"] in config["runcmd"]
    # each start of the echo stamps its socket on the console; a failed stamp keeps the echo
    assert "ExecStartPost=-/usr/local/lib/vnet/vnet-ready --stamp-echo\n" \
        in written["/etc/systemd/system/vnet-echo.service"]

    # the MACs of the seed are the domain's, in order, the management NIC last and static
    dom_macs = [i.find("mac").get("address") for i in domain(plan, "deb").findall("devices/interface")]
    net = yaml.safe_load(files["network-config"])
    assert net["version"] == 2
    eths = list(net["ethernets"].values())
    assert [e["match"]["macaddress"] for e in eths] == dom_macs
    assert all(e["set-name"] == name for name, e in net["ethernets"].items())
    assert dom_macs[-1] == mgmt_mac("gcloud", "deb")
    def main_routes(e):
        return [r for r in e.get("routes", []) if "table" not in r]
    assert eths[-1]["addresses"] == [plan.extra["mgmt"]["deb"] + "/24"] and not main_routes(eths[-1])
    assert eths[0]["dhcp4"] is True and main_routes(eths[0])[0]["via"] == "192.168.160.1"
    assert eths[1]["dhcp4"] is False and eths[1]["addresses"] == ["10.20.0.11/24"]
    assert sum(bool(main_routes(e)) for e in eths) == 1   # one default route, as in the tiny image
    # and, as the tiny image's nicroute: each NIC its own table and the rule "from its subnet"
    for k, e in enumerate(eths):
        assert e["routing-policy"] == [{"from": e["routing-policy"][0]["from"], "table": 100 + k,
                                        "priority": 100 + k}]
        own = [r for r in e["routes"] if r.get("table") == 100 + k]
        assert own[0] == {"to": e["routing-policy"][0]["from"], "scope": "link", "table": 100 + k}
    assert {"to": "0.0.0.0/0", "via": "192.168.160.1", "on-link": True, "table": 100} \
        in eths[0]["routes"]
    # vnet waits for exactly these MACs (lifecycle.wait_for_addresses: ip or dhcp, + mgmt)
    assert config["runcmd"][-1] == ["/usr/local/lib/vnet/vnet-ready", "deb", *dom_macs]

    meta = yaml.safe_load(files["meta-data"])
    assert meta["local-hostname"] == "deb" and meta["instance-id"].startswith("vnet-gcloud-deb-")


def test_seed_network_config_golden(golden_plan):
    """The network-config of each cloud VM of tests/golden/cloud, for review as a file."""
    _, plan, _ = golden_plan
    for vm, cloud in plan.extra["cloud"].items():
        path = GOLDEN / "seed" / f"{vm}.network-config.yaml"
        text = seed.network_config(cloud["seed"])
        if regen_golden():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        assert text == path.read_text(), f"{path} differs: run with VNET_REGEN_GOLDEN=1"


def test_the_ready_script_speaks_the_tiny_console_protocol():
    script = (data_dir("templates") / "cloud-init" / "vnet-ready").read_text()
    assert 'say "VNET-ADDR $mac $addr $ifname"' in script and 'say "VNET-READY $host"' in script
    assert lifecycle.ADDR_RE.search("VNET-ADDR 52:54:00:aa:bb:01 10.0.0.5/24 nic0")
    if shutil.which("sh"):
        subprocess.run(["sh", "-n", str(data_dir("templates") / "cloud-init" / "vnet-ready")],
                       check=True)


# ---------------------------------------------------------------- lifecycle

def test_up_prepares_overlays_and_seeds_in_the_lab_dir_and_destroy_removes_them(
        tmp_path, monkeypatch, count_urlopen):
    monkeypatch.setenv("VNET_STATE_DIR", str(tmp_path / "state"))
    target = state.Target(uri="qemu:///system")
    image = qcow2_like(tmp_path / "deb.qcow2", 1 << 20)
    data = cloud_lab({"url": image.url, "sha256": image.sha256})
    data["vms"].append(copy.deepcopy(data["vms"][0]) | {"name": "b"})   # same image twice
    lab = labfile.resolve(data)
    lab_dir = state.lab_dir(target, lab.name)
    plan = LibvirtRenderer(Context(ssh_pubkey=PUBKEY, log_dir=str(lab_dir))).plan(lab)
    calls = []

    real_run = runner.run

    def fake_qemu_img(argv, **kw):
        if argv[:2] == ["qemu-img", "info"]:
            return real_run(argv, **kw)
        calls.append(argv)
        Path(argv[-1]).write_bytes(b"overlay")
    monkeypatch.setattr(runner, "run", fake_qemu_img)

    bases = lifecycle.fetch_cloud_images(plan, lambda m: None)
    assert len(count_urlopen) == 1 and set(bases) == {"a", "b"}
    state.save(target, lab.name, {"lab": lab.name})            # as up does, before the disks
    lifecycle.prepare_cloud(plan, bases, lambda m: None)
    assert sorted(p.name for p in lab_dir.iterdir() if p.name not in state.MARKERS) == [
        "a.overlay.qcow2", "a.seed.iso", "b.overlay.qcow2", "b.seed.iso"]
    assert [c[-3:] for c in calls] == [["-b", str(bases["a"]), str(lab_dir / "a.overlay.qcow2")],
                                       ["-b", str(bases["b"]), str(lab_dir / "b.overlay.qcow2")]]
    lifecycle.prepare_cloud(plan, bases, lambda m: None)       # a second up keeps the disks
    assert len(calls) == 2
    state.remove(target, lab.name)                             # what destroy and gc end with
    assert not lab_dir.exists() and bases["a"].exists()        # the cache stays for next time
