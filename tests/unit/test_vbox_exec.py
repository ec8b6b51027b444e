"""The VirtualBox executor (provisioner/drivers/virtualbox/lifecycle.py) and its backend shim (vbox_api.py).

VirtualBox cannot be installed on this machine, so these tests run against fakes. Each is named
as a fake where it is used:
- VBoxManage: tests/fakes/VBoxManage, the TEST STAND-IN. It keeps a JSON picture of what
  VirtualBox would hold and refuses what VirtualBox refuses; it boots nothing. Most tests call
  its main() in this process (same argv, same environment; it is much faster than a fork); the
  tests named `..._as_processes` run it as an executable through provisioner.host.runner, the way a
  real VBoxManage runs.
- The tiny image: FAKE_ROOT, a 1 MiB file of zeros named root.ext4 (building the real image
  needs apt and minutes). qemu-img converts it to VDI for real where qemu-img is installed.
  Its vmlinuz/initrd.gz and the isolinux.bin/ldlinux.c32 of the boot ISOs are FAKE bytes too;
  the boot ISOs themselves are real ISO 9660 files (pycdlib), read back by the tests. That
  isolinux really boots them is shown under QEMU in tests/integration/test_vbox_boot_iso.py.
- The guest: FakeGuest, a thread that writes the tiny image's console lines (VNET-ADDR,
  VNET-READY) into the serial log file the plan configured, once the stand-in says the VM runs.
- Guest Additions properties and DHCP leases: the stand-in answers `No value set!` and has no
  `dhcpserver findlease`; tests that need them answer those queries in `StandIn.answers`.
- vboxapi: a FAKE module put into sys.modules; it shows which backend is chosen and which API
  calls vnet makes, not what VirtualBox does with them.
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import shutil
import sys
import threading
import time
import types
from pathlib import Path

import pytest
from click.testing import CliRunner

from provisioner.guest import bootiso, images
from provisioner.lab import loader as labfile
from provisioner.host import owner, runner, state
from provisioner.cli import main
from provisioner.lab.defaults import default_lab
from provisioner.drivers.virtualbox import api as vbox_api, lifecycle as vbox_exec
from provisioner.drivers.virtualbox import media as vbox_media
from provisioner.drivers.libvirt.render import mgmt_mac
from provisioner.drivers.virtualbox.render import vbox_mac
from provisioner.errors import CommandFailed, HypervisorError, Unsupported, VnetError
from provisioner.host.runner import Result
from tests.conftest import ROOT

FAKE = ROOT / "tests" / "fakes" / "VBoxManage"
MODES = ("nat", "natnetwork", "hostonly", "internal", "bridged")
V61, V70, V71 = "6.1.50r161033", "7.0.20r163906", "7.1.4r165100"


def _fake_module():
    spec = importlib.util.spec_from_file_location("vnet_fake_vboxmanage",
                                                  FAKE.with_name("vboxmanage.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class StandIn:
    """Routes provisioner.host.runner.run calls for the stand-in: in this process (default) or as
    processes. `hook(args)` may answer (a Result) or raise before the stand-in sees a call;
    `answers` maps argv[1:] to a canned stdout (guest properties, leases)."""

    def __init__(self, tmp_path: Path, monkeypatch, processes: bool = False):
        self.tmp, self.processes = tmp_path, processes
        for key in [k for k in os.environ if k.startswith(("VBOX_FAKE_", "VNET_"))]:
            monkeypatch.delenv(key)
        self.state_file = tmp_path / "vbox-state.json"
        for key, value in {"VNET_VBOXMANAGE": str(FAKE), "VBOX_FAKE_STATE": str(self.state_file),
                           "VBOX_FAKE_PYTHON": sys.executable, "VBOX_FAKE_VERSION": V70,
                           "VNET_STATE_DIR": str(tmp_path / "state"),
                           "VNET_CACHE_DIR": str(tmp_path / "cache")}.items():
            monkeypatch.setenv(key, value)
        self.monkeypatch = monkeypatch
        self.calls: list[tuple[str, ...]] = []
        self.hook = None
        self.answers: dict[tuple[str, ...], str] = {}
        self.module = _fake_module()
        self.real_run = runner.run
        monkeypatch.setattr(runner, "run", self._run)
        monkeypatch.setattr(vbox_exec, "POLL_SECONDS", 0.02)
        self.root = _fake_image(tmp_path / "cache", monkeypatch)
        self.progress: list[str] = []

    def say(self, message: str) -> None:
        self.progress.append(message)

    def _run(self, argv, **kw):
        if argv[0] != str(FAKE):
            return self.real_run(argv, **kw)
        args = tuple(argv[1:])
        self.calls.append(args)
        if self.hook is not None:
            answer = self.hook(args)
            if answer is not None:
                return answer
        if args in self.answers:
            return Result(list(argv), 0, self.answers[args], "")
        if self.processes:
            return self.real_run(argv, **kw)
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = self.module.main(list(args))
        return Result(list(argv), code, out.getvalue(), err.getvalue())

    def vbm(self, *args: str) -> Result:
        """Call the stand-in directly (the test acting as a person at the keyboard)."""
        return self._run([str(FAKE), *args])

    def state(self) -> dict:
        return json.loads(self.state_file.read_text()) if self.state_file.exists() else {}

    def empty(self) -> bool:
        return all(not objects for objects in self.state().values())

    def vms(self) -> dict[str, dict]:
        return {vm["name"]: vm for vm in self.state().get("vms", {}).values()}

    def created(self) -> list[tuple[str, ...]]:
        return [c for c in self.calls if c[0] in ("createvm", "natnetwork", "hostonlyif",
                                                 "hostonlynet", "dhcpserver", "modifyvm",
                                                 "startvm") and c[1:2] != ("findlease",)]


def _fake_image(cache: Path, monkeypatch) -> Path:
    """FAKE tiny image: zeros for root.ext4, placeholders for the kernel and initrd."""
    folder = cache / "images" / "tiny-fake"
    folder.mkdir(parents=True)
    root = folder / "root.ext4"
    root.write_bytes(bytes(1 << 20))
    (folder / "vmlinux").write_bytes(b"fake kernel")
    (folder / "vmlinuz").write_bytes(b"fake bzImage")
    (folder / "initrd.gz").write_bytes(b"fake initrd")
    image = images.Image("tiny", "fake", folder / "vmlinux", folder / "initrd.gz", root,
                         "console=ttyS0 quiet panic=-1", folder / "vmlinuz")
    monkeypatch.setattr(images, "build_tiny", lambda progress=print, force=False: image)
    loader = cache / "isolinux" / "fake"          # FAKE boot loader bytes: never apt-get here
    loader.mkdir(parents=True)
    (loader / "isolinux.bin").write_bytes(b"fake isolinux.bin".ljust(2048, b"\0"))
    (loader / "ldlinux.c32").write_bytes(b"fake ldlinux.c32")
    monkeypatch.setattr(bootiso, "isolinux_dir", lambda progress=print: loader)
    if shutil.which("qemu-img") is None:     # then the conversion is faked too
        def convert(raw, progress):
            raw.with_suffix(".vdi").write_bytes(b"fake vdi (qemu-img is not installed)")
            return raw.with_suffix(".vdi")
        monkeypatch.setattr(vbox_media, "convert_vdi", convert)
    return root


class FakeGuest(threading.Thread):
    """A FAKE guest: when the stand-in says a VM runs, write what the tiny image prints on its
    serial console into the file of --uartmode1. addresses(vm, mac) -> "ip/prefix" or None."""

    def __init__(self, stand_in: StandIn, ready: bool = True, addresses=lambda vm, mac: None,
                 boot_lines: tuple[str, ...] = ("Linux version 6.1 (fake guest)",)):
        super().__init__(daemon=True)
        self.stand_in, self.ready, self.addresses = stand_in, ready, addresses
        self.boot_lines = boot_lines
        self.halt = threading.Event()
        self.booted: set[str] = set()

    def run(self):
        while not self.halt.is_set():
            with contextlib.suppress(ValueError, OSError):   # mid-replace reads
                for name, vm in self.stand_in.vms().items():
                    if vm["state"] == "running" and vm["uuid"] not in self.booted:
                        self.booted.add(vm["uuid"])
                        self._boot(name, vm)
            time.sleep(0.01)

    def _boot(self, name: str, vm: dict) -> None:
        mode, path = vm["uarts"]["1"]["mode"]
        assert mode == "file"
        lines = list(self.boot_lines)
        for nic in vm["nics"].values():
            mac = ":".join(nic["mac"][i:i + 2] for i in range(0, 12, 2)).lower()
            ip = self.addresses(name, mac)
            if ip:
                lines.append(f"VNET-ADDR {mac} {ip} eth0")
        if self.ready:
            lines.append(f"VNET-READY {name}")
        with open(path, "a") as log:
            log.write("".join(line + "\n" for line in lines))


@pytest.fixture
def vbox(tmp_path, monkeypatch):
    return StandIn(tmp_path, monkeypatch)


@pytest.fixture
def vbox_processes(tmp_path, monkeypatch):
    return StandIn(tmp_path, monkeypatch, processes=True)


@contextlib.contextmanager
def guest(stand_in: StandIn, **kw):
    g = FakeGuest(stand_in, **kw)
    g.start()
    try:
        yield g
    finally:
        g.halt.set()
        g.join()


def lab(mode: str = "natnetwork", model: str = "virtio", name: str | None = None, **kw):
    return labfile.resolve(default_lab(mode, model, name=name, **kw), source="test")


def record(name: str) -> dict | None:
    return state.read(vbox_exec.TARGET, name)


# --- create, destroy, idempotence -------------------------------------------------------------

def test_create_then_destroy_leaves_nothing_as_processes(vbox_processes):
    vbox = vbox_processes
    rec = vbox_exec.up(lab("natnetwork"), vbox.say, wait=False)
    vms = vbox.vms()
    assert sorted(vms) == ["vnet-natnetwork-vm1", "vnet-natnetwork-vm2"]
    assert all(vm["state"] == "running" and vm["extradata"] == {
        "vnet/lab": "natnetwork", "vnet/owner": owner.owner_id()} for vm in vms.values())
    assert list(vbox.state()["natnets"]) == ["vnet-natnetwork-net"]
    disk = vms["vnet-natnetwork-vm1"]["storagectls"]["SATA"]["attachments"]["0-0"]
    assert disk == {"type": "hdd", "medium": str(vbox.root.with_suffix(".vdi")),
                    "mtype": "multiattach"}
    iso = state.lab_dir(vbox_exec.TARGET, "natnetwork") / "vm1.boot.iso"
    dvd = vms["vnet-natnetwork-vm1"]["storagectls"]["SATA"]["attachments"]["1-0"]
    assert dvd == {"type": "dvddrive", "medium": str(iso), "mtype": None}
    assert vms["vnet-natnetwork-vm1"]["boot"] == ["dvd", "disk", "none", "none"]
    assert iso.is_file()
    saved = record("natnetwork")
    assert saved == rec and saved["state"] == "started"
    assert saved["api"]["name"] == "vboxmanage" and saved["version"] == "7.0.20"
    assert ["natnetwork", "vnet-natnetwork-net"] in saved["created"]
    assert any("VirtualBox through VBoxManage" in line for line in vbox.progress)

    removed = vbox_exec.destroy("natnetwork", vbox.say)
    assert vbox.empty(), vbox.state()
    assert record("natnetwork") is None
    assert "natnetwork remove --netname vnet-natnetwork-net" in removed
    assert not iso.exists()                                          # with the state dir
    assert vbox_exec.destroy("natnetwork", vbox.say) == []          # idempotent
    assert vbox.empty()


def test_the_vdi_is_converted_once_and_reused(vbox):
    vbox_exec.up(lab("internal"), vbox.say, wait=False)
    vdi = vbox.root.with_suffix(".vdi")
    if shutil.which("qemu-img"):
        header = vdi.read_bytes()[:64]
        assert b"<<< QEMU VM Virtual Disk Image >>>" in header      # a real VDI from qemu-img
    first = vdi.stat().st_mtime_ns
    vbox_exec.destroy("internal", vbox.say)
    vbox_exec.up(lab("internal"), vbox.say, wait=False)
    assert vdi.stat().st_mtime_ns == first
    if shutil.which("qemu-img"):
        assert sum("converting" in line for line in vbox.progress) == 1


def test_a_second_create_is_idempotent(vbox):
    vbox_exec.up(lab("hostonly"), vbox.say, wait=False)
    before = vbox.state()
    vbox.calls.clear()
    again = vbox_exec.up(lab("hostonly"), vbox.say, wait=False)
    assert vbox.state() == before
    assert not vbox.created(), vbox.calls             # only queries ran
    assert any("already up" in line for line in vbox.progress)
    assert again["bindings"] == {"{hostonlyif:net}": "vboxnet0",
                                 "{hostonlyif:_mgmt}": "vboxnet1"}
    vbox_exec.destroy("hostonly", vbox.say)
    assert vbox.empty()


def test_an_incomplete_lab_is_removed_and_created_again(vbox):
    vbox_exec.up(lab("natnetwork"), vbox.say, wait=False)
    assert vbox.vbm("controlvm", "vnet-natnetwork-vm2", "poweroff").returncode == 0
    assert vbox.vbm("unregistervm", "vnet-natnetwork-vm2", "--delete").returncode == 0
    vbox_exec.up(lab("natnetwork"), vbox.say, wait=False)
    assert any("incomplete (1 of 2 VMs)" in line for line in vbox.progress)
    assert sorted(vbox.vms()) == ["vnet-natnetwork-vm1", "vnet-natnetwork-vm2"]
    assert all(vm["state"] == "running" for vm in vbox.vms().values())
    assert list(vbox.state()["natnets"]) == ["vnet-natnetwork-net"]
    vbox_exec.destroy("natnetwork", vbox.say)
    assert vbox.empty()


# --- failures half-way ------------------------------------------------------------------------

def _fail_at(prefix: tuple[str, ...], nth: int = 1):
    seen = []

    def hook(args):
        if args[:len(prefix)] == prefix:
            seen.append(args)
            if len(seen) == nth:
                return Result(["VBoxManage", *args], 1, "",
                              "VBoxManage: error: injected failure (test)\n")
    return hook


@pytest.mark.parametrize("mode,prefix,nth", [
    ("natnetwork", ("natnetwork", "start"), 1),
    ("natnetwork", ("storageattach", "vnet-natnetwork-vm2"), 1),
    ("hostonly", ("hostonlyif", "create"), 1),
    ("hostonly", ("hostonlyif", "ipconfig"), 1),
    ("hostonly", ("dhcpserver", "add"), 1),
    ("hostonly", ("startvm",), 2),
    ("nat", ("modifyvm", "vnet-nat-vm2"), 2),
])
def test_a_failure_half_way_removes_what_was_created(vbox, mode, prefix, nth):
    vbox.hook = _fail_at(prefix, nth)
    with pytest.raises(CommandFailed) as failed:
        vbox_exec.up(lab(mode), vbox.say, wait=False)
    assert failed.value.argv[0] == "VBoxManage"
    assert tuple(failed.value.argv[1:1 + len(prefix)]) == prefix
    assert "{hostonlyif" not in " ".join(failed.value.argv)        # the bound name, not a token
    assert "injected failure" in failed.value.message
    assert failed.value.hint == "everything this run had created was removed again"
    assert vbox.empty(), vbox.state()
    assert record(mode) is None


def test_a_refusal_by_the_stand_in_at_startvm_is_cleaned_up_as_processes(vbox_processes):
    """No injection: the stand-in itself refuses to start a bridged VM on a missing host NIC."""
    vbox = vbox_processes
    vbox.monkeypatch.setenv("VBOX_FAKE_BRIDGEDIFS", "eth9")
    with pytest.raises(CommandFailed) as failed:
        vbox_exec.up(lab("bridged", bridge="br0"), vbox.say, wait=False)
    assert failed.value.argv == ["VBoxManage", "startvm", "vnet-bridged-vm1", "--type",
                                 "headless"]
    assert "VERR_INTNET_FLT_IF_NOT_FOUND" in failed.value.stderr
    assert vbox.empty(), vbox.state()


def test_destroy_works_after_a_crash(vbox):
    """Ctrl-C (or a crash) half-way: no rollback runs, but the saved record lets destroy clean."""
    def crash(args):
        if args[:1] == ("createvm",) and "vnet-hostonly-vm2" in args:
            raise KeyboardInterrupt
    vbox.hook = crash
    with pytest.raises(KeyboardInterrupt):
        vbox_exec.up(lab("hostonly"), vbox.say, wait=False)
    assert not vbox.empty()
    saved = record("hostonly")
    assert saved["state"] == "creating" and saved["bindings"] == {
        "{hostonlyif:net}": "vboxnet0", "{hostonlyif:_mgmt}": "vboxnet1"}
    vbox.hook = None
    vbox_exec.destroy("hostonly", vbox.say)
    assert vbox.empty(), vbox.state()


def test_a_vm_made_but_never_tagged_is_destroyed_and_no_other_untagged_vm(vbox):
    """Ctrl-C while `setextradata` tags vm1 (a review's find): the VM exists untagged, and
    destroy said "not tagged; left alone", removed the record, and the next up was refused.
    Its UUID, saved before createvm ran, makes it this lab's; an untagged VM of the user's,
    even one renamed to look like it, stays."""
    assert vbox.vbm("createvm", "--name", "users-own", "--register").returncode == 0

    def crash(args):
        if args[:1] == ("setextradata",) and "vnet-hostonly-vm1" in args and "vnet/lab" in args:
            raise KeyboardInterrupt
    vbox.hook = crash
    with pytest.raises(KeyboardInterrupt):
        vbox_exec.up(lab("hostonly"), vbox.say, wait=False)
    vbox.hook = None
    assert "vnet-hostonly-vm1" in vbox.vms() and "vnet-hostonly-vm1" in record("hostonly")[
        "vm_uuids"]
    saved = record("hostonly")
    vbox_exec.up(lab("hostonly"), vbox.say, wait=False)     # up completes it: not refused
    assert sorted(vbox.vms()) == ["users-own", "vnet-hostonly-vm1", "vnet-hostonly-vm2"]
    vbox_exec.destroy("hostonly", vbox.say)
    assert sorted(vbox.vms()) == ["users-own"]
    with pytest.raises(KeyboardInterrupt):                  # and again, then destroy
        vbox.hook = crash
        vbox_exec.up(lab("hostonly"), vbox.say, wait=False)
    vbox.hook = None
    assert record("hostonly")["vm_uuids"] == {k: v for k, v in saved["vm_uuids"].items()}
    vbox_exec.destroy("hostonly", vbox.say)
    assert sorted(vbox.vms()) == ["users-own"] and record("hostonly") is None
    vbox_exec.up(lab("hostonly"), vbox.say, wait=False)          # nothing left in its way
    vbox_exec.destroy("hostonly", vbox.say)
    assert sorted(vbox.vms()) == ["users-own"]


def test_an_untagged_vm_with_the_labs_name_but_another_uuid_is_left_alone(vbox):
    """The record names vm1 with its UUID; an untagged VM that only shares the name is not it."""
    vbox_exec.up(lab("internal"), vbox.say, wait=False)
    saved = record("internal")
    vbox_exec.destroy("internal", vbox.say)
    assert vbox.vbm("createvm", "--name", "vnet-internal-vm1", "--register").returncode == 0
    state.save(vbox_exec.TARGET, "internal", saved)
    vbox_exec.destroy("internal", vbox.say)
    assert sorted(vbox.vms()) == ["vnet-internal-vm1"]


def test_destroy_tolerates_what_is_already_gone(vbox):
    vbox_exec.up(lab("natnetwork"), vbox.say, wait=False)
    for argv in (("controlvm", "vnet-natnetwork-vm1", "poweroff"),
                 ("natnetwork", "remove", "--netname", "vnet-natnetwork-net")):
        assert vbox.vbm(*argv).returncode == 0                  # a person removed these
    vbox_exec.destroy("natnetwork", vbox.say)
    assert vbox.empty(), vbox.state()
    assert "teardown: natnetwork remove --netname vnet-natnetwork-net: already gone or " \
           "stopped" in vbox.progress
    assert record("natnetwork") is None


def test_a_real_teardown_failure_keeps_the_record_for_another_try(vbox):
    vbox_exec.up(lab("internal"), vbox.say, wait=False)
    vbox.hook = lambda args: (Result(["VBoxManage", *args], 1, "", "VBoxManage: error: "
                                     "Code E_ACCESSDENIED (test)\n")
                              if args[:2] == ("unregistervm", "vnet-internal-vm2") else None)
    with pytest.raises(HypervisorError, match=r"(?s)could not remove all of lab internal:.*"
                                              r"unregistervm vnet-internal-vm2 --delete: exit 1"):
        vbox_exec.destroy("internal", vbox.say)
    assert record("internal") is not None and list(vbox.vms()) == ["vnet-internal-vm2"]
    vbox.hook = None
    vbox_exec.destroy("internal", vbox.say)
    assert vbox.empty() and record("internal") is None


def test_a_lost_interface_name_is_found_again_by_its_address(vbox):
    vbox_exec.up(lab("hostonly"), vbox.say, wait=False)
    saved = record("hostonly")
    del saved["bindings"]["{hostonlyif:net}"]                # as if vnet died right after
    saved["pending"] = "{hostonlyif:net}"                     # `hostonlyif create` printed
    saved["hostonlyifs_before"] = []                          # none before it (saved with it)
    saved["created"].remove(["hostonlyif", "{hostonlyif:net}"])
    state.save(vbox_exec.TARGET, "hostonly", saved)
    vbox_exec.destroy("hostonly", vbox.say)
    assert any("found again: vboxnet0, the one interface that appeared" in line
               for line in vbox.progress)
    assert vbox.empty(), vbox.state()


def test_a_lost_interface_is_the_one_that_appeared_never_one_with_the_planned_address(vbox):
    """vnet died right after `hostonlyif create` (before its name was saved and before
    `ipconfig` gave it the planned address). destroy used to look for the planned address,
    192.168.56.1, and found the user's own vboxnet0 there (VirtualBox's default), and removed
    it."""
    user = vbox.real_run([str(FAKE), "hostonlyif", "create"]).stdout      # the user's vboxnet0
    assert "vboxnet0" in user

    def dies_after_create(args):
        if args[:2] == ("hostonlyif", "create"):
            vbox.real_run([str(FAKE), *args])          # VirtualBox made it, vnet never heard
            raise KeyboardInterrupt
        return None
    vbox.hook = dies_after_create
    with pytest.raises(KeyboardInterrupt):
        vbox_exec.up(lab("hostonly"), vbox.say, wait=False)
    vbox.hook = None
    assert record("hostonly")["pending"] == "{hostonlyif:net}"
    vbox_exec.destroy("hostonly", vbox.say)
    assert list(vbox.state()["hostonlyifs"]) == ["vboxnet0"]     # the user's stays
    assert any("found again: vboxnet1" in line for line in vbox.progress)


# --- what is not ours -------------------------------------------------------------------------

def test_destroy_leaves_untagged_and_other_labs_alone(vbox):
    for argv in (("createvm", "--name", "mine", "--register"),
                 ("natnetwork", "add", "--netname", "usernet", "--network", "10.9.0.0/24"),
                 ("createvm", "--name", "theirs", "--register"),
                 ("setextradata", "theirs", "vnet/lab", "other")):
        assert vbox.vbm(*argv).returncode == 0
    vbox_exec.up(lab("natnetwork"), vbox.say, wait=False)
    vbox_exec.destroy("natnetwork", vbox.say)
    assert sorted(vbox.vms()) == ["mine", "theirs"]
    assert list(vbox.state()["natnets"]) == ["usernet"]


def test_a_vm_of_the_same_name_that_is_not_ours_is_refused(vbox):
    assert vbox.vbm("createvm", "--name", "vnet-internal-vm1", "--register").returncode == 0
    vbox.calls.clear()
    with pytest.raises(VnetError, match=r"already has VM\(s\) vnet-internal-vm1, which lab "
                                        r"internal of this state root did not create"):
        vbox_exec.up(lab("internal"), vbox.say, wait=False)
    assert sorted(vbox.vms()) == ["vnet-internal-vm1"]
    assert not vbox.created()
    assert record("internal") is None


def test_a_nat_network_of_the_same_name_that_is_not_ours_is_refused(vbox):
    assert vbox.vbm("natnetwork", "add", "--netname", "vnet-natnetwork-net", "--network",
                    "10.9.0.0/24").returncode == 0
    with pytest.raises(VnetError, match="natnetwork.*vnet-natnetwork-net"):
        vbox_exec.up(lab("natnetwork"), vbox.say, wait=False)
    assert vbox.state()["natnets"]["vnet-natnetwork-net"]["network"] == "10.9.0.0/24"
    assert not vbox.vms()


def test_the_hostonly_range_is_checked_before_anything_is_created(vbox):
    data = default_lab("hostonly")
    data["networks"][0]["subnet"] = "192.168.150.0/24"
    with pytest.raises(Unsupported, match=r"outside the host-only ranges .*192\.168\.56\.0/21"):
        vbox_exec.up(labfile.resolve(data), vbox.say, wait=False)
    assert not vbox.created() and vbox.empty()
    assert not vbox.root.with_suffix(".vdi").exists()
    assert record("hostonly") is None


def test_networks_conf_is_read(tmp_path):
    conf = tmp_path / "networks.conf"
    assert vbox_exec.hostonly_ranges(conf) == ("192.168.56.0/21",)       # absent: the default
    conf.write_text("# lab ranges\n* 10.0.0.0/8 192.168.0.0/16  # comment\n* 2001::/64\n")
    assert vbox_exec.hostonly_ranges(conf) == ("10.0.0.0/8", "192.168.0.0/16", "2001::/64")
    conf.write_text("")
    assert vbox_exec.hostonly_ranges(conf) == ()                        # empty: nothing allowed
    conf.write_text("* 10.0.0.300/8\n")
    with pytest.raises(VnetError, match="networks.conf:1"):
        vbox_exec.hostonly_ranges(conf)
    ctx = vbox_exec.detect_context((7, 0, 20), "/d.vdi", "/logs", networks_conf=conf.with_name("x"))
    assert ctx.host_os == "linux" and ctx.hostonly_ranges == ("192.168.56.0/21",)


# --- versions ---------------------------------------------------------------------------------

def test_61_and_7x_differences_reach_the_stand_in(vbox):
    for version, expect in ((V70, True), (V61, False), (V71, True)):
        vbox.monkeypatch.setenv("VBOX_FAKE_VERSION", version)
        vbox.calls.clear()
        rec = vbox_exec.up(lab("nat"), vbox.say, wait=False)
        assert rec["version"] == version.split("r")[0]
        nic_lines = [c for c in vbox.calls if c[0] == "modifyvm" and "--nic1" in c]
        assert len(nic_lines) == 2
        assert all(("--natlocalhostreachable1" in c) == expect for c in nic_lines), version
        vm = vbox.vms()["vnet-nat-vm1"]
        assert vm["nics"]["1"]["localhostreachable"] is expect
        vbox_exec.destroy("nat", vbox.say)
        assert vbox.empty()


def test_version_strings_parse():
    assert vbox_api.parse_version("7.0.20r163906\n") == (7, 0, 20)
    assert vbox_api.parse_version("6.1.50r161033") == (6, 1, 50)
    assert vbox_api.parse_version("6.1.50_Ubuntur161033") == (6, 1, 50)
    assert vbox_api.parse_version("WARNING: The vboxdrv kernel module is not loaded.\n"
                                  "7.1.4r165100\n") == (7, 1, 4)
    with pytest.raises(HypervisorError, match="cannot read a VirtualBox version"):
        vbox_api.parse_version("VBoxManage: error: something")


# --- every mode and NIC model through the executor -------------------------------------------

@pytest.mark.parametrize("model", ["virtio", "e1000"])
@pytest.mark.parametrize("mode", MODES)
def test_every_mode_and_model_runs_through_the_executor(vbox, mode, model):
    rec = vbox_exec.up(lab(mode, model), vbox.say, wait=False)
    vms = vbox.vms()
    assert sorted(vms) == [f"vnet-{mode}-vm1", f"vnet-{mode}-vm2"]
    nictype = {"virtio": "virtio", "e1000": "82540EM"}[model]
    for vm in vms.values():
        assert vm["state"] == "running" and \
            vm["extradata"] == {"vnet/lab": mode, "vnet/owner": owner.owner_id()}
        assert vm["nics"]["1"]["type"] == nictype
        assert vm["boot"][:2] == ["dvd", "disk"]
        dvd = vm["storagectls"]["SATA"]["attachments"]["1-0"]
        assert dvd["type"] == "dvddrive" and Path(dvd["medium"]).is_file()
        mgmt = vm["nics"][str(len(vm["nics"]))]                     # the last NIC
        assert mgmt["type"] == "virtio" and mgmt["mac"] == vbox_mac(
            mgmt_mac(mode, vm["name"].removeprefix(f"vnet-{mode}-")))
    ifs = vbox.state()["hostonlyifs"]
    assert [i["ip"] for i in ifs.values()].count("192.168.63.1") == 1     # management
    assert len(ifs) == (2 if mode == "hostonly" else 1)
    if mode == "natnetwork":
        assert len(vbox.state()["natnets"]) == 1
    assert rec["mgmt"] == {"vm1": "192.168.63.10", "vm2": "192.168.63.11"}
    assert rec["mgmt_host_ip"] == "192.168.63.1"
    assert all(c[0] != "startvm" for c in vbox.calls[:-2]) and \
        [c[0] for c in vbox.calls[-2:]] == ["startvm", "startvm"]      # start comes last
    assert rec["state"] == "started"
    vbox_exec.destroy(mode, vbox.say)
    assert vbox.empty(), vbox.state()


def test_boot_isos_are_written_before_they_are_attached(vbox):
    """Each VM's ISO exists when its storageattach runs (VirtualBox opens the medium there),
    and its isolinux.cfg passes the plan's command line with the lab's own SSH key."""
    attached = []

    def check(args):
        if args[0] == "storageattach" and "dvddrive" in args:
            medium = Path(args[args.index("--medium") + 1])
            attached.append((args[1], medium, medium.is_file()))
    vbox.hook = check
    rec = vbox_exec.up(lab("hostonly"), vbox.say, wait=False)
    folder = state.lab_dir(vbox_exec.TARGET, "hostonly")
    assert attached == [("vnet-hostonly-vm1", folder / "vm1.boot.iso", True),
                        ("vnet-hostonly-vm2", folder / "vm2.boot.iso", True)]
    _, pubkey = state.ssh_key(vbox_exec.TARGET, "hostonly")
    key = "vnet.key=" + ":".join(pubkey.split()[:2])
    for vm in ("vm1", "vm2"):
        cmdline = rec["boot"][vm]["cmdline"]
        assert cmdline.startswith(f"console=ttyS0 quiet panic=-1 vnet.host={vm} {key} vnet.if=")
        assert bootiso.append_line(_iso_file(folder / f"{vm}.boot.iso", "/ISOLINUX/ISOLINUX.CFG;1")
                                   .decode()) == cmdline
    assert any(line == "vm vm1: boot ISO " + str(folder / "vm1.boot.iso")
               for line in vbox.progress)
    vbox_exec.destroy("hostonly", vbox.say)
    assert vbox.empty() and not folder.exists()


def test_a_boot_iso_that_cannot_be_built_creates_nothing(vbox, monkeypatch):
    def no_apt(progress=print):
        raise VnetError("apt-get is missing: the VirtualBox boot ISO takes isolinux from Debian "
                        "packages", hint="copy ~/.cache/vnet/isolinux from one")
    monkeypatch.setattr(bootiso, "isolinux_dir", no_apt)
    with pytest.raises(VnetError, match="apt-get is missing") as failed:
        vbox_exec.up(lab("internal"), vbox.say, wait=False)
    assert failed.value.hint == "copy ~/.cache/vnet/isolinux from one"     # its own hint
    assert not vbox.created() and vbox.empty()
    assert record("internal") is None
    assert not state.lab_dir(vbox_exec.TARGET, "internal").exists()


def _iso_file(iso: Path, path: str) -> bytes:
    import pycdlib

    reader = pycdlib.PyCdlib()
    reader.open(str(iso))
    try:
        out = io.BytesIO()
        reader.get_file_from_iso_fp(out, iso_path=path)
        return out.getvalue()
    finally:
        reader.close()


def test_hostonly_networks_on_a_darwin_7_stand_in(vbox, monkeypatch):
    monkeypatch.setenv("VBOX_FAKE_HOST_OS", "darwin")
    monkeypatch.setitem(vbox_exec.HOST_OS, sys.platform, "darwin")
    vbox_exec.up(lab("hostonly"), vbox.say, wait=False)
    assert sorted(vbox.state()["hostonlynets"]) == ["vnet-hostonly-_mgmt", "vnet-hostonly-net"]
    assert not vbox.state()["hostonlyifs"]
    vbox_exec.destroy("hostonly", vbox.say)
    assert vbox.empty(), vbox.state()


# --- waiting for addresses --------------------------------------------------------------------

def test_wait_reads_the_console_and_falls_back_to_the_planned_address(vbox):
    def addresses(vm, mac):
        return "192.168.150.77/24" if vm == "vnet-natnetwork-vm2" else None
    with guest(vbox, addresses=addresses):
        rec = vbox_exec.up(lab("natnetwork"), vbox.say, wait=True, timeout=10)
    assert rec["state"] == "ready"
    got = {vm: [(n["ip"], n["source"], n["reach"]) for n in nics]
           for vm, nics in rec["addresses"].items()}
    assert got == {"vm1": [("192.168.150.10", "planned", "192.168.150.10")],
                   "vm2": [("192.168.150.77", "console", "192.168.150.77")]}
    assert record("natnetwork")["addresses"] == rec["addresses"]
    # the natnetwork's DHCP server was asked first (the stand-in does not know findlease)
    assert any(c[:2] == ("dhcpserver", "findlease") and c[2] == "--network=vnet-natnetwork-net"
               for c in vbox.calls)


def test_wait_prefers_guest_properties_then_leases(vbox):
    the_lab = lab("hostonly")
    mac1, mac2 = (vm.nics[0].mac for vm in the_lab.vms)
    prop = ("guestproperty", "get", "vnet-hostonly-vm1", "/VirtualBox/GuestInfo/Net/")
    vbox.answers = {
        prop[:3] + (prop[3] + "Count",): "Value: 1\n",
        prop[:3] + (prop[3] + "0/MAC",): "Value: " + mac1.replace(":", "").upper() + "\n",
        prop[:3] + (prop[3] + "0/V4/IP",): "Value: 192.168.56.131\n",
        ("dhcpserver", "findlease", "--interface=vboxnet0", f"--mac-address={mac2}"):
            f"IP Address:  192.168.56.140\nMAC Address: {mac2}\nState:       acked\n",
    }
    with guest(vbox):
        rec = vbox_exec.up(the_lab, vbox.say, wait=True, timeout=10)
    assert [(n["ip"], n["source"]) for n in rec["addresses"]["vm1"]] == \
        [("192.168.56.131", "guestproperty")]
    assert [(n["ip"], n["source"]) for n in rec["addresses"]["vm2"]] == \
        [("192.168.56.140", "lease")]


def test_guest_additions_alone_make_a_vm_ready(vbox):
    """A guest with no vnet console protocol (not the tiny image) is ready once Guest
    Additions report an address on every NIC."""
    the_lab = lab("internal", vms=1)
    mac = the_lab.vms[0].nics[0].mac.replace(":", "").upper()
    base = ("guestproperty", "get", "vnet-internal-vm1", "/VirtualBox/GuestInfo/Net/")
    vbox.answers = {base[:3] + (base[3] + "Count",): "Value: 1\n",
                    base[:3] + (base[3] + "0/MAC",): f"Value: {mac}\n",
                    base[:3] + (base[3] + "0/V4/IP",): "Value: 192.168.151.10\n"}
    rec = vbox_exec.up(the_lab, vbox.say, wait=True, timeout=10)
    assert rec["addresses"]["vm1"][0]["source"] == "guestproperty"


def test_nat_guests_are_reached_through_their_forwarded_ssh_port(vbox):
    with guest(vbox):
        rec = vbox_exec.up(lab("nat"), vbox.say, wait=True, timeout=10)
    assert [(n["ip"], n["source"], n["reach"]) for n in rec["addresses"]["vm1"]] == \
        [("10.0.2.15", "nat", "127.0.0.1:2221")]
    assert rec["addresses"]["vm2"][0]["reach"] == "127.0.0.1:2222"


def test_a_timeout_explains_itself_with_the_serial_log(vbox):
    with guest(vbox, ready=False, boot_lines=("Linux version 6.1 (fake guest)",
                                              "udhcpc: sending discover")):
        with pytest.raises(HypervisorError) as failed:
            vbox_exec.up(lab("hostonly"), vbox.say, wait=True, timeout=0.5)
    message = failed.value.message
    assert message.startswith("VM(s) vm1, vm2 did not come up within 0.5s\n"
                              "--- triage for vm1 (vnet-hostonly-vm1) ---\n")
    log = Path(os.environ["VNET_STATE_DIR"]) / "labs" / vbox_exec.TARGET.key / "hostonly"
    assert f"last serial console lines ({log / 'vm1.serial.log'}):" in message
    assert "  | udhcpc: sending discover" in message
    assert "VM state: running" in message
    assert "guest properties: none (no Guest Additions reporting)" in message
    assert "DHCP lease none" in message
    assert (f"boot ISO (present): {log / 'vm1.boot.iso'}; isolinux APPEND initrd=/initrd.gz "
            f"console=ttyS0 quiet panic=-1 vnet.host=vm1 vnet.key=ssh-ed25519:") in message
    assert failed.value.hint == "vnet destroy hostonly --backend virtualbox removes the lab"
    assert len(vbox.vms()) == 2                     # a slow guest is not rolled back
    vbox_exec.destroy("hostonly", vbox.say)
    assert vbox.empty()


def test_a_vm_that_stops_while_booting_is_reported(vbox):
    crashed = []

    def crash_vm2(args):                 # the FAKE guest vm2 powers off as the wait begins
        if args == ("list", "runningvms") and not crashed:
            crashed.append(vbox.vbm("controlvm", "vnet-internal-vm2", "poweroff"))
    vbox.hook = crash_vm2
    with pytest.raises(HypervisorError) as failed:
        vbox_exec.up(lab("internal"), vbox.say, wait=True, timeout=5)
    assert crashed[0].returncode == 0
    assert failed.value.message.startswith(
        "VM vm2 stopped while booting\n--- triage for vm2 (vnet-internal-vm2) ---")
    assert "VM state: not running" in failed.value.message


# --- the command line -------------------------------------------------------------------------

def test_cli_create_and_destroy_natnetwork_as_processes(vbox_processes):
    vbox = vbox_processes
    with guest(vbox):
        result = CliRunner().invoke(main, ["create", "--mode", "natnetwork", "--backend",
                                           "virtualbox", "--no-verify"])
    assert result.exit_code == 0, result.output
    assert sorted(vbox.vms()) == ["vnet-natnetwork-vm1", "vnet-natnetwork-vm2"]
    assert record("natnetwork")["state"] == "ready"
    sequence = [c[0] if c[0] != "natnetwork" else " ".join(c[:2]) for c in vbox.created()]
    assert sequence == ["natnetwork add", "natnetwork modify", "natnetwork modify",
                        "natnetwork modify", "natnetwork modify", "natnetwork start",
                        "hostonlyif", "hostonlyif",             # the management network
                        "createvm", "modifyvm", "modifyvm", "modifyvm",
                        "createvm", "modifyvm", "modifyvm", "modifyvm", "startvm", "startvm"]
    result = CliRunner().invoke(main, ["destroy", "natnetwork", "--backend", "virtualbox"])
    assert result.exit_code == 0, result.output
    assert vbox.empty(), vbox.state()


def test_cli_up_no_wait_returns_after_startvm(vbox, tmp_path):
    lab_file = tmp_path / "lab.yaml"
    lab_file.write_text("name: x\nnetworks: [{name: n, mode: internal}]\n"
                        "vms: [{name: a, nics: [{network: n, model: e1000}]}]\n")
    result = CliRunner().invoke(main, ["up", str(lab_file), "--backend", "virtualbox",
                                       "--no-wait"])
    assert result.exit_code == 0, result.output
    assert vbox.calls[-1] == ("startvm", "vnet-x-a", "--type", "headless")
    assert record("x")["state"] == "started" and "addresses" not in record("x")
    assert CliRunner().invoke(main, ["destroy", "x", "--backend", "virtualbox"]).exit_code == 0
    assert vbox.empty()


def test_cli_says_what_to_install_without_virtualbox(tmp_path, monkeypatch):
    for key in [k for k in os.environ if k.startswith(("VBOX_FAKE_", "VNET_"))]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setitem(sys.modules, "vboxapi", None)
    result = CliRunner().invoke(main, ["destroy", "x", "--backend", "virtualbox"])
    assert result.exit_code == 3
    assert "VirtualBox is not installed here (VBoxManage not found on PATH)" in result.output
    assert "install VirtualBox 6.1 or 7.x" in result.output


def test_a_vnet_vboxmanage_that_is_not_a_program_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("VNET_VBOXMANAGE", str(tmp_path / "nope"))
    with pytest.raises(VnetError, match=r"VNET_VBOXMANAGE=.*nope is not an executable file"):
        vbox_api.find_vboxmanage()


# --- vbox_api: which backend, and the vboxapi calls (FAKE vboxapi module) ---------------------

class FakeConstants:
    """FAKE vboxapi constants: every name answers itself, so calls are easy to read."""

    def __getattr__(self, name):
        return name


class FakeMachine:
    def __init__(self, log, name, state="MachineState_PoweredOff"):
        self.log, self.name, self.id, self.state = log, name, f"uuid-{name}", state
        self.extra = {}

    def saveSettings(self):
        self.log.append(("saveSettings", self.name))

    def setExtraData(self, key, value):
        self.extra[key] = value

    def getExtraData(self, key):
        return self.extra.get(key, "")

    def getGuestPropertyValue(self, key):
        return ""

    def lockMachine(self, session, lock):
        self.log.append(("lockMachine", self.name, lock))
        session.machine = self


class FakeVirtualBox:
    def __init__(self, log, version):
        self.log, self.version, self.APIVersion = log, version, "7_0"
        self.machines = []

    def createMachine(self, *args):
        self.log.append(("createMachine", *args))
        machine = FakeMachine(self.log, args[1])
        self.machines.append(machine)
        return machine

    def registerMachine(self, machine):
        self.log.append(("registerMachine", machine.name))

    def findMachine(self, name):
        for machine in self.machines:
            if machine.name == name:
                return machine
        raise RuntimeError(f"Could not find a registered machine named '{name}'")


class FakeAdapter:
    def __init__(self):
        self.NATEngine = types.SimpleNamespace(
            redirects=[], addRedirect=lambda *a: self.NATEngine.redirects.append(a))


def fake_vboxapi(version="7.0.20", fail: Exception | None = None):
    """A FAKE `vboxapi` module (the SDK glue is not installed here)."""
    module = types.ModuleType("vboxapi")
    log: list[tuple] = []
    vbox = FakeVirtualBox(log, version)

    class VirtualBoxManager:
        def __init__(self, style, params):
            if fail:
                raise fail
            log.append(("VirtualBoxManager", style, params))
            self.constants = FakeConstants()

        def getVirtualBox(self):
            return vbox

        def getSessionObject(self):
            return types.SimpleNamespace(unlockMachine=lambda: log.append(("unlockMachine",)))

        def getArray(self, obj, attribute):
            return getattr(obj, attribute)

    module.VirtualBoxManager = VirtualBoxManager
    module.log, module.vbox = log, vbox
    return module


@pytest.fixture
def no_binary(monkeypatch):
    monkeypatch.delenv("VNET_VBOXMANAGE", raising=False)
    monkeypatch.setenv("PATH", f"{FAKE.parent}:/usr/bin:/bin")   # first VBoxManage: the stand-in
    monkeypatch.setenv("VBOX_FAKE_PYTHON", sys.executable)


def test_vboxapi_is_chosen_when_it_imports(no_binary, monkeypatch):
    fake = fake_vboxapi()
    monkeypatch.setitem(sys.modules, "vboxapi", fake)
    said = []
    chosen = vbox_api.backend(said.append)
    assert chosen.name == "vboxapi" and chosen.reason == "vboxapi imported"
    assert chosen.version() == (7, 0, 20)
    assert fake.log[0] == ("VirtualBoxManager", None, None)
    assert said == ["VirtualBox through vboxapi VirtualBoxManager (API 7_0): vboxapi imported"]


def test_vboxmanage_is_chosen_when_vboxapi_does_not_import(no_binary, monkeypatch):
    monkeypatch.setitem(sys.modules, "vboxapi", None)          # `import vboxapi` fails
    said = []
    chosen = vbox_api.backend(said.append)
    assert chosen.name == "vboxmanage" and chosen.path == str(FAKE)
    assert said == [f"VirtualBox through VBoxManage ({FAKE}): vboxapi is not importable"]


def test_vboxmanage_is_chosen_when_vboxapi_cannot_start(no_binary, monkeypatch):
    monkeypatch.setitem(sys.modules, "vboxapi",
                        fake_vboxapi(fail=RuntimeError("XPCOM: no VBoxXPCOM.so")))
    chosen = vbox_api.backend()
    assert chosen.name == "vboxmanage"
    assert chosen.reason == "vboxapi imported but VirtualBoxManager failed: XPCOM: no VBoxXPCOM.so"


def test_an_explicit_vboxmanage_wins_over_vboxapi(monkeypatch):
    monkeypatch.setitem(sys.modules, "vboxapi", fake_vboxapi())
    monkeypatch.setenv("VNET_VBOXMANAGE", str(FAKE))
    chosen = vbox_api.backend()
    assert chosen.name == "vboxmanage" and chosen.reason == "VNET_VBOXMANAGE is set"


@pytest.mark.parametrize("version,args", [
    ("6.1.50", ("", "vm1", [], "Linux26_64", "UUID=u-1")),
    ("7.0.20", ("", "vm1", [], "Linux26_64", "UUID=u-1", "", "", "")),
    ("7.1.4", ("", "vm1", "PlatformArchitecture_x86", [], "Linux26_64", "UUID=u-1", "", "", "")),
])
def test_vboxapi_create_machine_follows_each_versions_signature(no_binary, monkeypatch,
                                                                version, args):
    """The plan's own line (createvm ... --uuid: context.vm_uuid), made by the API itself."""
    fake = fake_vboxapi(version)
    monkeypatch.setitem(sys.modules, "vboxapi", fake)
    api = vbox_api.backend()
    out = api.run(("VBoxManage", "createvm", "--name", "vm1", "--ostype", "Linux26_64",
                   "--register", "--uuid", "u-1"))
    assert ("createMachine", *args) in fake.log
    assert fake.log[-2:] == [("saveSettings", "vm1"), ("registerMachine", "vm1")]
    assert out.stdout.startswith("Virtual machine 'vm1' is created and registered.")
    assert api.delegated == 0


