"""What was on the wire: a small pcap reader and decoder for the encapsulations vnet's tunnels
use, and the `encapsulation` cell's judgement of a capture (issue 17).

Pure Python, no dependency: classic pcap (libpcap's file format, both byte orders, micro- and
nanosecond stamps; link types Ethernet and Linux cooked capture), Ethernet with 802.1Q tags,
IPv4, UDP, GRE (RFC 2784/2890: protocol, key), VXLAN (RFC 7348: UDP 4789, VNI), NVGRE
(RFC 7637: GRE protocol 0x6558, key = VSID << 8 | FlowID), ESP (RFC 4303: SPI) and WireGuard
(its whitepaper, section 5.4: message types 1-4, each followed by three reserved zero bytes).
An encapsulated Ethernet frame or IPv4 packet is decoded again, so a probe's payload is found
inside its tunnel.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

PCAP_MAGIC = {b"\xd4\xc3\xb2\xa1": "<", b"\xa1\xb2\xc3\xd4": ">",      # microseconds
              b"\x4d\x3c\xb2\xa1": "<", b"\xa1\xb2\x3c\x4d": ">"}      # nanoseconds
LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL = 1, 113
ETH_IPV4, ETH_VLAN, ETH_QINQ, ETH_TEB = 0x0800, 0x8100, 0x88A8, 0x6558
IP_TCP, IP_UDP, IP_GRE, IP_ESP = 6, 17, 47, 50
VXLAN_PORT = 4789
TYPES = ("vxlan", "nvgre", "gretap", "gre", "ipsec", "wireguard")
ENCRYPTED = ("ipsec", "wireguard")


class PcapError(ValueError):
    """Not a pcap file vnet can read (the detail says why)."""


@dataclass
class Layer:
    name: str                      # eth, vlan, ipv4, udp, gre, vxlan, esp, wireguard
    fields: dict = field(default_factory=dict)
    inner: bytes = b""             # a tunnel header's payload: what it carries


@dataclass
class Frame:
    number: int                    # 1-based, as Wireshark counts
    data: bytes
    layers: list[Layer]

    def find(self, name: str) -> list[Layer]:
        return [layer for layer in self.layers if layer.name == name]


# ---------------------------------------------------------------- reading

def read_pcap(path: Path | str) -> Iterator[Frame]:
    """Every frame of a pcap file, decoded. A file cut short at its end (a capture that was
    stopped while writing) yields the whole frames before the cut."""
    with open(path, "rb") as f:
        header = f.read(24)
        if len(header) < 24 or header[:4] not in PCAP_MAGIC:
            raise PcapError(f"{path} is not a pcap file (magic {header[:4].hex() or 'none'})")
        order = PCAP_MAGIC[header[:4]]
        linktype = struct.unpack(order + "I", header[20:24])[0] & 0x0FFFFFFF
        if linktype not in (LINKTYPE_ETHERNET, LINKTYPE_LINUX_SLL):
            raise PcapError(f"{path}: link type {linktype} is not Ethernet (1) or Linux "
                            f"cooked (113)")
        number = 0
        while len(record := f.read(16)) == 16:
            caplen = struct.unpack(order + "I", record[8:12])[0]
            data = f.read(caplen)
            if len(data) < caplen:
                return
            number += 1
            yield Frame(number, data, decode(data, linktype))


def decode(data: bytes, linktype: int = LINKTYPE_ETHERNET) -> list[Layer]:
    """The layers of one frame, outermost first; decoding stops where the bytes do."""
    layers: list[Layer] = []
    try:
        if linktype == LINKTYPE_LINUX_SLL:
            _payload_of(struct.unpack("!H", data[14:16])[0], data[16:], layers)
        else:
            _ethernet(data, layers)
    except (struct.error, IndexError):
        layers.append(Layer("truncated"))
    return layers


def _ethernet(data: bytes, layers: list[Layer]) -> None:
    ethertype = struct.unpack("!H", data[12:14])[0]
    layers.append(Layer("eth", {"dst": data[0:6].hex(":"), "src": data[6:12].hex(":"),
                                "type": ethertype}))
    rest = data[14:]
    while ethertype in (ETH_VLAN, ETH_QINQ):
        tci, ethertype = struct.unpack("!HH", rest[:4])
        layers.append(Layer("vlan", {"vid": tci & 0x0FFF, "type": ethertype}))
        rest = rest[4:]
    _payload_of(ethertype, rest, layers)


def _payload_of(ethertype: int, data: bytes, layers: list[Layer]) -> None:
    if ethertype == ETH_IPV4:
        _ipv4(data, layers)
    elif ethertype == ETH_TEB:
        _ethernet(data, layers)


def _ipv4(data: bytes, layers: list[Layer]) -> None:
    ihl = (data[0] & 0x0F) * 4
    total, proto = struct.unpack("!H", data[2:4])[0], data[9]
    layers.append(Layer("ipv4", {"src": ".".join(map(str, data[12:16])),
                                 "dst": ".".join(map(str, data[16:20])), "proto": proto}))
    body = data[ihl:total] if total >= ihl else data[ihl:]
    if proto == IP_UDP:
        _udp(body, layers)
    elif proto == IP_TCP:
        sport, dport = struct.unpack("!HH", body[:4])
        layers.append(Layer("tcp", {"sport": sport, "dport": dport}, body[(body[12] >> 4) * 4:]))
    elif proto == IP_GRE:
        _gre(body, layers)
    elif proto == IP_ESP:
        spi, seq = struct.unpack("!II", body[:8])
        layers.append(Layer("esp", {"spi": spi, "seq": seq}, body[8:]))


def _udp(data: bytes, layers: list[Layer]) -> None:
    sport, dport = struct.unpack("!HH", data[:4])
    layers.append(Layer("udp", {"sport": sport, "dport": dport}))
    body = data[8:]
    if VXLAN_PORT in (sport, dport) and len(body) >= 8 and body[0] & 0x08:
        layers.append(Layer("vxlan", {"vni": int.from_bytes(body[4:7], "big")}, body[8:]))
        _ethernet(body[8:], layers)
    elif len(body) >= 4 and 1 <= body[0] <= 4 and body[1:4] == b"\0\0\0":
        # a WireGuard message by its shape; the port decides whether it is the lab's
        layers.append(Layer("wireguard", {"message": body[0], "sport": sport, "dport": dport},
                            body))


def _gre(data: bytes, layers: list[Layer]) -> None:
    flags, proto = struct.unpack("!HH", data[:4])
    offset, key = 4, None
    if flags & 0x8000:             # C: checksum and reserved1 present
        offset += 4
    if flags & 0x2000:             # K: key present
        key = struct.unpack("!I", data[offset:offset + 4])[0]
        offset += 4
    if flags & 0x1000:             # S: sequence number present
        offset += 4
    layers.append(Layer("gre", {"proto": proto, "key": key}, data[offset:]))
    _payload_of(proto, data[offset:], layers)


def frames_with(pcap: Path | str, needle: bytes) -> list[Frame]:
    """The frames whose bytes hold `needle` (a probe's nonce): `vnet capture`'s evidence."""
    return [frame for frame in read_pcap(pcap) if needle in frame.data]


# ---------------------------------------------------------------- judging a capture

@dataclass(frozen=True)
class Expectation:
    """What the encapsulation cell expects on the underlay. `id`: VNI, VSID or GRE key; `spis`:
    the lab's ESP SPIs (either direction); `port`: WireGuard's listen port; `nonce`: the probe's
    fresh nonce, which must be inside the tunnel (unencrypted types) or nowhere (encrypted);
    `ends`: the underlay addresses of the probing end and the far end, between which the
    tunnel's frames must carry traffic both ways (WireGuard: data messages, not handshakes or
    keepalives). For an encrypted tunnel, where the nonce cannot show, that is the sign the
    capture saw the exchange; other traffic through the same tunnel during the capture would
    show the same, so it ties the capture to the tunnel's use, not to this one probe."""
    type: str
    nonce: bytes
    id: int | None = None
    spis: tuple[int, ...] = ()
    port: int | None = None
    ends: tuple[str, str] | None = None

    @property
    def encrypted(self) -> bool:
        return self.type in ENCRYPTED


