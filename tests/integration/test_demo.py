"""`vnet demo natnetwork` for real, from nothing: it makes its own sandbox, builds and adds the
tiny box under vnet's VAGRANT_HOME, runs `vagrant up` on the sandbox host, verifies the matrix
green, and removes the machines, the box volume, its copy of the demo and the sandbox again."""
from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.integration.test_vagrant import missing_vagrant

pytestmark = pytest.mark.integration
VNET = str(Path(sys.executable).with_name("vnet"))


def test_demo_natnetwork_from_nothing_to_verified_and_gone(tiny_image, tmp_path, record_property):
    import os

    from provisioner import demo, sandbox

    reason = missing_vagrant(dict(os.environ, VAGRANT_CHECKPOINT_DISABLE="1"))
    if reason:
        pytest.skip(reason)
    name = "dm" + uuid.uuid4().hex[:8]
    report = tmp_path / "demo.json"
    started = time.monotonic()
    try:
        done = subprocess.run([VNET, "demo", "natnetwork", "--sandbox", name, "--report", "json",
                               "--out", str(report)], capture_output=True, text=True, timeout=1800)
        seconds = time.monotonic() - started
        record_property("demo_seconds", round(seconds, 1))
        print(f"\nvnet demo natnetwork (sandbox made and removed): {seconds:.1f}s")
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        result = json.loads(report.read_text())
        assert result["ok"] and result["demo"] == "natnetwork"
        assert result["inventory"] == "vagrant ssh-config"
        assert {"vm_to_host", "host_to_vm", "vm_to_vm", "vm_to_internet", "internet_to_vm",
                "nic_model"} <= {c["kind"] for c in result["checks"]}
        assert "VERIFIED" in done.stdout
        assert "adding box vnet/tiny" in done.stderr or "is already added" in done.stderr
        gone = sandbox.status(name)
        assert not gone["up"] and not any(gone["namespaces"].values()), gone
        assert not (demo.root() / name).exists()
        netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        assert f"vnet-{name}-" not in netns, netns
        assert (demo.vagrant_home() / "boxes" / "vnet-VAGRANTSLASH-tiny").is_dir()
    finally:
        try:
            sandbox.load(name)
        except Exception:
            pass
        else:                                  # the demo failed to remove what it made
            sandbox.down(name, progress=lambda m: None)
