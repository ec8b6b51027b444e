"""Where each backend captures a lab link (Driver.capture_point / network_capture_point /
nic_trace) and `vnet capture`'s bad input: no libvirtd, no tcpdump run (a stand-in for
capture.start), VirtualBox through its stand-in (tests/fakes/VBoxManage, which records the
nictrace settings and writes no frame: a fake is a fake)."""
from __future__ import annotations

from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from provisioner.cli import main
from provisioner.drivers.base import driver_class
from provisioner.drivers.libvirt import capture as lvcapture, lifecycle
from provisioner.drivers.libvirt.connection import LibvirtDriver
from provisioner.drivers.virtualbox import lifecycle as vbox_lifecycle
from provisioner.drivers.virtualbox.driver import nic_trace_argv
from provisioner.errors import Unsupported, VnetError
from provisioner.host import capture, state
from provisioner.host.state import Target
from provisioner.lab import loader
from provisioner.lab.model import Backend
from provisioner.lab.naming import bridge_name
from tests.unit.test_drivers import _create, libvirt_test_uri, vbox  # noqa: F401 - fixtures

LAB = {"name": "cap", "networks": [{"name": "lan", "mode": "hostonly", "subnet": "10.72.1.0/24"},
                                   {"name": "wan", "mode": "nat"}],
       "vms": [{"name": "a", "nics": [{"network": "lan", "ip": "10.72.1.10"},
                                      {"network": "wan"}]},
               {"name": "b", "nics": [{"network": "lan", "ip": "10.72.1.11"}]}]}
SANDBOX = Target(uri="qemu:///system?socket=/s", sandbox="s", netns="vnet-s-host")


def lab():
    return loader.resolve(LAB, loader.Defaults())


def test_a_tap_and_a_bridge_live_in_the_sandbox_host_namespace():
    point = lvcapture.nic_point(lab(), SANDBOX, "a", 0, "vnet7")
    assert (point.interface, point.netns) == ("vnet7", "vnet-s-host")
    assert "tap vnet7 on network lan" in point.label
    net = lvcapture.network_point(lab(), SANDBOX, "lan")
    assert (net.interface, net.netns) == (bridge_name("cap", "lan"), "vnet-s-host")


def test_user_networking_is_refused_with_why_and_what_instead():
    with pytest.raises(Unsupported) as exc:
        lvcapture.nic_point(lab(), SANDBOX, "a", 1, None)
    msg = exc.value.message
    assert "QEMU user networking (SLIRP)" in msg and "never leave the QEMU process" in msg
    assert "natnetwork" in msg and "netdev=hostnet1" in msg
    with pytest.raises(Unsupported, match="nat network wan"):
        lvcapture.network_point(lab(), SANDBOX, "wan")
    with pytest.raises(Unsupported, match="is b running"):
        lvcapture.nic_point(lab(), SANDBOX, "b", 0, None)


def test_the_tap_is_read_from_the_live_domain_xml(monkeypatch):
    xml = ("<domain><devices><interface type='network'><mac address='52:54:00:aa:bb:01'/>"
           "<target dev='vnet3'/></interface><interface type='network'>"
           "<mac address='52:54:00:aa:bb:02'/><target dev='vnet4'/></interface></devices></domain>")
    dom = SimpleNamespace(isActive=lambda: True, XMLDesc=lambda flags: xml)
    monkeypatch.setattr(LibvirtDriver, "conn", property(lambda self: SimpleNamespace(
        lookupByName=lambda name: dom)))           # FAKE connection: one running domain
    drv = LibvirtDriver(Target(uri="qemu:///x"), owner="o")
    assert drv.interface_target("d", "52:54:00:AA:BB:02") == "vnet4"
    assert drv.interface_target("d", "52:54:00:aa:bb:09") is None


def test_virtualbox_renders_the_running_vms_nictrace():
    assert nic_trace_argv("vnet-l-a", 0, "/r/a.pcap", True) == [
        ("VBoxManage", "controlvm", "vnet-l-a", "nictracefile1", "/r/a.pcap"),
        ("VBoxManage", "controlvm", "vnet-l-a", "nictrace1", "on")]
    assert nic_trace_argv("vnet-l-a", 2, "/r/a.pcap", False) == [
        ("VBoxManage", "controlvm", "vnet-l-a", "nictrace3", "off")]


def test_virtualbox_nic_trace_runs_on_the_stand_in(vbox, libvirt_test_uri, tmp_path):  # noqa: F811
    _create(vbox)
    driver = driver_class(Backend.VIRTUALBOX)(vbox_lifecycle.TARGET)
    point = driver.capture_point("natnetwork", "vm1", 0)
    assert point.interface is None and "VirtualBox's trace of NIC 1" in point.label
    record = state.read(vbox_lifecycle.TARGET, "natnetwork")

    def nic():
        vm = next(v for v in vbox.state()["vms"].values() if v["name"] == record["vms"]["vm1"])
        return vm["nics"]["1"]
    own = state.lab_dir(vbox_lifecycle.TARGET, "natnetwork") / "trace-vm1-nic0.pcap"
    victim = tmp_path / "victim"
    victim.write_text("root's file")
    (tmp_path / "t.pcap").symlink_to(victim)       # planted under the name the user gives
    driver.nic_trace("natnetwork", "vm1", 0, str(tmp_path / "t.pcap"), True)
    # VirtualBox (root) is never given the user's path: it would follow that symlink
    assert nic()["trace"] is True and nic()["tracefile"] == str(own)
    with pytest.raises(VnetError, match="it is a symbolic link"):
        driver.nic_trace("natnetwork", "vm1", 0, str(tmp_path / "t.pcap"), False)
    assert nic()["trace"] is False and victim.read_text() == "root's file"
    (tmp_path / "t.pcap").unlink()
    driver.nic_trace("natnetwork", "vm1", 0, str(tmp_path / "t.pcap"), True)
    driver.nic_trace("natnetwork", "vm1", 0, str(tmp_path / "t.pcap"), False)
    assert (tmp_path / "t.pcap").read_bytes()[:4] == bytes.fromhex("d4c3b2a1") and not own.exists()


