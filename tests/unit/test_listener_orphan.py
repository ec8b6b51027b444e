"""A verifier listener outlives no vnet (issue 10, point 9): when the vnet that started it is
killed with SIGKILL (no cleanup runs), the listener notices that its parent is gone and exits.
The listener runs in a network namespace of its own (`unshare --net`), so it binds nothing on
this machine's network."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

from provisioner.netns import proc_argv
from provisioner.resources import data_dir

PROBE = str(data_dir("playbooks") / "library" / "vnet_probe.py")
DEADLINE = 60.0
STARTER = """
import subprocess, sys, time
listener = subprocess.Popen(["unshare", "--net", sys.executable, sys.argv[1], "--serve", "0",
                             "orphan"], stdout=subprocess.PIPE, text=True)
print(listener.pid, flush=True)
print(listener.stdout.readline().strip(), flush=True)
time.sleep(600)
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="unshare --net needs root")
@pytest.mark.skipif(not shutil.which("unshare"), reason="unshare (util-linux) is missing")
def test_a_listener_ends_when_its_vnet_is_killed():
    starter = subprocess.Popen([sys.executable, "-c", STARTER, PROBE], stdout=subprocess.PIPE,
                               text=True)
    listener = int(starter.stdout.readline())
    try:
        assert "ready" in starter.stdout.readline()
        os.kill(starter.pid, signal.SIGKILL)          # "vnet" dies; no finally runs
        starter.wait()
        end = time.monotonic() + DEADLINE
        while proc_argv(listener) is not None and time.monotonic() < end:
            time.sleep(0.05)
        assert proc_argv(listener) is None, "the listener outlived the vnet that started it"
    finally:
        if proc_argv(listener) is not None and PROBE in " ".join(proc_argv(listener) or []):
            os.kill(listener, signal.SIGKILL)