def _matches(frame: Frame, exp: Expectation) -> tuple[bool, str]:
    """(is this frame the tunnel's, what identifies it) for one frame."""
    if exp.type == "vxlan":
        for v in frame.find("vxlan"):
            return v.fields["vni"] == exp.id, f"VXLAN VNI {v.fields['vni']}"
    elif exp.type in ("nvgre", "gretap", "gre"):
        for g in frame.find("gre"):
            proto, key = g.fields["proto"], g.fields["key"]
            want_proto = ETH_IPV4 if exp.type == "gre" else ETH_TEB
            if exp.type == "nvgre":
                got = "no key" if key is None else f"VSID {key >> 8} FlowID {key & 0xFF}"
                ok = key is not None and key >> 8 == exp.id
            else:
                got = "no key" if key is None else f"key {key}"
                ok = key == exp.id        # no id declared: a keyless tunnel, as vnet builds it
            return ok and proto == want_proto, f"GRE proto 0x{proto:04x} {got}"
    elif exp.type == "ipsec":
        for e in frame.find("esp"):
            return e.fields["spi"] in exp.spis, f"ESP SPI 0x{e.fields['spi']:08x}"
    elif exp.type == "wireguard":
        for w in frame.find("wireguard"):
            ports = (w.fields["sport"], w.fields["dport"])
            return exp.port in ports, f"WireGuard type {w.fields['message']} " \
                                      f"port {w.fields['sport']}->{w.fields['dport']}"
    return False, ""


