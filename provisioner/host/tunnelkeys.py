"""The per-lab keys of a lab's ipsec and wireguard tunnels (issue 17), made when the lab is
created and kept, readable by root only (0600), in the lab's state directory: never in the lab
file, so a lab file can be shared and every lab gets keys of its own.

    tunnel_secrets(lab_dir) -> {tunnel name: {...}}

ipsec:     {"type": "ipsec", "spi": [s0, s1], "enc": [hex, hex], "auth": [hex, hex], "if_id": n}
           index k is the direction from endpoint k to the other one (its outbound SA):
           AES-128-CBC ("enc", 16 bytes) with HMAC-SHA-256 truncated to 128 bits ("auth", 32
           bytes), ESP in tunnel mode; "spi" values are not secret (they are on the wire).
wireguard: {"type": "wireguard", "port": p, "private": [b64, b64], "public": [b64, b64]}
           Curve25519 key pairs, made here in pure Python (RFC 7748, x25519 below): the host
           needs no wireguard-tools; "port" (each end's UDP listen port) and "public" are not
           secret.
Other tunnel types have no keys and no entry.
"""
from __future__ import annotations

import base64
import json
import secrets
from pathlib import Path

from .locks import write_atomic

FILE = "tunnel-keys.json"
WIREGUARD_PORT = 51820        # the first wireguard tunnel's port; the next ones count up
_P = 2**255 - 19


def x25519(scalar: bytes, u: bytes) -> bytes:
    """RFC 7748 section 5: the X25519 function (Montgomery ladder, constant in its steps)."""
    k = bytearray(scalar)
    k[0] &= 248
    k[31] &= 127
    k[31] |= 64
    n = int.from_bytes(k, "little")
    x1 = int.from_bytes(u, "little") & ((1 << 255) - 1)
    x2, z2, x3, z3, swap = 1, 0, x1, 1, 0
    for t in reversed(range(255)):
        bit = (n >> t) & 1
        swap ^= bit
        if swap:
            x2, x3, z2, z3 = x3, x2, z3, z2
        swap = bit
        a, b, c, d = x2 + z2, x2 - z2, x3 + z3, x3 - z3
        aa, bb, da, cb = a * a % _P, b * b % _P, d * a % _P, c * b % _P
        e = (aa - bb) % _P
        x3, z3 = (da + cb) ** 2 % _P, x1 * (da - cb) ** 2 % _P
        x2, z2 = aa * bb % _P, e * (aa + 121665 * e) % _P
    if swap:
        x2, z2 = x3, z3
    return (x2 * pow(z2, _P - 2, _P) % _P).to_bytes(32, "little")


def wireguard_keypair() -> tuple[str, str]:
    """(private, public), base64 as `wg genkey | wg pubkey` prints them."""
    private = bytearray(secrets.token_bytes(32))
    private[0] &= 248                       # clamped, as wg genkey does
    private[31] = (private[31] & 127) | 64
    public = x25519(bytes(private), (9).to_bytes(32, "little"))
    return base64.b64encode(bytes(private)).decode(), base64.b64encode(public).decode()


def _spi() -> int:
    return secrets.randbelow(2**32 - 0x1000) + 0x1000   # 1..255 are reserved (RFC 4303 2.1)


def new_secrets(tunnels) -> dict[str, dict]:
    made: dict[str, dict] = {}
    ipsec = wireguard = 0
    for t in tunnels:
        if t.type == "ipsec":
            ipsec += 1
            made[t.name] = {"type": "ipsec", "spi": [_spi(), _spi()], "if_id": ipsec,
                            "enc": [secrets.token_hex(16) for _ in range(2)],
                            "auth": [secrets.token_hex(32) for _ in range(2)]}
        elif t.type == "wireguard":
            pairs = [wireguard_keypair() for _ in range(2)]
            made[t.name] = {"type": "wireguard", "port": WIREGUARD_PORT + wireguard,
                            "private": [p for p, _ in pairs], "public": [q for _, q in pairs]}
            wireguard += 1
    return made


def tunnel_secrets(lab_dir: Path) -> dict[str, dict]:
    """The lab's tunnel keys (see the module docstring); {} when the lab has none."""
    try:
        return json.loads((Path(lab_dir) / FILE).read_text())
    except FileNotFoundError:
        return {}


def ensure_secrets(lab_dir: Path, tunnels) -> dict[str, dict]:
    """The lab's keys; made anew (all of them: ports and SPIs stay distinct) unless every
    keyed tunnel of the lab has its keys already."""
    kept = tunnel_secrets(lab_dir)
    wanted = {t.name: t.type for t in tunnels if t.type in ("ipsec", "wireguard")}
    if all(kept.get(name, {}).get("type") == kind for name, kind in wanted.items()):
        return kept
    made = new_secrets(tunnels)
    Path(lab_dir).mkdir(parents=True, exist_ok=True)
    write_atomic(Path(lab_dir) / FILE, json.dumps(made, indent=1) + "\n", mode=0o600)
    return made