@pytest.fixture
def recorded(monkeypatch, tmp_path):
    """A private state root holding lab `cap`'s record; the libvirt driver finds taps by name
    (no libvirtd), and capture.start is a stand-in that records what it was asked."""
    monkeypatch.setenv("VNET_STATE_DIR", str(tmp_path / "state"))
    target = lifecycle.target_for(None, None)
    state.save(target, "cap", {"lab_data": LAB, "source": "test"})
    monkeypatch.setattr(LibvirtDriver, "interface_target", lambda self, dom, mac: "vnet9")
    asked = []

    class Cap:
        started_in = 0.012

        def wait(self, timeout=None):
            return 0

        def stop(self):
            return {"pcap": asked[-1][1], "interface": "vnet9", "start_latency_s": 0.012,
                    "bytes": 24, "tcpdump": {"captured": 2}}

    monkeypatch.setattr(capture, "start", lambda point, pcap, work, bpf="", count=None,
                        stdout=None: asked.append((point, str(pcap), bpf, count)) or Cap())
    return asked


@pytest.mark.parametrize("argv, message", [
    (["capture", "cap", "zz"], "vms.zz.nics[0]: lab cap has no such NIC; VMs: a, b"),
    (["capture", "cap", "b:1"], "vms.b.nics[1]: lab cap has no such NIC"),
    (["capture", "cap", "a:x"], "'a:x' is not VM or VM:NIC"),
    (["capture", "nolab", "a"], "lab nolab has no such NIC; VMs: none (no such lab)"),
    (["capture", "cap", "a:1"], "QEMU user networking (SLIRP)"),
    (["capture", "cap", "a", "--filter", "udp portt 1"], "is not a BPF filter tcpdump accepts"),
    (["capture", "cap", "a", "--count", "0"], "--count"),
])
def test_bad_input_is_one_line_and_exit_2_and_nothing_starts(recorded, argv, message):
    result = CliRunner().invoke(main, argv)
    assert result.exit_code == 2, result.output
    assert message in result.output and not recorded
    assert result.output.startswith("vnet: error:") or "Usage" in result.output


def test_capture_writes_where_asked_with_the_filter_and_count(recorded, tmp_path):
    out = tmp_path / "a.pcap"
    result = CliRunner().invoke(main, ["capture", "cap", "a:0", "-w", str(out), "--filter",
                                       "udp", "--count", "5", "--format", "json"])
    assert result.exit_code == 0, result.output
    point, pcap, bpf, count = recorded[0]
    assert (point.interface, pcap, bpf, count) == ("vnet9", str(out.resolve()), "udp", 5)
    assert "capturing on a:0 (tap vnet9 on network lan)" in result.output
    assert "2 frames captured, 24 bytes" in result.output
    default = CliRunner().invoke(main, ["capture", "cap", "b"])
    assert default.exit_code == 0, default.output
    assert recorded[1][1].endswith("/labs/uri-" + recorded[1][1].split("/labs/uri-")[1]) \
        and recorded[1][1].endswith("/cap/capture-b-0.pcap")


def test_a_stream_to_a_terminal_is_refused(recorded, monkeypatch):
    from provisioner.cli import capture as cli_capture

    monkeypatch.setattr(cli_capture, "_terminal", lambda stream: True)
    result = CliRunner().invoke(main, ["capture", "cap", "a", "-w", "-"])
    assert result.exit_code == 2 and "pipe it, e.g. | wireshark -k -i -" in result.output
    assert not recorded


def test_an_open_vswitch_network_is_captured_at_the_near_ends_tap(tmp_path, monkeypatch):
    """The OVS bridge's LOCAL port misses frames switched between VM ports: the encapsulation
    cell's capture falls back to the near end's NIC (Driver.capture_point: its tap)."""
    from provisioner.verify import encapcells

    raw = {**LAB, "networks": [{"name": "lan", "mode": "internal", "subnet": "10.72.1.0/24",
                                "switch": "openvswitch"}, LAB["networks"][1]]}
    ovs_lab = loader.resolve(raw, loader.Defaults())
    with pytest.raises(Unsupported, match="Open vSwitch bridge"):
        lvcapture.network_point(ovs_lab, SANDBOX, "lan")

    class Driver:
        def network_capture_point(self, lab_name, network):
            return lvcapture.network_point(ovs_lab, SANDBOX, network)

        def capture_point(self, lab_name, vm, nic):
            return lvcapture.nic_point(ovs_lab, SANDBOX, vm, nic, f"tap-{vm}{nic}")

    caps = encapcells.Captures(ovs_lab, SANDBOX, Backend.LIBVIRT, [], tmp_path, tmp_path)
    caps.driver, caps.cells = Driver(), [SimpleNamespace(network="lan", source="b")]
    started = []
    monkeypatch.setattr(capture, "start", lambda point, pcap, work: started.append(point) or
                        SimpleNamespace(started_in=0.0))
    caps._start("lan", tmp_path / "lan.pcap")
    assert [p.interface for p in started] == ["tap-b0"]
