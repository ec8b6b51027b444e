"""A natnetwork lab on a REAL VirtualBox: created, waited for, destroyed.

Runs only where `VBoxManage --version` (or $VNET_VBOXMANAGE) is a real VirtualBox, never the
test stand-in tests/fakes/VBoxManage. It could not be run where it was written (VirtualBox
cannot be installed there), so nothing here has passed yet. The tiny image boots from a per-VM
ISO (isolinux, provisioner/guest/bootiso.py) with its root on SATA; that path was shown under QEMU
set up like a VirtualBox VM (tests/integration/test_vbox_boot_iso.py), not under VirtualBox. If
the wait in the second test times out, the triage in the failure shows the console and the
boot ISO. The first test does not boot anything and should pass as it is.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from provisioner.guest import images
from provisioner.lab import loader as labfile
from provisioner.lab.defaults import default_lab
from provisioner.drivers.virtualbox import api as vbox_api, lifecycle as vbox_exec
from provisioner.errors import VnetError

pytestmark = pytest.mark.integration
NOT_INSTALLED = ("VirtualBox is not installed here (VBoxManage not found); this test runs on a "
                 "VirtualBox host")
STAND_IN = Path(__file__).resolve().parents[1] / "fakes"


def _real_vboxmanage() -> str:
    try:
        path = vbox_api.find_vboxmanage()
    except VnetError:
        pytest.skip(NOT_INSTALLED)
    if Path(path).resolve().parent == STAND_IN or os.environ.get("VBOX_FAKE_STATE"):
        pytest.skip(f"{path} is vnet's test stand-in, not VirtualBox; {NOT_INSTALLED}")
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=60)
    except OSError as exc:
        pytest.skip(f"{path} --version does not run ({exc}); {NOT_INSTALLED}")
    if out.returncode != 0 or "stand-in" in out.stdout.lower():
        pytest.skip(f"`{path} --version` failed (exit {out.returncode}: "
                    f"{(out.stderr or out.stdout).strip()[:200]}); {NOT_INSTALLED}")
    if shutil.which("qemu-img") is None:
        pytest.skip("qemu-img is missing (apt-get install qemu-utils): it converts the tiny "
                    "image to VDI")
    if shutil.which("apt-get") is None and not any(
            m["name"] == "tiny" for m in images.list_cached()):
        pytest.skip("the tiny image is not cached and cannot be built here (no apt-get)")
    return path


@pytest.fixture
def real_lab():
    """A uniquely named natnetwork lab, destroyed afterwards whatever happened."""
    _real_vboxmanage()
    name = "vt" + uuid.uuid4().hex[:6]
    data = default_lab("natnetwork", "virtio", vms=2, name=name, port_base=500)
    lab = labfile.resolve(data, source="test_virtualbox_real")
    yield lab
    vbox_exec.destroy(name, print)
    be = vbox_api.backend()
    assert name not in vbox_exec.vm_tags(be).values(), "tagged VMs are left after destroy"


def test_natnetwork_lab_is_created_and_destroyed(real_lab):
    record = vbox_exec.up(real_lab, print, wait=False)
    be = vbox_api.backend()
    ours = {vm for vm, tag in vbox_exec.vm_tags(be).items() if tag == real_lab.name}
    assert ours == set(record["vms"].values())
    assert ours <= vbox_exec.running_vms(be)
    natnets = be.run(("VBoxManage", "list", "natnets")).stdout
    assert f"vnet-{real_lab.name}-net" in natnets
    vbox_exec.destroy(real_lab.name, print)
    assert f"vnet-{real_lab.name}-net" not in be.run(("VBoxManage", "list", "natnets")).stdout
    assert real_lab.name not in vbox_exec.vm_tags(be).values()


def test_natnetwork_lab_boots_and_gets_addresses(real_lab):
    record = vbox_exec.up(real_lab, print, wait=True, timeout=300)
    assert record["state"] == "ready"
    for vm in real_lab.vms:
        entry = record["addresses"][vm.name][0]
        assert entry["source"] in ("guestproperty", "lease", "console"), entry
        assert entry["ip"].startswith("192.168.")
