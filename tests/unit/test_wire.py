"""The pcap decoder and the encapsulation judgement (verify/wire.py) on pcaps built here, byte by
byte, from the RFCs' header layouts."""
import struct

import pytest

from provisioner.verify import wire
from provisioner.verify.wire import Expectation

NONCE = b"encap-0123456789abcdef"
PROBE = b"VNET " + NONCE + b"\n"


def eth(payload, ethertype=0x0800, vlan=None):
    head = bytes.fromhex("525400000002525400000001")
    if vlan is not None:
        head += struct.pack("!HH", 0x8100, vlan)
    return head + struct.pack("!H", ethertype) + payload


def ipv4(payload, proto, src="10.71.1.10", dst="10.71.2.10"):
    addr = lambda a: bytes(map(int, a.split(".")))          # noqa: E731
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 1, 0, 64, proto, 0,
                       addr(src), addr(dst)) + payload


def udp(payload, sport, dport):
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def gre(payload, proto, key=None, seq=False):
    flags = (0x2000 if key is not None else 0) | (0x1000 if seq else 0)
    return struct.pack("!HH", flags, proto) + (struct.pack("!I", key) if key is not None
                                               else b"") + (b"\0\0\0\7" if seq else b"") + payload


def vxlan(payload, vni):
    return struct.pack("!B3sI", 0x08, b"\0\0\0", vni << 8) + payload


def inner_probe():
    """The overlay's own frame: the probe from 10.99.0.1 to 10.99.0.2, TCP-less (UDP)."""
    return eth(ipv4(udp(PROBE, 40000, 7), 17, "10.99.0.1", "10.99.0.2"))


