"""Two real sandboxes side by side: private libvirtds, a NAT network each, an idle QEMU guest,
the offline Internet; then `down` must leave the machine exactly as it found it."""
import json
import os
import shutil
import signal
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from provisioner.host import netns, runner, sandbox, sandbox_setup
from provisioner.errors import HypervisorError, NotFound

from .conftest import missing_tools

pytestmark = pytest.mark.integration

TOOLS = {"ip": "iproute2", "unshare": "util-linux", "libvirtd": "libvirt-daemon-system",
         "dnsmasq": "dnsmasq-base", "iptables": "iptables", "ip6tables": "iptables",
         "nft": "nftables", "qemu-system-x86_64": "qemu-system-x86"}
NAT_XML = """<network><name>vt-nat</name><forward mode='nat'/>
  <bridge name='vnt0' stp='on' delay='0'/>
  <ip address='10.77.0.1' netmask='255.255.255.0'>
    <dhcp><range start='10.77.0.100' end='10.77.0.200'/></dhcp></ip></network>"""
# A guest with no disk: SeaBIOS idles. Enough to put a QEMU and a tap inside the sandbox.
IDLE_DOMAIN = """<domain type='qemu'><name>vt-idle</name><memory unit='MiB'>64</memory>
  <vcpu>1</vcpu><os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices><interface type='network'><source network='vt-nat'/><model type='e1000'/></interface>
  </devices></domain>"""


SKIP = missing_tools(TOOLS, "creates network namespaces, mounts and a private libvirtd")
if SKIP:
    pytest.skip(SKIP, allow_module_level=True)
libvirt = pytest.importorskip("libvirt", reason="libvirt-python is missing: pip install -e .")


def _root_snapshot():
    """What the root namespace looks like: firewall, links, mounts."""
    mounts = set()
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            mounts.add((fields[4], line.split(" - ")[1].split()[0]))  # mount point, fs type
    legacy = ""
    if os.path.exists("/proc/net/ip_tables_names"):  # legacy iptables tables (no module load)
        legacy = open("/proc/net/ip_tables_names").read()
    links = {ln.split(":")[1].strip().split("@")[0]
             for ln in runner.run(["ip", "-o", "link"]).stdout.splitlines()}
    return {"nft": runner.run(["nft", "list", "ruleset"]).stdout, "legacy": legacy,
            "links": links, "mounts": mounts, "ip_forward": _read_ip_forward()}


def _read_ip_forward():
    with open("/proc/sys/net/ipv4/ip_forward") as f:  # per network namespace
        return f.read().strip()


def _new_mounts(before, after):
    # `ip netns add` makes /run/netns a mount point the first time it runs on a machine;
    # that is iproute2's, shared by every namespace user, not the sandbox's.
    return {m for m in after["mounts"] - before["mounts"] if not m[0].startswith("/run/netns")}


def _fetch(url):
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never a proxy
    with opener.open(url, timeout=5) as resp:
        return resp.status, resp.read().decode()


@pytest.fixture
def state_root(monkeypatch):
    root = tempfile.mkdtemp(prefix="vnet-it-", dir="/tmp")  # short: unix socket paths
    monkeypatch.setenv("VNET_STATE_DIR", root)
    names = []
    yield root, names
    for name in names:  # whatever happened in the test
        sandbox.down(name, progress=lambda m: None)
    shutil.rmtree(root, ignore_errors=True)