def test_vboxapi_answers_the_executors_queries_in_vboxmanages_grammar(no_binary, monkeypatch):
    fake = fake_vboxapi()
    monkeypatch.setitem(sys.modules, "vboxapi", fake)
    api = vbox_api.backend()
    api.run(("VBoxManage", "createvm", "--name", "vm1", "--register"))
    api.run(("VBoxManage", "setextradata", "vm1", "vnet/lab", "demo"))
    fake.vbox.machines[0].state = "MachineState_Running"
    assert api.run(("VBoxManage", "list", "vms")).stdout == '"vm1" {uuid-vm1}\n'
    assert vbox_exec.vm_tags(api) == {"vm1": "demo"}
    assert vbox_exec.running_vms(api) == {"vm1"}
    assert api.run(("VBoxManage", "guestproperty", "get", "vm1", "/x")).stdout == \
        "No value set!\n"
    failed = api.run(("VBoxManage", "getextradata", "ghost", "vnet/lab"), check=False)
    assert failed.returncode == 1 and "Could not find a registered machine" in failed.stderr
    assert vbox_exec.GONE_RE.search(failed.stderr)          # teardown tolerates it


def test_vboxapi_sets_nics_through_a_write_lock(no_binary, monkeypatch):
    fake = fake_vboxapi()
    monkeypatch.setitem(sys.modules, "vboxapi", fake)
    api = vbox_api.backend()
    api.run(("VBoxManage", "createvm", "--name", "vm1", "--register"))
    machine = fake.vbox.machines[0]
    adapters = {0: FakeAdapter()}
    machine.getNetworkAdapter = adapters.__getitem__
    api.run(("VBoxManage", "modifyvm", "vm1", "--nic1", "nat", "--nictype1", "82540EM",
             "--macaddress1", "525400AABB01", "--cableconnected1", "on",
             "--natpf1", "ssh,tcp,,2221,,22"))
    nic = adapters[0]
    assert (nic.enabled, nic.attachmentType, nic.adapterType, nic.MACAddress,
            nic.cableConnected) == (True, "NetworkAttachmentType_NAT",
                                    "NetworkAdapterType_I82540EM", "525400AABB01", True)
    assert nic.NATEngine.redirects == [("ssh", "NATProtocol_TCP", "", 2221, "", 22)]
    assert ("lockMachine", "vm1", "LockType_Write") in fake.log
    assert fake.log[-1] == ("unlockMachine",)
    assert api.delegated == 0


