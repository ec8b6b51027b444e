"""A real Debian 12 cloud image, built here from Debian packages (`vnet image build --cloud
debian12`), booted by vnet's cloud-image path from a lab file that pins it by sha256 and a
file:// URL: cloud-init applies the NoCloud seed (the lab's SSH key logs in as root, the hostname
is the VM's name) and the natnetwork matrix verifies green on it.

Slow under TCG (the build, then two systemd + cloud-init boots), so it is marked `nightly`:
.ci/run deselects it, the nightly workflow runs it. Alone: pytest -m nightly -s -k cloud_lab
"""
from __future__ import annotations

import shutil
import time

import pytest
import yaml

from provisioner.guest import cloudbuild
from provisioner.lab import loader as labfile
from provisioner.drivers.libvirt import lifecycle
from provisioner.host import netns, runner, state
from provisioner.verify import run as verifier
from provisioner.lab.defaults import default_lab

pytestmark = [pytest.mark.integration, pytest.mark.nightly]


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


@pytest.fixture(scope="module")
def debian12(tiny_image):
    if not shutil.which("mmdebstrap"):
        pytest.skip("mmdebstrap is not installed: apt-get install mmdebstrap")
    started = time.monotonic()
    built = cloudbuild.build("debian12", progress=say)
    say(f"cloud image build (or cache hit) took {time.monotonic() - started:.0f}s")
    return built


def test_debian12_cloud_image_boots_from_a_lab_file_and_verifies_natnetwork(
        lab_sandbox, debian12, tmp_path):
    data = default_lab("natnetwork", "virtio", 2, name="cloudnat", port_base=40)
    data["images"] = {"deb12": {"url": debian12.url, "sha256": debian12.sha256}}
    for vm in data["vms"]:
        vm.update(image="deb12", memory=768)
    path = tmp_path / "lab.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    lab = labfile.load(path, labfile.sandbox_defaults(lab_sandbox))
    target = lifecycle.target_for(lab_sandbox.name, None)
    started = time.monotonic()
    try:
        record = lifecycle.up(lab, target, say)
        booted = time.monotonic()
        say(f"boot to ready: {booted - started:.0f}s ({record['timings']})")
        key, _ = state.ssh_key(target, lab.name)
        for vm in lab.vms:
            out = runner.run(netns.netns_argv(target.netns, [
                "ssh", "-i", str(key), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
                "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=30",
                f"root@{record['mgmt'][vm.name]}",
                "hostname; cloud-init status --wait --long | head -3; "
                "cat /run/cloud-init/result.json"]), timeout=300).stdout
            say(f"{vm.name}: {out.strip()}")
            lines = out.splitlines()
            assert lines[0] == vm.name                           # the seed's hostname
            assert "status: done" in out and "DataSourceNoCloud" in out
            assert '"errors": []' in out
        result = verifier.verify(lab, target, say, timings=record["timings"])
        red = [f"{c['kind']} {c['source']}->{c['target']}: {c['observed']} ({c['detail']})"
               for c in result["checks"] if not c["ok"]]
        say(f"boot to verified: {time.monotonic() - started:.0f}s "
            f"(verify {time.monotonic() - booted:.0f}s)")
        assert result["ok"], red
        kinds = {c["kind"] for c in result["checks"]}
        assert {"vm_to_host", "host_to_vm", "vm_to_vm", "vm_to_internet", "internet_to_vm",
                "port_forward", "nic_model"} <= kinds
        # the cloud image carries no precompiled probe: Ansible sent the module, as usual
        modules = [g.get("module", {}) for g in result["verify_breakdown"]["per_guest"].values()]
        assert modules and not any(m.get("baked") for m in modules), modules
    finally:
        lifecycle.destroy(lab.name, target, lambda m: None)
    assert not state.lab_dir(target, lab.name).exists()