def pcap(tmp_path, frames, name="c.pcap", big_endian=False, linktype=1):
    order = ">" if big_endian else "<"
    out = struct.pack(order + "IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, linktype)
    for i, frame in enumerate(frames):
        out += struct.pack(order + "IIII", 1000 + i, 0, len(frame), len(frame)) + frame
    path = tmp_path / name
    path.write_bytes(out)
    return path


def test_decodes_vxlan_with_a_vlan_tag_and_finds_the_inner_ip(tmp_path):
    frame = eth(ipv4(udp(vxlan(inner_probe(), 4242), 51000, 4789), 17), vlan=30)
    [got] = list(wire.read_pcap(pcap(tmp_path, [frame], big_endian=True)))
    names = [layer.name for layer in got.layers]
    assert names == ["eth", "vlan", "ipv4", "udp", "vxlan", "eth", "ipv4", "udp"]
    assert got.find("vlan")[0].fields["vid"] == 30
    assert got.find("vxlan")[0].fields["vni"] == 4242
    assert got.find("ipv4")[1].fields["dst"] == "10.99.0.2"


@pytest.mark.parametrize("kind, frame, exp", [
    ("vxlan", eth(ipv4(udp(vxlan(inner_probe(), 4242), 51000, 4789), 17)),
     Expectation("vxlan", NONCE, id=4242)),
    ("nvgre", eth(ipv4(gre(inner_probe(), 0x6558, key=(77 << 8) | 5), 47)),
     Expectation("nvgre", NONCE, id=77)),
    ("gretap", eth(ipv4(gre(inner_probe(), 0x6558, key=9, seq=True), 47)),
     Expectation("gretap", NONCE, id=9)),
    ("gre", eth(ipv4(gre(ipv4(udp(PROBE, 1, 7), 17), 0x0800, key=11), 47)),
     Expectation("gre", NONCE, id=11)),
])
def test_unencrypted_tunnels_pass_with_the_nonce_inside_and_fail_on_a_wrong_id(
        tmp_path, kind, frame, exp):
    ok, detail = wire.check(pcap(tmp_path, [eth(ipv4(udp(b"x", 1, 2), 17)), frame]), exp)
    assert ok, detail
    assert "2 frames captured; 1 of" in detail and "inside 1 of them" in detail
    wrong = Expectation(exp.type, NONCE, id=exp.id + 1)
    ok, detail = wire.check(pcap(tmp_path, [frame]), wrong)
    assert not ok and "no frame of the tunnel" in detail, detail


def test_nvgre_detail_names_vsid_and_flowid_and_gretap_is_not_gre(tmp_path):
    frame = eth(ipv4(gre(inner_probe(), 0x6558, key=(77 << 8) | 5), 47))
    ok, detail = wire.check(pcap(tmp_path, [frame]), Expectation("nvgre", NONCE, id=77))
    assert ok and "GRE proto 0x6558 VSID 77 FlowID 5" in detail, detail
    ok, detail = wire.check(pcap(tmp_path, [frame]), Expectation("gre", NONCE, id=(77 << 8) | 5))
    assert not ok, detail                       # protocol 0x6558 is not plain GRE's 0x0800


@pytest.mark.parametrize("kind, proto", [("gre", 0x0800), ("gretap", 0x6558)])
def test_a_tunnel_declared_without_a_key_is_not_one_built_with_a_key(tmp_path, kind, proto):
    """vnet builds a GRE tunnel without a key when the lab declares no id: a keyed one is
    another tunnel (any key passed)."""
    inner = ipv4(udp(PROBE, 1, 7), 17) if kind == "gre" else inner_probe()
    keyed = eth(ipv4(gre(inner, proto, key=11), 47))
    ok, detail = wire.check(pcap(tmp_path, [keyed]), Expectation(kind, NONCE, id=None))
    assert not ok and "no frame of the tunnel" in detail, detail
    keyless = eth(ipv4(gre(inner, proto), 47))
    ok, detail = wire.check(pcap(tmp_path, [keyless]), Expectation(kind, NONCE, id=None))
    assert ok, detail


def test_nonce_outside_the_tunnel_is_not_inside(tmp_path):
    tunnel = eth(ipv4(udp(vxlan(eth(ipv4(udp(b"other", 1, 7), 17)), 4242), 5, 4789), 17))
    plain = eth(ipv4(udp(PROBE, 40000, 7), 17))
    ok, detail = wire.check(pcap(tmp_path, [tunnel, plain]), Expectation("vxlan", NONCE, id=4242))
    assert not ok and "not inside the tunnel (only outside the tunnel: frame(s) 2)" in detail


def esp(spi, seq, payload):
    return struct.pack("!II", spi, seq) + payload


def wg(message, payload=b"\x11" * 32):
    return bytes([message, 0, 0, 0]) + payload


@pytest.mark.parametrize("exp, good, leaky", [
    (Expectation("ipsec", NONCE, spis=(0x1001, 0x1002)),
     eth(ipv4(esp(0x1001, 1, b"\xaa" * 64), 50)),
     eth(ipv4(esp(0x1002, 2, b"\0" * 8 + inner_probe()[14:]), 50))),   # enc cipher_null
    (Expectation("wireguard", NONCE, port=51820),
     eth(ipv4(udp(wg(4), 51820, 51820), 17)),
     eth(ipv4(udp(PROBE, 40000, 7), 17))),
])
def test_encrypted_tunnels_need_their_frames_and_no_cleartext_nonce(tmp_path, exp, good, leaky):
    ok, detail = wire.check(pcap(tmp_path, [good, good]), exp)
    assert ok and "appears in no frame (encrypted)" in detail and "2 of" in detail, detail
    ok, detail = wire.check(pcap(tmp_path, [good, leaky]), exp)
    assert not ok and "in cleartext in frame(s) 2" in detail, detail
    ok, detail = wire.check(pcap(tmp_path, [eth(ipv4(udp(b"hello", 1, 2), 17))]), exp)
    assert not ok and "no frame of the tunnel" in detail, detail


@pytest.mark.parametrize("exp, frame", [
    (Expectation("ipsec", NONCE, spis=(0x1001, 0x1002), ends=("10.71.1.10", "10.71.2.10")),
     lambda src, dst: eth(ipv4(esp(0x1001, 1, b"\xaa" * 64), 50, src, dst))),
    (Expectation("vxlan", NONCE, id=4242, ends=("10.71.1.10", "10.71.2.10")),
     lambda src, dst: eth(ipv4(udp(vxlan(inner_probe(), 4242), 40000, 4789), 17, src, dst))),
])
def test_the_tunnels_frames_must_go_both_ways_between_its_ends(tmp_path, exp, frame):
    """An encrypted tunnel shows no nonce, so its frames between the probing end and the far
    end, both ways, are what ties the capture to the probe's exchange: frames one way only
    (another probe's, or a tunnel between other addresses) prove nothing of it."""
    out, back = frame("10.71.1.10", "10.71.2.10"), frame("10.71.2.10", "10.71.1.10")
    ok, detail = wire.check(pcap(tmp_path, [out, back]), exp)
    assert ok and "1 from 10.71.1.10 to 10.71.2.10, 1 back" in detail, detail
    for one_way in ([out, out], [back], [frame("10.71.1.10", "10.71.3.10"), back]):
        ok, detail = wire.check(pcap(tmp_path, one_way), exp)
        assert not ok and "did not see the probe's exchange both ways" in detail, detail


def test_wireguard_handshakes_and_keepalives_both_ways_are_no_exchange(tmp_path):
    """persistent-keepalive sends empty transport messages (32 bytes) and handshakes both
    ways with no probe at all: only data messages count for the direction."""
    exp = Expectation("wireguard", NONCE, port=51820, ends=("10.71.1.10", "10.71.2.10"))

    def frame(message, size, src, dst):
        return eth(ipv4(udp(wg(message, b"\x11" * (size - 4)), 51820, 51820), 17, src, dst))
    idle = [frame(1, 148, "10.71.1.10", "10.71.2.10"), frame(2, 92, "10.71.2.10", "10.71.1.10"),
            frame(4, 32, "10.71.1.10", "10.71.2.10"), frame(4, 32, "10.71.2.10", "10.71.1.10")]
    ok, detail = wire.check(pcap(tmp_path, idle), exp)
    assert not ok and "0 from 10.71.1.10 to 10.71.2.10, 0 back" in detail, detail
    data = [frame(4, 96, "10.71.1.10", "10.71.2.10"), frame(4, 96, "10.71.2.10", "10.71.1.10")]
    ok, detail = wire.check(pcap(tmp_path, idle + data), exp)
    assert ok and "1 from 10.71.1.10 to 10.71.2.10, 1 back" in detail, detail


def test_wrong_spi_and_wrong_port_are_not_the_tunnel(tmp_path):
    ok, detail = wire.check(pcap(tmp_path, [eth(ipv4(esp(0x9999, 1, b"\xaa" * 32), 50))]),
                            Expectation("ipsec", NONCE, spis=(0x1001,)))
    assert not ok and "ESP SPI 0x00009999" in detail
    handshake = eth(ipv4(udp(wg(1), 40000, 51821), 17))
    ok, detail = wire.check(pcap(tmp_path, [handshake]), Expectation("wireguard", NONCE, port=51820))
    assert not ok and "WireGuard type 1 port 40000->51821" in detail


def test_linux_cooked_capture_and_a_truncated_tail(tmp_path):
    sll = struct.pack("!HHH8sH", 0, 1, 6, b"\0" * 8, 0x0800)
    frame = sll + ipv4(udp(vxlan(inner_probe(), 7), 1, 4789), 17)
    path = pcap(tmp_path, [frame, frame], linktype=113)
    path.write_bytes(path.read_bytes()[:-10])        # the capture stopped while writing
    ok, detail = wire.check(path, Expectation("vxlan", NONCE, id=7))
    assert ok and detail.startswith("1 frames captured"), detail


def test_not_a_pcap_is_a_clear_failure(tmp_path):
    bad = tmp_path / "x.pcap"
    bad.write_bytes(b"\x0a\x0d\x0d\x0a" + b"\0" * 30)                 # pcapng: not supported
    ok, detail = wire.check(bad, Expectation("vxlan", NONCE, id=1))
    assert not ok and "not a pcap file (magic 0a0d0d0a)" in detail
    ok, detail = wire.check(tmp_path / "missing.pcap", Expectation("vxlan", NONCE, id=1))
    assert not ok and "cannot read the capture" in detail
    with pytest.raises(ValueError, match="unknown tunnel type 'ppp'; valid: vxlan, nvgre"):
        wire.check(bad, Expectation("ppp", NONCE))


def test_frames_with_finds_a_tcp_probe(tmp_path):
    tcp = struct.pack("!HHIIBBHHH", 40000, 7, 1, 0, 5 << 4, 0x18, 512, 0, 0) + PROBE
    path = pcap(tmp_path, [eth(ipv4(udp(b"x", 1, 2), 17)), eth(ipv4(tcp, 6))])
    [found] = wire.frames_with(path, NONCE)
    assert found.number == 2 and found.find("tcp")[0].fields["dport"] == 7
    assert found.find("tcp")[0].inner == PROBE
