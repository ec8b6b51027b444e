"""The natnetwork Vagrant demo end to end, inside a vnet sandbox: `vnet image box`, `vagrant box
add`, `vnet sandbox exec S -- vagrant up --provider libvirt`, `vnet verify --vagrant` green (and
red once the lab claims a mode the network does not keep), then `vagrant destroy -f`.

Vagrant runs only on the sandbox host: vagrant-libvirt's management network and the demo's NAT
network live in the sandbox's namespace. VAGRANT_HOME is a temporary directory."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.integration
VNET = str(Path(sys.executable).with_name("vnet"))
UP_TIMEOUT = 600


def missing_vagrant(env: dict) -> str | None:
    if shutil.which("vagrant") is None:
        return "vagrant is missing: apt-get install vagrant vagrant-libvirt"
    plugins = subprocess.run(["vagrant", "plugin", "list"], capture_output=True, text=True,
                             env=env, timeout=120).stdout
    if "vagrant-libvirt" not in plugins:
        return "the vagrant-libvirt plugin is missing: apt-get install vagrant-libvirt"
    return None


def run(argv, **kw):
    return subprocess.run(argv, capture_output=True, text=True, **kw)


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"({path} is missing)"


def test_natnetwork_demo_up_and_verify(lab_sandbox, tmp_path, record_property):
    env = dict(os.environ, VAGRANT_HOME=str(tmp_path / "vagrant.d"),
               VAGRANT_CHECKPOINT_DISABLE="1", VAGRANT_NO_COLOR="1")
    reason = missing_vagrant(env)
    if reason:
        pytest.skip(reason)
    sb = lab_sandbox.name
    # A copy of the demo: Vagrant writes .vagrant/ beside the Vagrantfile.
    demos = tmp_path / "vagrant"
    shutil.copytree(ROOT / "vagrant" / "lib", demos / "lib")
    project = demos / "natnetwork"
    shutil.copytree(ROOT / "vagrant" / "natnetwork", project)
    started = time.monotonic()

    box = run([VNET, "image", "box", "--out", str(tmp_path / "boxes")], env=env, timeout=900)
    assert box.returncode == 0, box.stderr
    box_file = Path(box.stdout.strip().splitlines()[-1])
    assert box_file.name.endswith("-libvirt.box") and box_file.is_file()
    added = run(["vagrant", "box", "add", "--name", "vnet/tiny", str(box_file)], env=env,
                timeout=300)
    assert added.returncode == 0, added.stdout + added.stderr

    in_sandbox = [VNET, "sandbox", "exec", sb, "--"]
    try:
        t0 = time.monotonic()
        up = run([*in_sandbox, "vagrant", "up", "--provider", "libvirt"], cwd=project, env=env,
                 timeout=UP_TIMEOUT)
        up_seconds = time.monotonic() - t0
        record_property("vagrant_up_seconds", round(up_seconds, 1))
        print(f"\nvagrant up (2 VMs, natnetwork, TCG): {up_seconds:.1f}s")
        assert up.returncode == 0, (up.stdout[-3000:] + up.stderr[-3000:] + "\nconsoles:\n"
                                    + "\n".join(tail(p) for p in (project / ".vagrant").glob("*.serial.log")))

        report = tmp_path / "report.json"
        verify = run([VNET, "verify", "--vagrant", str(project), "--sandbox", sb,
                      "--report", "json", "--out", str(report)], env=env, timeout=300)
        assert verify.returncode == 0, verify.stdout + verify.stderr
        result = json.loads(report.read_text())
        assert result["ok"] and result["inventory"] == "vagrant ssh-config"
        kinds = {c["kind"] for c in result["checks"]}
        assert {"vm_to_host", "host_to_vm", "vm_to_vm", "vm_to_internet", "internet_to_vm",
                "nic_model"} <= kinds
        assert {c["target"].split()[-1] for c in result["checks"] if c["kind"] == "nic_model"} \
            == {"virtio", "e1000"}
        assert any("management NIC" in note for note in result["notes"]), result["notes"]
        assert "VERIFIED" in verify.stdout

        # The same machines claimed to be a hostonly network: the NAT lets them out, so the
        # VM->Internet cells must turn red (exit 1), and nothing else.
        lab = (project / "vnet.yaml").read_text()
        (project / "vnet.yaml").write_text(lab.replace("mode: natnetwork", "mode: hostonly"))
        wrong = run([VNET, "verify", "--vagrant", str(project), "--sandbox", sb,
                     "--format", "json"], env=env, timeout=300)
        (project / "vnet.yaml").write_text(lab)
        assert wrong.returncode == 1, wrong.stdout + wrong.stderr
        red = {c["kind"] for c in json.loads(wrong.stdout)["checks"] if not c["ok"]}
        assert red == {"vm_to_internet"}, red
    finally:
        t0 = time.monotonic()
        down = run([*in_sandbox, "vagrant", "destroy", "-f"], cwd=project, env=env, timeout=300)
        print(f"vagrant destroy: {time.monotonic() - t0:.1f}s; whole demo "
              f"(box, add, up, verify x2, destroy): {time.monotonic() - started:.1f}s")
        record_property("demo_seconds", round(time.monotonic() - started, 1))
        # The uploaded box volume stays in the sandbox's pool (as Vagrant leaves it); remove it.
        vols = run([*in_sandbox, "virsh", "vol-list", "default", "--name"], env=env, timeout=60)
        for vol in vols.stdout.split():
            if vol.startswith("vnet-VAGRANTSLASH-tiny_vagrant_box_image_"):
                run([*in_sandbox, "virsh", "vol-delete", vol, "--pool", "default"], timeout=60)
    assert down.returncode == 0, down.stdout + down.stderr
    left = run([*in_sandbox, "virsh", "list", "--all", "--name"], timeout=60).stdout.split()
    assert not [d for d in left if d.startswith("natnetwork_")], left
    nets = run([*in_sandbox, "virsh", "net-list", "--all", "--name"], timeout=60).stdout.split()
    assert "vnet-demo-natnetwork" not in nets and "vagrant-libvirt" not in nets, nets