def test_two_sandboxes_isolated_and_cleaned_up(state_root):
    root, names = state_root
    a, b = f"it{os.getpid() % 10000}-a", f"it{os.getpid() % 10000}-b"
    names += [a, b]
    before = _root_snapshot()

    started = time.monotonic()
    sba = sandbox.up(a, progress=print)
    sbb = sandbox.up(b, progress=print)
    print(f"two sandboxes up in {time.monotonic() - started:.2f}s")
    pid_a = sandbox.status(a)["libvirtd_pid"]
    assert sandbox.up(a, progress=print) == sba  # idempotent: same daemon
    assert sandbox.status(a)["libvirtd_pid"] == pid_a
    assert sandbox.load(a) == sba and {a, b} <= set(sandbox.list_names())
    for sb in (sba, sbb):
        st = sandbox.status(sb.name)
        assert st["up"] and st["problems"] == [], st
        json.dumps(st)

    tracked = {}  # pid -> what, to prove later that each of them is gone
    conns = {}
    for sb in (sba, sbb):
        conn = conns[sb.name] = libvirt.open(sb.uri)
        assert conn.getHostname()
        assert conn.listAllNetworks() == [], "the private libvirtd must have no networks"
        net = conn.networkDefineXML(NAT_XML)
        net.create()
        assert net.isActive()
        runner.run(["ip", "-n", sb.host_netns, "link", "show", "vnt0"])  # in the sandbox...
        in_ns_rules = runner.run(netns.netns_argv(sb.host_netns, ["nft", "list", "ruleset"])).stdout
        assert "10.77.0.0/24" in in_ns_rules and "masquerade" in in_ns_rules
        status, body = netns.run_in_netns(sb.host_netns, _fetch, f"http://{sb.internet_ip}/")
        assert (status, body) == (200, f"vnet sandbox {sb.name}: the Internet\n")
        if shutil.which("curl"):
            out = runner.run(sandbox.exec_argv(sb, ["curl", "-sS", "--noproxy", "*", "--max-time",
                                                    "5", f"http://{sb.internet_ip}/"])).stdout
            assert out == body
        dnsmasq = {p: v for p, v in netns.pids_in_netns([sb.host_netns]).items()
                   if os.path.basename(v[0]) == "dnsmasq"}
        assert dnsmasq, "libvirt's dnsmasq should run in the sandbox host namespace"
        for pid in dnsmasq:
            with open(f"/proc/{pid}/root/etc/resolv.conf") as f:
                assert f.read().strip().endswith(f"nameserver {sb.internet_ip}")
        tracked.update({pid: "dnsmasq" for pid in dnsmasq})
        st = sandbox.status(sb.name)
        tracked[st["libvirtd_pid"]], tracked[st["http_pid"]] = "libvirtd", "http"
        for ns in (sb.host_netns, sb.inet_netns):
            assert netns.run_in_netns(ns, _read_ip_forward) == "1"
        routes = runner.run(["ip", "-n", sb.inet_netns, "route"]).stdout
        for net in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10"):
            assert f"{net} via {sb.host_uplink_ip} dev up1" in routes

    # ...and nowhere else: no bridge, no firewall rule, no mount in the root namespace.
    during = _root_snapshot()
    assert "vnt0" not in during["links"] and during["links"] == before["links"]
    assert during["nft"] == before["nft"] and during["legacy"] == before["legacy"]
    assert during["ip_forward"] == before["ip_forward"]
    assert _new_mounts(before, during) == set()

    # An idle guest in sandbox a, left running: `down` must stop its QEMU.
    dom = conns[a].createXML(IDLE_DOMAIN)
    qemu = [p for p, v in netns.pids_in_netns([sba.host_netns]).items()
            if os.path.basename(v[0]).startswith("qemu-system-")]
    assert dom.isActive() and len(qemu) == 1
    tracked[qemu[0]] = "qemu"
    # In sandbox b the network goes away through libvirt, as a lab's destroy would do it.
    net_b = conns[b].networkLookupByName("vt-nat")
    net_b.destroy()
    net_b.undefine()
    for conn in conns.values():
        conn.close()

    started = time.monotonic()
    sandbox.down(a, progress=print)
    sandbox.down(b, progress=print)
    print(f"two sandboxes down in {time.monotonic() - started:.2f}s")
    sandbox.down(a, progress=print)  # idempotent

    after = _root_snapshot()
    namespaces = runner.run(["ip", "netns", "list"]).stdout
    for sb in (sba, sbb):
        assert sb.host_netns not in namespaces and sb.inet_netns not in namespaces
        assert not sb.state_dir.exists()
        st = sandbox.status(sb.name)
        assert not st["up"] and st["problems"] == [], st
        with pytest.raises(NotFound):
            sandbox.load(sb.name)
    alive = {pid: what for pid, what in tracked.items() if netns.pid_alive(pid)}
    assert alive == {}
    assert not [p for p in os.listdir("/proc") if p.isdigit()
                and any(root in arg for arg in (netns.proc_argv(int(p)) or []))]
    assert _new_mounts(before, after) == set()
    with open("/proc/self/mountinfo") as f:
        # (other sandboxes, e.g. the lab tests' session sandbox, may exist at the same time)
        assert not [ln for ln in f if root in ln or any(f"vnet-{n}-" in ln for n in (a, b))]
    assert after["nft"] == before["nft"] and after["links"] == before["links"]
    # "cache" holds libvirt's QEMU capability probes, kept across sandboxes on purpose;
    # "locks" the lock directory, emptied by each `sandbox down` (locks.sweep); owner-id: the
    # state root's identity (its namespaces carry it), not a leftover
    assert set(os.listdir(root)) - {"cache", "locks", "owner-id"} == {"sandboxes"}
    assert not list(Path(root, "locks").iterdir())
    assert os.listdir(f"{root}/sandboxes") == []


