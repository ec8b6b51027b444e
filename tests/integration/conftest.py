"""Integration tier: real namespaces, a private libvirtd, real QEMU guests (TCG here), real
Ansible. Every test that needs them skips with the exact thing that is missing."""
import os
import shutil
import uuid
from contextlib import contextmanager

import pytest

NEEDED = {"ip": "iproute2", "unshare": "util-linux", "libvirtd": "libvirt-daemon-system",
          "dnsmasq": "dnsmasq-base", "iptables": "iptables", "qemu-system-x86_64": "qemu-system-x86",
          "ssh": "openssh-client", "ssh-keygen": "openssh-client", "mksquashfs": "squashfs-tools",
          "apt-get": "apt", "dpkg-deb": "dpkg"}


def missing_tools(tools: dict[str, str], needs_root_for: str) -> str | None:
    """Why a test cannot run here (not root; commands missing, with the packages that bring
    them), or None."""
    if os.geteuid() != 0:
        return f"needs root: {needs_root_for}"
    missing = {t: p for t, p in tools.items() if shutil.which(t) is None}
    if missing:
        return (f"missing commands {', '.join(missing)}: apt-get install "
                + " ".join(sorted(set(missing.values()))))
    return None


# what a sandbox's extra hosts need beyond NEEDED: hv2's SSH server and its forced command
FOR_HOSTS = {"dropbear": "dropbear-bin", "dropbearkey": "dropbear-bin",
             "busybox": "busybox-static"}


@contextmanager
def hosts_sandbox(prefix: str, hosts: int, progress=print):
    """A `--hosts N` sandbox for one test (its name: the test's prefix and this process), down
    at the end whatever happened; skips with what is missing."""
    reason = missing_tools(FOR_HOSTS, "creates namespaces and private libvirtds")
    if reason:
        pytest.skip(reason)
    from provisioner.host import sandbox

    name = f"{prefix}{os.getpid() % 10000}"
    try:
        yield sandbox.up(name, progress=progress, hosts=hosts)
    finally:
        sandbox.down(name, progress=progress)


def missing_for_labs() -> str | None:
    return missing_tools(NEEDED, "creates network namespaces, mounts and a private libvirtd")


@pytest.fixture(scope="session")
def tiny_image():
    reason = missing_for_labs()
    if reason:
        pytest.skip(reason)
    from provisioner.guest import images

    return images.build_tiny(progress=lambda m: None)


@pytest.fixture(scope="session")
def lab_sandbox(tiny_image):
    """One sandbox for the whole session, removed at the end whatever happened."""
    from provisioner.host import sandbox

    name = "t" + uuid.uuid4().hex[:8]
    box = sandbox.up(name, progress=lambda m: None)
    try:
        yield box
    finally:
        sandbox.down(name, progress=lambda m: None)


def vxlan_drop_rule(tag: str) -> list[str]:
    """An INPUT rule dropping the VXLAN port vnet stretches networks over, marked with `tag`
    (the test's own, so a rule left by a crash says whose it is)."""
    from provisioner.host import vxlan
    return ["INPUT", "-p", "udp", "--dport", str(vxlan.PORT), "-m", "comment", "--comment", tag,
            "-j", "DROP"]


@contextmanager
def iptables_rule(netns: str, rule: list[str]):
    """`rule` inserted in namespace `netns` for the with-block (a negative control), removed
    after it even when the block fails."""
    from provisioner.host import runner
    iptables = ["ip", "netns", "exec", netns, "iptables"]
    runner.run([*iptables, "-I", *rule])
    try:
        yield
    finally:
        runner.run([*iptables, "-D", *rule])


def guest_ssh(target, lab_name: str, vm: str, command: str) -> str:
    """Run `command` on a lab guest as root over its management network (the lab's own key):
    how a negative control changes a guest under a running lab. Its stdout."""
    from provisioner.host import netns, runner, state
    key, _ = state.ssh_key(target, lab_name)
    address = (state.read(target, lab_name) or {})["mgmt"][vm]
    return runner.run(netns.netns_argv(target.netns, [
        "ssh", "-i", str(key), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
        "-o", "UserKnownHostsFile=/dev/null", "-o", "ConnectTimeout=30", "-o", "LogLevel=ERROR",
        f"root@{address}", command]), timeout=120).stdout
