"""`vnet sandbox up S --hosts 2`: a second hypervisor host namespace with its own libvirtd on
the sandbox LAN, reached through a real qemu+ssh:// URI (dropbear in its namespace, vnet's key);
`down` stops all of it by PID and leaves no namespace behind."""
import os
import shutil
import tempfile

import pytest

from provisioner.host import netns, runner, sandbox, sandbox_hosts, sandbox_setup

from .conftest import missing_tools

pytestmark = pytest.mark.integration

TOOLS = {"ip": "iproute2", "unshare": "util-linux", "libvirtd": "libvirt-daemon-system",
         "dnsmasq": "dnsmasq-base", "iptables": "iptables", "dropbear": "dropbear-bin",
         "dropbearkey": "dropbear-bin", "ssh": "openssh-client", "ssh-keygen": "openssh-client"}


SKIP = missing_tools(TOOLS, "creates network namespaces, mounts and private libvirtds")
if SKIP:
    pytest.skip(SKIP, allow_module_level=True)
libvirt = pytest.importorskip("libvirt", reason="libvirt-python is missing: pip install .")

NET_XML = """<network><name>mh-probe</name><bridge name='mhp0'/></network>"""


@pytest.fixture
def two_hosts(monkeypatch):
    root = tempfile.mkdtemp(prefix="vnet-mh-", dir="/tmp")  # short: unix socket paths
    monkeypatch.setenv("VNET_STATE_DIR", root)
    name = f"mh{os.getpid() % 10000}"
    try:
        yield sandbox.up(name, progress=print, hosts=2)
    finally:
        sandbox.down(name, progress=print)
        shutil.rmtree(root, ignore_errors=True)


def test_second_host_is_reached_over_qemu_ssh(two_hosts):
    sb = two_hosts
    status = sandbox.status(sb.name)
    assert status["up"], status["problems"]
    hv1, hv2 = status["hosts"]
    assert (hv1["name"], hv2["name"]) == ("hv1", "hv2")
    assert hv2["underlay_ip"] == "198.51.100.3" and hv1["libvirtd_pid"] != hv2["libvirtd_pid"]
    ssh_uri = hv2["ssh_uri"]
    assert ssh_uri.startswith("qemu+ssh://root@198.51.100.3/system?")

    # A network defined through SSH lives in hv2's libvirtd, not in hv1's.
    over_ssh = libvirt.open(ssh_uri)
    try:
        over_ssh.networkDefineXML(NET_XML)
    finally:
        over_ssh.close()
    local2, local1 = libvirt.open(hv2["uri"]), libvirt.open(hv1["uri"])
    try:
        assert "mh-probe" in local2.listDefinedNetworks()
        assert "mh-probe" not in local1.listDefinedNetworks() + local1.listNetworks()
    finally:
        local2.close()
        local1.close()

    # The hosts meet on the underlay: from hv1, hv2's SSH port answers on its LAN address.
    assert netns.run_in_netns(sb.host_netns, sandbox_setup._tcp_answers, hv2["underlay_ip"], 22)

    # A key other than vnet's is refused: the SSH server really authenticates.
    keys = sandbox_hosts.ssh_dir(sb)
    runner.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(keys / "stranger")])
    stranger = ssh_uri.replace(f"keyfile={keys}/id_ed25519", f"keyfile={keys}/stranger")
    with pytest.raises(libvirt.libvirtError):
        libvirt.open(stranger)


def test_down_removes_every_host(monkeypatch):
    root = tempfile.mkdtemp(prefix="vnet-mh-", dir="/tmp")
    monkeypatch.setenv("VNET_STATE_DIR", root)
    name = f"mh{os.getpid() % 10000}d"
    try:
        sb = sandbox.up(name, progress=print, hosts=3)
        pids = [h["libvirtd_pid"] for h in sandbox.status(name)["hosts"]]
        assert len(pids) == 3 and all(pids)
    finally:
        sandbox.down(name, progress=print)
        shutil.rmtree(root, ignore_errors=True)
    assert not [ns for ns in os.listdir(netns.NETNS_DIR) if ns.startswith(f"vnet-{name}-")]
    assert not [pid for pid in pids if netns.pid_alive(pid)]
    assert sandbox_hosts.present(sb) == []
