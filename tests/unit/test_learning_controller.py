"""vnet's learning-switch controller (provisioner/host/controller_files/learning_switch.py)
against a switch played over a socket pair with OpenFlow 1.3 bytes: the table-miss flow on
connect, flooding an unknown destination, a learned flow once both MACs are known; and the
report's reading of its events."""
import importlib.util
import socket
from pathlib import Path
import struct
import threading
import time

import pytest

from provisioner.host import controller

pytest.importorskip("os_ken", reason="os-ken is missing: pip install '.[openflow]'")
from os_ken.lib.packet import ethernet, packet  # noqa: E402
from os_ken.ofproto import ofproto_v1_3 as ofp, ofproto_v1_3_parser as parser  # noqa: E402

A, B = "52:54:00:00:00:0a", "52:54:00:00:00:0b"


def load_switch_module():
    spec = importlib.util.spec_from_file_location("learning_switch", controller.SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def header(msg_type, body, xid=1):
    return struct.pack("!BBHI", ofp.OFP_VERSION, msg_type, 8 + len(body), xid) + body


def packet_in(in_port, src, dst):
    frame = packet.Packet()
    frame.add_protocol(ethernet.ethernet(dst=dst, src=src, ethertype=0x0800))
    frame.serialize()
    match = bytearray()
    parser.OFPMatch(in_port=in_port).serialize(match, 0)
    body = struct.pack("!IHBBQ", ofp.OFP_NO_BUFFER, len(frame.data), 0, 0, 0) + bytes(match) \
        + b"\0\0" + bytes(frame.data)
    return header(ofp.OFPT_PACKET_IN, body)


def messages(sock, wait=0.5):
    """The OpenFlow message types the controller sent, until it stays quiet for `wait`."""
    sock.settimeout(wait)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except socket.timeout:
        pass
    found = []
    while data:
        _, msg_type, length, _ = struct.unpack_from("!BBHI", data)
        found.append(msg_type)
        data = data[length:]
    return found


def test_table_miss_then_flood_then_a_learned_flow(tmp_path):
    events = tmp_path / controller.EVENTS
    mine, switch = socket.socketpair()
    threading.Thread(target=load_switch_module().Switch(mine, str(events)).serve,
                     daemon=True).start()
    assert messages(switch) == [ofp.OFPT_HELLO, ofp.OFPT_FEATURES_REQUEST]
    switch.sendall(header(ofp.OFPT_FEATURES_REPLY, struct.pack("!QIBB2xII", 0xabc, 0, 254, 0,
                                                                0, 0)))
    assert messages(switch) == [ofp.OFPT_FLOW_MOD]                 # the table-miss
    switch.sendall(packet_in(1, A, B))           # B unknown: flood, no flow
    assert messages(switch) == [ofp.OFPT_PACKET_OUT]
    switch.sendall(packet_in(2, B, A))           # A is on port 1: a flow, then the packet
    assert messages(switch) == [ofp.OFPT_FLOW_MOD, ofp.OFPT_PACKET_OUT]
    time.sleep(0.1)
    seen = controller.events(tmp_path)
    assert seen["packet_ins"] == 2
    assert [(f["why"], f["priority"], f["output"]) for f in seen["flows"]] == [
        ("table-miss", 0, [ofp.OFPP_CONTROLLER]), ("learned", 1, [1])]
    assert seen["flows"][1]["match"] == {"in_port": 2, "eth_dst": A, "eth_src": B}


def test_the_controller_listens_on_a_root_only_unix_socket_in_the_lab_dir(tmp_path, monkeypatch):
    """No TCP port picked before binding (another local user could take it and be the
    controller): a unix socket, 0600 from the moment it exists, which the bridges are set to."""
    from types import SimpleNamespace

    from provisioner.host import procs
    from provisioner.lab import loader

    lab = loader.resolve({"name": "oflab", "networks": [
        {"name": "f", "mode": "internal", "switch": "openvswitch", "controller": "learning"}],
        "vms": [{"name": "v", "nics": [{"network": "f"}]}]})
    spawned, vsctl = [], []
    monkeypatch.setattr(procs, "running", lambda *a: None)
    monkeypatch.setattr(procs, "spawn", lambda argv, *a, **kw: spawned.append(argv) or
                        SimpleNamespace(pid=4242))
    rundir = tmp_path / "ovs-run"               # OVS connects to unix: sockets only in here
    rundir.mkdir()
    ovs = SimpleNamespace(rundir=str(rundir), vsctl=lambda *args, **kw: vsctl.append(args) or
                          SimpleNamespace(stdout="is_connected : true\n"))
    controller.start(lab, SimpleNamespace(netns=None), tmp_path, ovs, lambda m: None)
    [sock] = [Path(a) for a in spawned[0] if a.endswith(".ctl")]
    assert sock.parent == rundir and sock.name.startswith("vnet-oflab-")
    assert spawned[0][-2:] == [str(sock), str(tmp_path / controller.EVENTS)]
    assert [a[-1] for a in vsctl if a[0] == "set-controller"] == [f"unix:{sock}"]

    server = load_switch_module().listen(str(sock))
    try:
        import stat

        mode = sock.lstat().st_mode
        assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(str(sock))
    finally:
        server.close()
    controller.stop(tmp_path, lambda m: None)              # no process recorded: the socket goes
    assert not sock.exists()


def test_stop_removes_only_this_labs_socket(tmp_path):
    """The record names the socket; a name merely shaped like vnet's, or a symlink with the
    right name, was removed too."""
    import json
    import socket as sockets

    from provisioner.host import controller

    lab_dir = tmp_path / "labs" / "of"
    lab_dir.mkdir(parents=True)
    rundir = tmp_path / "run"
    rundir.mkdir()

    def bound(path):
        s = sockets.socket(sockets.AF_UNIX)
        s.bind(str(path))
        s.close()
        return path

    def stop_naming(path):
        (lab_dir / controller.SOCKET).write_text(json.dumps({"socket": str(path)}))
        controller.stop(lab_dir, lambda m: None)

    other = bound(rundir / "vnet-other-12345678.ctl")          # another lab's
    stop_naming(other)
    assert other.exists()
    own = controller.socket_path(type("Ovs", (), {"rundir": str(rundir)})(), "of", lab_dir)
    victim = bound(tmp_path / "victim.sock")
    own.symlink_to(victim)                                     # the right name, a symlink
    stop_naming(own)
    assert own.is_symlink() and victim.exists()
    own.unlink()
    stop_naming(bound(own))
    assert not own.exists()
