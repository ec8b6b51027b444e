"""A sandbox belongs to its state root, but namespace names are machine-wide: each namespace
vnet makes carries its owner id, and another state root leaves it alone (a review found
`VNET_STATE_DIR=/b vnet sandbox up default` took root A's running sandbox for a half-up one of
its own, ended its libvirtd and guests by name and deleted its namespaces). Real namespaces,
made and deleted by the test itself."""
from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid

import pytest

from provisioner.errors import VnetError
from provisioner.host import netns, sandbox, sandbox_procs
from provisioner.host.owner import owner_id

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: it makes network "
                                                           "namespaces")


@pytest.fixture
def name(tmp_path, monkeypatch):
    monkeypatch.setenv("VNET_STATE_DIR", str(tmp_path))
    name = f"ut{uuid.uuid4().hex[:6]}"
    yield name
    for ns in sandbox_procs.namespaces(sandbox.describe(name), all_names=True):
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)   # only the test's own


@needs_root
def test_a_namespace_vnet_makes_carries_this_state_roots_owner_id(name):
    ns = sandbox.describe(name).host_netns
    netns.add_owned_netns(ns)
    assert netns.netns_owner(ns) == owner_id()
    assert netns.foreign_namespaces([ns]) == {}


@needs_root
def test_another_state_roots_sandbox_is_left_alone_by_down_up_and_gc(name):
    sb = sandbox.describe(name)
    subprocess.run(["ip", "netns", "add", sb.host_netns], check=True)
    subprocess.run(["ip", "-n", sb.host_netns, "link", "set", "lo", "alias",
                    f"{netns.OWNER_ALIAS}0123456789abcdef"], check=True)
    for attempt in (lambda: sandbox.down(name, progress=lambda m: None),
                    lambda: sandbox.up(name, progress=lambda m: None, check=lambda sb: None),
                    lambda: sandbox.clear_left_state(name, lambda m: None)):
        with pytest.raises(VnetError, match="belong to another vnet state root"):
            attempt()
        assert netns.netns_inode(sb.host_netns) is not None
    problems = sandbox.status(name)["problems"]
    assert "another vnet state root (owner 0123456789abcdef)" in problems[0]


@needs_root
def test_an_untagged_namespace_under_a_sandbox_name_is_left_alone_with_what_runs_in_it(
        name, tmp_path):
    """Made by hand (or by a vnet before the tag) under the name of this root's sandbox:
    nothing proves it vnet's, so `down` neither deletes it nor ends its processes, and says so
    (vnet cleans only what carries its own tag); `up` refuses to take it, naming it."""
    sb = sandbox.describe(name)
    subprocess.run(["ip", "netns", "add", sb.host_netns], check=True)
    assert netns.netns_owner(sb.host_netns) is None
    # named as QEMU: what `down` ends in a namespace of its own
    qemu = tmp_path / "qemu-system-x86_64"
    qemu.symlink_to(shutil.which("sleep"))
    sleeper = subprocess.Popen(["ip", "netns", "exec", sb.host_netns, str(qemu), "60"])
    said: list[str] = []
    try:
        while not netns.pids_in_netns([sb.host_netns]):
            time.sleep(0.02)
        sandbox.down(name, progress=said.append)
        assert netns.netns_inode(sb.host_netns) is not None and sleeper.poll() is None
        [warned] = [m for m in said if f"namespace {sb.host_netns} carries no vnet owner tag" in m]
        assert f"{sleeper.pid} (qemu-system-x86_64)" in warned, warned
        with pytest.raises(VnetError, match="without vnet's owner tag"):
            sandbox.up(name, progress=lambda m: None, check=lambda sb: None)
        assert netns.netns_inode(sb.host_netns) is not None and sleeper.poll() is None
    finally:
        sleeper.kill()
        sleeper.wait()


@needs_root
def test_a_namespace_whose_tag_fails_is_removed_never_left_untagged(name, monkeypatch):
    """Untagged, `sandbox down`, `up` and `gc` all leave it alone (it may be someone else's):
    the namespace `ip netns add` just made goes again when its tag cannot be set (or Ctrl-C)."""
    from provisioner.host import runner

    ns = sandbox.describe(name).host_netns
    real_run = runner.run

    def run(argv, *args, **kwargs):
        if "alias" in argv:
            raise KeyboardInterrupt
        return real_run(argv, *args, **kwargs)
    monkeypatch.setattr(runner, "run", run)
    with pytest.raises(KeyboardInterrupt):
        netns.add_owned_netns(ns)
    assert netns.netns_inode(ns) is None


def test_the_owner_id_is_read_before_any_namespace_is_made(tmp_path, monkeypatch):
    from provisioner.host import owner, runner

    ran = []
    monkeypatch.setattr(runner, "run", lambda argv, *a, **kw: ran.append(argv))
    monkeypatch.setattr(owner, "owner_id", lambda: (_ for _ in ()).throw(
        VnetError("the owner id file is corrupt")))
    with pytest.raises(VnetError):
        netns.add_owned_netns("vnet-x-host")
    assert ran == []
