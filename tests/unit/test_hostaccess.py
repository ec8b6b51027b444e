"""The host-access seam (host/hostaccess.py): the ssh argv built from a qemu+ssh:// URI, the
refusal of hosts, users and paths that could be read as something else, the remote log paths;
and the contract with the sandbox's SSH host: every command vnet sends to a remote host passes
that host's allow-list (sandbox_files/ssh_forced_command.py), and what vnet never sends does
not."""
import importlib.util
from ipaddress import IPv4Address

import pytest

from provisioner.drivers.libvirt import multihost
from provisioner.errors import LabFileError, Unsupported
from provisioner.host import hostaccess, runner, sandbox_setup, vxlan
from provisioner.host.hostaccess import HostAccess
from provisioner.host.state import Target
from provisioner.lab import loader as labfile

from .test_hosts_labfile import ISSUE_LAB

OWNER = "0123456789abcdef"
BASE = ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=10"]


def _dispatcher():
    spec = importlib.util.spec_from_file_location(
        "ssh_forced_command", sandbox_setup.FILES / "ssh_forced_command.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_argv_from_uris(tmp_path, monkeypatch):
    monkeypatch.setenv("VNET_STATE_DIR", str(tmp_path))
    assert hostaccess.for_uri("qemu+ssh://root@hv2.example/system").ssh == (
        *BASE, "-l", "root", "--", "hv2.example")
    assert hostaccess.for_uri("qemu+ssh://hv2.example:2222/system").ssh == (
        *BASE, "-p", "2222", "--", "hv2.example")
    assert hostaccess.for_uri("qemu+ssh://ops@[2001:db8::2]/system").ssh[-3:] == (
        "ops", "--", "2001:db8::2")
    # libvirt's own parameters: the ssh to run and the key (https://libvirt.org/uri.html)
    access = hostaccess.for_uri(f"qemu+ssh://root@198.51.100.3/system?keyfile=/k/id&command="
                                f"{tmp_path}/k/ssh&socket=/remote/libvirt-sock")
    assert access.ssh == (f"{tmp_path}/k/ssh", *BASE[1:], "-i", "/k/id", "-l", "root", "--",
                          "198.51.100.3")


def test_the_command_travels_as_one_quoted_line_and_locally_enters_the_namespace():
    remote = hostaccess.for_uri("qemu+ssh://root@hv2.example/system")
    assert remote.argv(["cat", "--", "/a b"]) == [*remote.ssh, "cat -- '/a b'"]
    assert HostAccess(netns="ns1").argv(["ip", "link"]) == ["ip", "netns", "exec", "ns1", "ip",
                                                            "link"]


def test_vnet_made_keys_trust_only_vnets_known_hosts(tmp_path, monkeypatch):
    monkeypatch.setenv("VNET_STATE_DIR", str(tmp_path))
    keys = tmp_path / "sandboxes" / "s" / "ssh"
    keys.mkdir(parents=True)
    (keys / "id_ed25519").write_text("k")
    (keys / "known_hosts").write_text("198.51.100.3 ssh-ed25519 AAAA\n")
    ssh = hostaccess.for_uri(f"qemu+ssh://root@198.51.100.3/system?keyfile={keys}/id_ed25519").ssh
    assert ["-o", f"UserKnownHostsFile={keys}/known_hosts", "-o",
            "StrictHostKeyChecking=yes"] == list(ssh[7:11])
    # a key of the user's: the user's ssh configuration decides, also when `..` leaves the root
    elsewhere = tmp_path.parent / f"{tmp_path.name}-elsewhere"
    elsewhere.mkdir()
    (elsewhere / "known_hosts").write_text("h ssh-ed25519 AAAA\n")
    for other in (elsewhere / "key", tmp_path / ".." / elsewhere.name / "key"):
        assert "StrictHostKeyChecking=yes" not in hostaccess.for_uri(
            f"qemu+ssh://root@h/system?keyfile={other}").ssh


@pytest.mark.parametrize("uri, field", [
    ("qemu+ssh://-oProxyCommand=touch%20x/system", "host"),       # would be an ssh option
    ("qemu+ssh://root@-oProxyCommand=x/system", "host"),
    ("qemu+ssh://-l@hv2.example/system", "user"),
    ("qemu+ssh://ro%20ot@hv2.example/system", "user"),
    ("qemu+ssh://root@hv2.example;id/system", "host"),
    ("qemu+ssh://root@hv2.example/session", "path"),
    ("qemu+ssh://root@hv2.example/system?keyfile=id", "keyfile"),
    ("qemu+ssh://root@hv2.example/system?command=-oX", "command"),
    ("qemu+tcp://hv2.example/system", "not a remote host"),
    ("qemu+ssh://root@hv2.example:99999/system", "Port out of range"),
])
def test_unsafe_uris_are_refused_naming_the_field(uri, field):
    with pytest.raises(Unsupported) as exc:
        hostaccess.for_uri(uri, "hosts.hv2.uri")
    assert exc.value.message.startswith("hosts.hv2.uri: ")
    assert field in exc.value.message
    assert exc.value.status == 2


def _sandbox_lab(hv2_uri):
    """A lab in sandbox s1 (nothing needs to run: its hosts' URIs are fixed by its name)."""
    from provisioner.host import sandbox

    data = {**ISSUE_LAB, "hosts": [{"name": "hv1"}, {"name": "hv2", "uri": hv2_uri,
                                                     "underlay_ip": "198.51.100.3"}]}
    sb = sandbox.describe("s1")
    return labfile.resolve(data, sandbox.lab_defaults("s1")), \
        Target(uri=sb.uri, sandbox="s1", netns=sb.host_netns)


def test_a_remote_host_beside_a_sandbox_host_is_reached_over_ssh(tmp_path, monkeypatch):
    monkeypatch.setenv("VNET_STATE_DIR", str(tmp_path))
    lab, target = _sandbox_lab("qemu+ssh://root@hv2.example:2222/system")
    targets = multihost.host_targets(lab, target)
    assert targets["hv1"].netns == "vnet-s1-host"
    assert targets["hv2"] == Target(uri="qemu+ssh://root@hv2.example:2222/system")


def test_a_lab_with_an_unsafe_remote_host_is_refused_before_anything_is_created(tmp_path,
                                                                                monkeypatch):
    monkeypatch.setenv("VNET_STATE_DIR", str(tmp_path))
    with pytest.raises(LabFileError, match="hosts.hv2.uri: .* host '-oproxycommand=x'"):
        _sandbox_lab("qemu+ssh://root@-oProxyCommand=x/system")    # refused when it loads
    lab, target = _sandbox_lab("qemu+tls://hv2.example/system")
    with pytest.raises(Unsupported, match=r"hosts.hv2: .* neither .*accepted: qemu\+ssh://"):
        multihost.host_targets(lab, target)
    assert list(tmp_path.iterdir()) == []                  # nothing created


def test_remote_paths_are_checked():
    assert hostaccess.remote_lab_dir(OWNER, "lab") == f"{hostaccess.REMOTE_DIR}/{OWNER}/lab"
    for owner, lab in ((OWNER, ".."), (OWNER, "a/b"), ("../../etc", "lab"), (OWNER, "-rf")):
        with pytest.raises(ValueError):
            hostaccess.remote_lab_dir(owner, lab)
    access = hostaccess.for_uri("qemu+ssh://root@hv2.example/system")
    with pytest.raises(ValueError):
        hostaccess.read_log(access, "/etc", "passwd")
    with pytest.raises(ValueError):
        hostaccess.read_log(access, hostaccess.remote_lab_dir(OWNER, "lab"), "../../x")


def test_every_command_vnet_sends_to_a_remote_host_passes_its_allow_list(monkeypatch):
    sent: list[list[str]] = []

    def fake_run(argv, **kw):
        sent.append(argv)
        out = f'[{{"ifname": "vx0123456789", "ifalias": "vnet:{OWNER}:two:lan"}}]' \
            if "show" in argv[-1] else "b.serial.log\n" if argv[-1].endswith("/two") else ""
        return runner.Result(argv, 0, out, "")
    monkeypatch.setattr(runner, "run", fake_run)
    access = hostaccess.for_uri("qemu+ssh://root@hv2.example/system")
    segs = vxlan.segments(labfile.resolve(ISSUE_LAB), owner=OWNER)["hv2"]
    vxlan.vnis_in_use(access, segs, recorded=True)
    vxlan.reaches(access, "198.51.100.2")
    vxlan.apply(access, segs)
    directory = hostaccess.prepare_log_dir(access, OWNER, "two")
    hostaccess.read_log(access, directory, "b")
    hostaccess.log_dir_labs(access, OWNER)
    vxlan.remove(access, OWNER, "two")
    hostaccess.remove_log_dir(access, OWNER, "two")
    lines = [argv[-1] for argv in sent]
    assert all(argv[:-1] == list(access.ssh) for argv in sent)
    dispatcher = _dispatcher()
    assert [ln for ln in lines if not dispatcher.permitted(ln)] == []
    assert {argv[0] for ln in lines for argv in dispatcher.split(ln)} == {
        "ip", "bridge", "ping", "mkdir", "cat", "ls", "rm", "rmdir"}
    # a host's VXLAN devices are made in one SSH call (a round trip costs ~0.1 s)
    (made,) = [ln for ln in lines if ln.startswith("ip link add")]
    assert dispatcher.split(made) == [a for seg in segs for a in vxlan.commands(seg)]
    assert dispatcher.REMOTE_DIR == hostaccess.REMOTE_DIR


@pytest.mark.parametrize("line", [
    "id", "", "sh -c id", "ip link del eth0", "ip netns exec x sh", "ip link set lo down",
    "rm -rf -- /", f"rm -rf -- {hostaccess.REMOTE_DIR}/{OWNER}", "rmdir -- /etc",
    f"rmdir -- {hostaccess.REMOTE_DIR}", f"rm -rf -- {hostaccess.REMOTE_DIR}",
    "rmdir --ignore-fail-on-non-empty -- /var/lib/libvirt",
    f"rm -rf -- {hostaccess.REMOTE_DIR}/{OWNER}/lab/../..",
    f"rm -rf -- {hostaccess.REMOTE_DIR}/{OWNER}/lab", f"rm -f -- {hostaccess.REMOTE_DIR}/{OWNER}/lab",
    f"rm -f -- {hostaccess.REMOTE_DIR}/{OWNER}/lab/../../x.serial.log",
    f"cat -- {hostaccess.REMOTE_DIR}/{OWNER}/lab/../../../../etc/shadow",
    "cat -- /etc/shadow", "ping -c 1 -W 2 198.51.100.2;id", "ping -c 1 -W 2 -f 198.51.100.2",
    "mkdir -p -m 0755 -- /root/.ssh", "ip link set vx0123456789 alias x$(id)",
    "ip link del vx0123456789 && id", "&& ip link del vx0123456789", "ip link del vx0123456789 &&",
    "ip link del vx0123456789 && && ip link del vx0123456789", "ip link del vx0123456789 & id",
    "ip link del vx0123456789 || id", "ip link del 'vx0123456789 && id'",
])
def test_the_sandbox_host_refuses_what_vnet_never_sends(line):
    dispatcher = _dispatcher()
    assert not dispatcher.is_libvirt_session(line)
    assert not dispatcher.permitted(line)


def test_the_sandbox_host_runs_a_chain_of_allowed_commands():
    dispatcher = _dispatcher()
    line = "ip -j -d link show type vxlan && ip link del vx0123456789"
    assert dispatcher.permitted(line)
    assert dispatcher.split(line) == [["ip", "-j", "-d", "link", "show", "type", "vxlan"],
                                      ["ip", "link", "del", "vx0123456789"]]


def test_the_sandbox_host_relays_libvirts_own_session_line():
    dispatcher = _dispatcher()
    # what libvirt 9's ssh transport sends with socket= (src/rpc/virnetclient.c), as logged
    netcat = ("sh -c 'if 'nc' -q 2>&1 | grep \"requires an argument\" >/dev/null 2>&1; then "
              "ARG=-q0;else ARG=;fi;'nc' $ARG -U /var/lib/vnet/sandboxes/s/hv2/run/libvirt-sock'")
    assert dispatcher.is_libvirt_session(netcat)
    assert dispatcher.is_libvirt_session("sh -c 'which virt-ssh-helper 1>/dev/null 2>&1; ...'")


def test_the_sandbox_launchers_mount_the_fixed_remote_directory():
    for script in ("sshd-launcher.sh", "libvirtd-launcher.sh"):
        assert f'"{hostaccess.REMOTE_DIR}' in (sandbox_setup.FILES / script).read_text() or \
            f" {hostaccess.REMOTE_DIR}\n" in (sandbox_setup.FILES / script).read_text()


def test_the_echo_on_a_remote_host_is_ping_to_a_checked_address():
    assert vxlan.echo_argv("198.51.100.2") == ["ping", "-c", "1", "-W", "2", "198.51.100.2"]
    with pytest.raises(ValueError):
        vxlan.echo_argv("-f")
    assert IPv4Address(vxlan.echo_argv("198.51.100.2")[-1])
