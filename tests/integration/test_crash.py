"""Crash safety, proven (issue 10, points 9 and 7): `vnet create` frozen while defining, while
waiting for addresses and while verifying; a `vnet destroy` started then waits for the lab's
lock; the frozen run is killed with SIGKILL; the destroy then leaves no domain, network, port
proxy, listener or state of the lab; `sandbox down` then leaves the root namespace as it was
before `sandbox up` (interfaces, addresses, routes, rules, mounts, and processes in or naming
the sandbox).

The run is frozen at each point by VNET_TEST_PAUSE_AT (provisioner/testpoints.py), which
prints "paused at <point>" and sleeps; SIGKILL then hits it with no cleanup code running, and
its children (QEMU via libvirtd, the port proxy, the verifier's listeners) stay behind."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid

import pytest

from provisioner import lifecycle, netns, runner, sandbox, state
from provisioner.drivers.libvirt import LibvirtDriver

from .conftest import missing_for_labs

pytestmark = pytest.mark.integration
VNET = os.path.join(os.path.dirname(sys.executable), "vnet")
PAUSE_TIMEOUT = 600.0            # a TCG boot on a busy 2-core machine
LAB_PROCESS_MARKERS = ("portproxy.py", "vnet_probe.py", "qemu-system")


def root_namespace() -> dict[str, set[str]]:
    """What a sandbox must not change in the root namespace. Mounts of other engineers'
    sandboxes (/run/netns/<theirs>) come and go meanwhile; only ours count."""
    def lines(argv):
        return set(runner.run(argv).stdout.splitlines())
    mounts = set()
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            mounts.add(f"{fields[4]} {fields[fields.index('-') + 1]}")
    routes = lines(["ip", "route", "show", "table", "all"]) | \
        lines(["ip", "-6", "route", "show", "table", "all"])
    return {"links": {l.split()[1] for l in lines(["ip", "-o", "link", "show"])},
            "addresses": {" ".join(l.split()[1:4]) for l in lines(["ip", "-o", "addr", "show"])},
            "routes": {re.sub(r" expires \S+", "", r) for r in routes},
            "rules": lines(["ip", "rule", "show"]) | lines(["ip", "-6", "rule", "show"]),
            "mounts": mounts}


def ours(snapshot: dict[str, set[str]], name: str) -> dict[str, set[str]]:
    other_netns = [m for m in snapshot["mounts"] if "/run/netns/" in m and name not in m]
    return {**snapshot, "mounts": snapshot["mounts"] - set(other_netns)}


def processes_naming(*words: str) -> dict[int, list[str]]:
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            argv = netns.proc_argv(int(entry))
            if argv and any(w in " ".join(argv) for w in words):
                found[int(entry)] = argv
    return found


def in_namespaces(inodes: set[int]) -> dict[int, list[str]]:
    """Processes whose network namespace is one of these (also after its name was deleted)."""
    found = {}
    for entry in os.listdir("/proc"):
        try:
            if entry.isdigit() and os.stat(f"/proc/{entry}/ns/net").st_ino in inodes:
                found[int(entry)] = netns.proc_argv(int(entry))
        except OSError:
            continue
    return found


@pytest.fixture(scope="module")
def crash_sandbox():
    reason = missing_for_labs()
    if reason:
        pytest.skip(reason)
    name = "h3c" + uuid.uuid4().hex[:6]
    before = root_namespace()
    box = sandbox.up(name, progress=lambda m: None)
    inodes = {netns.netns_inode(ns) for ns in (box.host_netns, box.inet_netns)}
    try:
        yield box
    finally:
        sandbox.down(name, progress=lambda m: None)
    assert in_namespaces(inodes) == {}, "processes still run in the deleted sandbox namespaces"
    after = root_namespace()
    assert ours(after, name) == ours(before, name), {
        k: {"gone": ours(before, name)[k] - ours(after, name)[k],
            "new": ours(after, name)[k] - ours(before, name)[k]} for k in before}
    assert processes_naming(box.state_dir.as_posix(), box.host_netns, box.inet_netns) == {}


def start_until(argv: list[str], words: str, env: dict | None = None) -> tuple:
    """Start argv; return (process, its stderr lines so far) once a line holds `words`."""
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    seen: list[str] = []
    found = threading.Event()

    def read():
        for line in proc.stderr:
            seen.append(line)
            if words in line:
                found.set()
    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + PAUSE_TIMEOUT
    while not found.wait(0.2):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            pytest.fail(f"{' '.join(argv[1:3])} never said {words!r}:\n" + "".join(seen[-20:]))
    return proc, seen


@pytest.mark.parametrize("point", ["define", "address", "verify"])
def test_sigkill_then_destroy_leaves_nothing_of_the_lab(crash_sandbox, point):
    box = crash_sandbox
    lab = f"h3k-{point}"
    target = lifecycle.target_for(box.name, None)
    proc, _ = start_until([VNET, "create", "--mode", "natnetwork", "--name", lab, "--vms", "1",
                           "--sandbox", box.name], f"paused at {point}",
                          env={**os.environ, "VNET_TEST_PAUSE_AT": point})
    assert LibvirtDriver(target).labs().get(lab), "the frozen run had created nothing"
    # A destroy started now waits for the lab's lock (no interleaving with the running up)...
    destroy, said = start_until([VNET, "destroy", lab, "--sandbox", box.name],
                                f"waiting for lab sandbox-{box.name}-{lab}'s lock held by "
                                f"pid {proc.pid}")
    assert LibvirtDriver(target).labs().get(lab), "destroy did not wait for the lock"
    os.kill(proc.pid, signal.SIGKILL)      # ...which the kernel frees with the killed run
    proc.wait()
    assert destroy.wait(timeout=300) == 0, "".join(said)

    driver = LibvirtDriver(target)
    names = [d.name() for d in driver.conn.listAllDomains(0)] + \
            [n.name() for n in driver.conn.listAllNetworks(0)]
    assert [n for n in names if n.startswith(f"vnet-{lab}-")] == []
    assert not state.lab_dir(target, lab).exists()
    def left():
        return {pid: argv for pid, argv in netns.pids_in_netns([box.host_netns,
                                                                box.inet_netns]).items()
                if any(m in " ".join(argv) for m in LAB_PROCESS_MARKERS)}
    end = time.monotonic() + 30      # SIGTERM'd proxies and orphaned listeners take a moment
    while left() and time.monotonic() < end:
        time.sleep(0.2)
    assert left() == {}
    assert processes_naming(str(state.lab_dir(target, lab))) == {}