def test_vboxapi_hands_what_it_does_not_cover_to_vboxmanage(no_binary, monkeypatch, tmp_path):
    monkeypatch.setenv("VBOX_FAKE_STATE", str(tmp_path / "state.json"))
    monkeypatch.setitem(sys.modules, "vboxapi", fake_vboxapi())
    api = vbox_api.backend()
    created = api.run(("VBoxManage", "hostonlyif", "create"))        # the stand-in ran it
    assert "Interface 'vboxnet0' was successfully created" in created.stdout
    assert api.delegated == 1
    natpf_7 = ("VBoxManage", "modifyvm", "vm1", "--nic1", "nat", "--natlocalhostreachable1", "on")
    with pytest.raises(CommandFailed, match="vm1"):      # not in §6: whole line to VBoxManage
        api.run(natpf_7)
    assert api.delegated == 2


# --- verification over the management network -------------------------------------------------

def test_virtualbox_labs_are_verified_over_the_management_network(vbox, monkeypatch):
    """`vnet create/verify --backend virtualbox` run verify() with an inventory from the lab's
    record, and take the expected values from the VirtualBox rows. FAKE probe runs: the Ansible
    run and the host-side prober are replaced, and no listener starts; no network is touched."""
    from types import SimpleNamespace

    from provisioner.verify import checks
    from provisioner.verify import run as verifier
    from provisioner.lab.model import Backend

    playbooks, results = [], []

    def fake_playbook(private_dir, playbook, inventory, env):          # FAKE Ansible run
        playbooks.append(inventory)
        return {vm: {"probes": {p["id"]: {"observed": "pass", "detail": "fake"}
                                for p in host["vnet_probes"]},
                     "drivers": {mac: "virtio_net" for mac in host["vnet_nic_macs"]}}
                for vm, host in inventory["all"]["hosts"].items()}

    def fake_run_all(specs):                 # FAKE host side: only the port forward answers
        return {s["id"]: {"observed": "pass" if s["target"] == "127.0.0.1" else "fail",
                          "detail": "fake"} for s in specs}

    real_verify = verifier.verify
    fakes = verifier.ProbeSources(
        playbook=fake_playbook, start_listeners=lambda *a: [],        # no listener starts
        probe_module=lambda: SimpleNamespace(
            run_all=fake_run_all, probe=lambda s: fake_run_all([dict(s, id="1")])["1"]),
        ssh_login=lambda spec, stop: fake_run_all([dict(spec, id="1")])["1"])  # FAKE login

    def spy(lab_, target, progress, timings=None, inventory=None):     # the CLI's verify()
        results.append((target, inventory, real_verify(lab_, target, progress, timings,
                                                       inventory, sources=fakes)))
        return results[-1][2]

    monkeypatch.setattr(verifier, "verify", spy)
    with guest(vbox):
        created = CliRunner().invoke(main, ["create", "--mode", "natnetwork", "--backend",
                                            "virtualbox"])
    assert created.exit_code == 0, created.output
    again = CliRunner().invoke(main, ["verify", "natnetwork", "--backend", "virtualbox"])
    assert again.exit_code == 0, again.output
    rec = record("natnetwork")
    key, _ = state.ssh_key(vbox_exec.TARGET, "natnetwork")
    assert len(results) == len(playbooks) == 2                       # create, then verify
    for target, inventory, result in results:
        assert target == vbox_exec.TARGET and inventory.backend is Backend.VIRTUALBOX
        assert inventory.mgmt_host_ip == "192.168.63.1"
        assert inventory.hosts == {vm: {"ansible_host": rec["mgmt"][vm], "ansible_user": "root",
                                        "ansible_ssh_private_key_file": str(key)}
                                   for vm in ("vm1", "vm2")}
        assert result["backend"] == "virtualbox" and result["ok"]
        assert "not in a sandbox: no Internet cells were probed" in result["notes"]
        assert not any(c["kind"].endswith("internet") for c in result["checks"])
        host_to_vm = [c for c in result["checks"] if c["kind"] == "host_to_vm"]
        assert host_to_vm and all(c["expected"] == "fail" for c in host_to_vm)  # port-forward
    for hosts in (p["all"]["hosts"] for p in playbooks):
        assert hosts["vm1"]["ansible_host"] == "192.168.63.10"
    ends = checks.Endpoints(0, None, "127.0.0.1", "192.168.63.1")    # libvirt would expect pass
    assert all(c.expected == "pass" for c in checks.build(lab("natnetwork"), Backend.LIBVIRT, ends)
               if c.kind == "host_to_vm")
    assert CliRunner().invoke(main, ["destroy", "natnetwork", "--backend",
                                     "virtualbox"]).exit_code == 0
    assert vbox.empty(), vbox.state()                # the management interface went too


def test_verify_needs_the_record_of_a_virtualbox_lab(vbox):
    result = CliRunner().invoke(main, ["verify", "nothere", "--backend", "virtualbox"])
    assert result.exit_code != 0 and "no lab named 'nothere'" in result.output