def _inner_has(frame: Frame, nonce: bytes, exp: Expectation) -> bool:
    """Whether the nonce is in what the tunnel header carries (not just anywhere)."""
    name = {"vxlan": "vxlan", "ipsec": "esp", "wireguard": "wireguard"}.get(exp.type, "gre")
    return any(nonce in layer.inner for layer in frame.find(name))


def check(pcap: Path | str, exp: Expectation) -> tuple[bool, str]:
    """(ok, detail) for one capture: the tunnel's frames are there with the right id, and the
    nonce is inside them (unencrypted types) or in no frame at all (encrypted types)."""
    if exp.type not in TYPES:
        raise ValueError(f"unknown tunnel type {exp.type!r}; valid: {', '.join(TYPES)}")
    frames = ours = 0
    seen: dict[str, int] = {}      # what identifies each tunnel-looking frame -> how many
    ways = {"out": 0, "back": 0}   # the tunnel's frames from the probing end, and to it
    nonce_inside, cleartext = 0, []
    try:
        for frame in read_pcap(pcap):
            frames += 1
            mine, label = _matches(frame, exp)
            if label:
                seen[label] = seen.get(label, 0) + 1
            ours += mine
            way = _way(frame, exp.ends) if mine and _carries(frame, exp) else None
            if way:
                ways[way] += 1
            if exp.nonce in frame.data:
                if mine and _inner_has(frame, exp.nonce, exp):
                    nonce_inside += 1
                cleartext.append(frame.number)
    except (OSError, PcapError) as exc:
        return False, f"cannot read the capture: {exc}"
    saw = ", ".join(f"{n} x {label}" for label, n in sorted(seen.items())) or "no tunnel frame"
    want = _wanted(exp)
    head = f"{frames} frames captured; {ours} of {want}; seen: {saw}"
    nonce = exp.nonce.decode(errors="replace")
    if not ours:
        return False, f"{head}; no frame of the tunnel on the underlay"
    if exp.ends:
        near, far = exp.ends
        head += f"; {ways['out']} from {near} to {far}, {ways['back']} back"
        if not ways["out"] or not ways["back"]:
            return False, f"{head}: the capture did not see the probe's exchange both ways"
    if exp.encrypted:
        if cleartext:
            return False, (f"{head}; the probe's nonce {nonce} is in cleartext in frame(s) "
                           f"{_numbers(cleartext)}: the tunnel does not encrypt")
        return True, f"{head}; the probe's nonce {nonce} appears in no frame (encrypted)"
    if not nonce_inside:
        where = f" (only outside the tunnel: frame(s) {_numbers(cleartext)})" if cleartext else ""
        return False, f"{head}; the probe's nonce {nonce} is not inside the tunnel{where}"
    return True, f"{head}; the probe's nonce {nonce} is inside {nonce_inside} of them"


WG_EMPTY = 32      # a WireGuard transport message with no payload (a keepalive): 16 + 16 tag


def _carries(frame: Frame, exp: Expectation) -> bool:
    """Whether the tunnel frame carries traffic: WireGuard's handshakes and keepalives (every
    25 s, vnet_tunnel's persistent-keepalive) cross both ways with no probe at all."""
    if exp.type != "wireguard":
        return True
    return any(w.fields["message"] == 4 and len(w.inner) > WG_EMPTY
               for w in frame.find("wireguard"))


def _way(frame: Frame, ends: tuple[str, str] | None) -> str | None:
    """"out" (probing end -> far end), "back", or None, by the outer IPv4 header."""
    outer = frame.find("ipv4")
    if not ends or not outer:
        return None
    pair = (outer[0].fields["src"], outer[0].fields["dst"])
    return {ends: "out", ends[::-1]: "back"}.get(pair)


def _wanted(exp: Expectation) -> str:
    if exp.type == "vxlan":
        return f"VXLAN (UDP {VXLAN_PORT}) VNI {exp.id}"
    if exp.type == "nvgre":
        return f"NVGRE (GRE 0x6558) VSID {exp.id}"
    if exp.type in ("gretap", "gre"):
        proto = "0x6558" if exp.type == "gretap" else "0x0800"
        return f"{exp.type.upper()} (GRE {proto}) key {exp.id}"
    if exp.type == "ipsec":
        return "ESP SPI " + "/".join(f"0x{s:08x}" for s in exp.spis)
    return f"WireGuard on UDP port {exp.port}"


def _numbers(numbers: list[int], most: int = 5) -> str:
    shown = ", ".join(map(str, numbers[:most]))
    return shown + (f" and {len(numbers) - most} more" if len(numbers) > most else "")