def test_crashed_sandbox_is_repaired_and_removed(state_root):
    root, names = state_root
    name = f"it{os.getpid() % 10000}-c"
    names.append(name)
    sb = sandbox.up(name, progress=print)
    st = sandbox.status(name)
    os.kill(st["libvirtd_pid"], signal.SIGKILL)
    os.kill(st["http_pid"], signal.SIGKILL)
    deadline = time.monotonic() + 5
    while any(netns.pid_alive(p) for p in (st["libvirtd_pid"], st["http_pid"])):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    broken = sandbox.status(name)
    assert not broken["up"] and "libvirtd is not running" in broken["problems"]
    with pytest.raises(NotFound):
        sandbox.load(name)

    sandbox.up(name, progress=print)  # repairs: tears down the wreck, starts afresh
    repaired = sandbox.status(name)
    assert repaired["up"] and repaired["libvirtd_pid"] != st["libvirtd_pid"]
    libvirt.open(sb.uri).close()

    # Worse: the daemon dies and its state dir is lost; `down` still finds the leftovers by
    # their network namespace and command line.
    os.kill(repaired["libvirtd_pid"], signal.SIGKILL)
    http_pid = repaired["http_pid"]
    shutil.rmtree(sb.state_dir)
    assert name in sandbox.list_names()
    sandbox.down(name, progress=print)
    assert netns.netns_inode(sb.host_netns) is None and netns.netns_inode(sb.inet_netns) is None
    assert not netns.pid_alive(http_pid) and not netns.pid_alive(repaired["libvirtd_pid"])
    assert name not in sandbox.list_names()


def test_failed_start_leaves_nothing_behind(state_root, monkeypatch, tmp_path):
    root, names = state_root
    name = f"it{os.getpid() % 10000}-d"
    names.append(name)
    broken = tmp_path / "launcher.sh"
    broken.write_text('echo "libvirtd: cannot start: simulated" >&2\nexit 3\n')
    monkeypatch.setattr(sandbox_setup, "LAUNCHER", broken)
    with pytest.raises(HypervisorError, match="libvirtd exited with status 3: .*simulated"):
        sandbox.up(name, progress=print)
    sb = sandbox.describe(name)
    assert netns.netns_inode(sb.host_netns) is None and netns.netns_inode(sb.inet_netns) is None
    assert not sb.state_dir.exists()
    assert not [p for p in os.listdir("/proc") if p.isdigit()
                and any(root in arg for arg in (netns.proc_argv(int(p)) or []))]
