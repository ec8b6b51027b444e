"""Concurrent runs (issue 10, point 7), for real: two `vnet sandbox up NAME` at once give one
sandbox (one libvirtd); the second waits for the first's lock, then finds the sandbox up."""
from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest

from provisioner import netns, sandbox

from .conftest import missing_for_labs

pytestmark = pytest.mark.integration
VNET = os.path.join(os.path.dirname(sys.executable), "vnet")


def test_two_sandbox_ups_at_once_make_one_sandbox():
    reason = missing_for_labs()
    if reason:
        pytest.skip(reason)
    name = "h3s" + uuid.uuid4().hex[:6]
    try:
        runs = [subprocess.Popen([VNET, "sandbox", "up", name], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True) for _ in range(2)]
        outputs = [run.communicate(timeout=300) for run in runs]
        assert [run.returncode for run in runs] == [0, 0], outputs
        said = "".join(out + err for out, err in outputs)
        assert said.count(f"sandbox {name} is up in") == 1, said          # built once
        assert f"sandbox {name} is already up" in said, said            # found by the other
        status = sandbox.status(name)
        assert status["up"] and status["problems"] == []
        daemons = [pid for pid in os.listdir("/proc") if pid.isdigit()
                   and (netns.proc_argv(int(pid)) or [""])[0].endswith("libvirtd")
                   and str(status["state_dir"]) + "/" in " ".join(netns.proc_argv(int(pid)))]
        assert len(daemons) == 1, daemons
    finally:
        sandbox.down(name, progress=lambda m: None)
