#!/usr/bin/python
# WANT_JSON
"""vnet_probe: run all of one guest's reachability probes in ONE light invocation.

Ansible runs this as a "WANT_JSON" module: no AnsiballZ, no module_utils import, so it costs a
single Python start on a slow (TCG) guest. The host-side probes import the same functions, so
guest and host speak one protocol.

Protocol: the prober connects over TCP, sends "VNET <nonce>\\n"; a vnet listener answers
"VNET <nonce> <its name> [<peer address>]\\n". A probe passes only when the nonce comes back
fresh from the listener it meant to reach, so a stale, spoofed or wrong-endpoint answer fails.

Each probe: {"id", "target", "port", "expect_name", "bind_mac" (optional: the NIC under test;
the socket is bound to it with SO_BINDTODEVICE, so no other NIC can carry the probe),
"banner" (optional: accept this banner prefix instead of a nonce, for e.g. SSH)}.

Options:
  module args {"probes": [...], "nic_macs": [...]} -> {"probes": {...}, "drivers": {...}}
"""
import errno
import json
import os
import secrets
import socket
import sys
import threading

SO_BINDTODEVICE = 25
SIOCGIFADDR = 0x8915
TIMEOUT = 3.0          # connect: negative cells end here, so keep it short
ANSWER_TIMEOUT = 10.0  # after connecting


def interface_of(mac):
    for name in os.listdir("/sys/class/net"):
        try:
            with open(f"/sys/class/net/{name}/address") as f:
                if f.read().strip().lower() == mac.lower():
                    return name
        except OSError:
            pass
    return None


def driver_of(mac):
    name = interface_of(mac)
    if name is None:
        return None
    try:
        return os.path.basename(os.readlink(f"/sys/class/net/{name}/device/driver"))
    except OSError:
        return "none"


def address_of(ifname):
    """The NIC's IPv4 address (SIOCGIFADDR), or None when it has none."""
    import fcntl
    import struct

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            raw = fcntl.ioctl(s.fileno(), SIOCGIFADDR, struct.pack("256s", ifname.encode()[:15]))
        except OSError:
            return None
    return socket.inet_ntoa(raw[20:24])


def bind_to_nic(sock, mac):
    """Bind a socket to the NIC with this MAC: its device (SO_BINDTODEVICE) and its own address,
    so the guest's policy routing (one table per NIC, rule "from <address>") sends the probe out
    of this NIC by this network's gateway, whatever the default route. Returns None, or why the
    probe cannot run (an "error": the NIC is missing or has no address)."""
    ifname = interface_of(mac)
    if ifname is None:
        return f"no NIC with MAC {mac}"
    address = address_of(ifname)
    if address is None:
        return f"NIC {ifname} ({mac}) has no IPv4 address"
    sock.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, ifname.encode())
    sock.bind((address, 0))
    return None


def _reason(exc):
    code = getattr(exc, "errno", None)
    if isinstance(exc, socket.timeout) or code == errno.ETIMEDOUT:
        return "timed out"
    if code == errno.ECONNREFUSED:
        return "refused"
    if code in (errno.EHOSTUNREACH, errno.ENETUNREACH):
        return "no route"
    return str(exc) or exc.__class__.__name__


def probe(spec):
    """One TCP probe -> {"observed": "pass"|"fail"|"error", "detail": str}."""
    nonce = spec.get("nonce") or secrets.token_hex(8)    # preset: a forward's origin-tagged nonce
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(spec.get("timeout", TIMEOUT))
    try:
        if spec.get("bind_mac"):
            unusable = bind_to_nic(sock, spec["bind_mac"])
            if unusable:
                return {"observed": "error", "detail": unusable}
        sock.connect((spec["target"], int(spec["port"])))
        # Connected: the far end exists. A busy TCG guest may take a while to answer (its
        # listener forks a shell per connection), so the answer gets longer than the connect.
        sock.settimeout(spec.get("answer_timeout", ANSWER_TIMEOUT))
        if spec.get("banner"):
            answer = sock.recv(256).decode(errors="replace").strip()
            if answer.startswith(spec["banner"]):
                return {"observed": "pass", "detail": f"banner {answer[:40]!r}"}
            return {"observed": "fail", "detail": f"unexpected banner {answer[:40]!r}"}
        sock.sendall(f"VNET {nonce}\n".encode())
        answer = b""
        while not answer.endswith(b"\n") and len(answer) < 512:
            chunk = sock.recv(512)
            if not chunk:
                break
            answer += chunk
        words = answer.decode(errors="replace").split()
        if len(words) < 3 or words[0] != "VNET" or words[1] != nonce:
            return {"observed": "fail", "detail": f"connected, but no fresh nonce came back "
                                                  f"({answer[:60]!r})"}
        if spec.get("expect_name") and words[2] != spec["expect_name"]:
            return {"observed": "fail", "detail": f"wrong endpoint: answered by {words[2]}, "
                                                  f"not {spec['expect_name']}"}
        peer = f" (seen from {words[3]})" if len(words) > 3 else ""
        return {"observed": "pass", "detail": f"nonce echoed by {words[2]}{peer}"}
    except OSError as exc:
        return {"observed": "fail", "detail": _reason(exc)}
    except Exception as exc:  # a probe must report, never crash the others
        return {"observed": "error", "detail": repr(exc)}
    finally:
        sock.close()


def run_all(specs):
    """All probes at once: negative cells wait for timeouts, so they must overlap."""
    results = {}

    def one(spec):
        results[spec["id"]] = probe(spec)

    threads = [threading.Thread(target=one, args=(s,)) for s in specs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def serve(port, name, host="0.0.0.0"):
    """The vnet listener: answer each "VNET <nonce>" with the nonce, our name and the peer."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((host, port))
    server.listen(64)
    print(f"vnet-listener {name} ready on {host}:{port}", flush=True)

    def answer(conn, peer):
        with conn:
            conn.settimeout(TIMEOUT)
            try:
                line = conn.recv(256).decode(errors="replace").split()
                if len(line) == 2 and line[0] == "VNET":
                    conn.sendall(f"VNET {line[1]} {name} {peer[0]}\n".encode())
            except OSError:
                pass

    while True:
        conn, peer = server.accept()
        threading.Thread(target=answer, args=(conn, peer), daemon=True).start()


# --- the guest side of port forwards --------------------------------------------------------
# A forward is proven with or without a service on its guest port. For the duration of this
# module run the guest holds each forward aimed at it: a free port gets a temporary nonce
# listener (TCP or UDP, bound to the forward's NIC); a port a service already holds is watched
# by a raw socket on that NIC, which records the nonces vnet's host-side probes send (so the
# service need not speak vnet's protocol). Host-side nonces start with their origin ("host-",
# "internet-"); a forward is done when every origin's nonce arrived, or at FORWARD_LIFETIME.

FORWARD_LIFETIME = 25.0
NONCE_RE = None   # compiled on first use: re is not imported unless forwards are held


class ForwardHold:
    def __init__(self, spec, name):
        self.spec, self.name = spec, name
        self.seen, self.mode, self.detail = [], "none", ""
        self.sock = None
        self.done = threading.Event()

    def start(self):
        import re

        global NONCE_RE
        NONCE_RE = re.compile(rb"VNET ([0-9A-Za-z.-]{8,64})")
        ifname = interface_of(self.spec["mac"])
        address = address_of(ifname) if ifname else None
        if address is None:
            self.mode, self.detail = "error", f"no NIC with an address for MAC {self.spec['mac']}"
            self.done.set()
            return
        udp = self.spec.get("proto") == "udp"
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM if udp else socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, ifname.encode())
        try:
            sock.bind((address, int(self.spec["port"])))
            if not udp:
                sock.listen(16)
            self.mode = "listener"
            self.detail = f"vnet's temporary listener on {ifname} {address}:{self.spec['port']}"
        except OSError:          # taken: a service listens there; watch it instead
            sock.close()
            sock = socket.socket(socket.AF_INET, socket.SOCK_RAW,
                                 socket.IPPROTO_UDP if udp else socket.IPPROTO_TCP)
            sock.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, ifname.encode())
            self.mode = "service"
            self.detail = f"service present on {ifname} {address}:{self.spec['port']}"
        sock.settimeout(0.2)
        self.sock, self.address = sock, address
        self.thread = threading.Thread(target=self._loop, args=(udp,), daemon=True)
        self.thread.start()

    def _note(self, nonce):
        if nonce not in self.seen:
            self.seen.append(nonce)
        origins = self.spec.get("origins") or []
        if all(any(n.startswith(o + "-") for n in self.seen) for o in origins):
            self.done.set()

    def _loop(self, udp):
        while not self.done.is_set():
            try:
                if self.mode == "service":
                    self._sniff(self.sock.recv(65535), udp)
                elif udp:
                    data, peer = self.sock.recvfrom(512)
                    self._answer(data, lambda b: self.sock.sendto(b, peer), peer)
                else:
                    conn, peer = self.sock.accept()
                    threading.Thread(target=self._tcp, args=(conn, peer), daemon=True).start()
            except (socket.timeout, BlockingIOError):
                continue
            except OSError:
                return

    def _tcp(self, conn, peer):
        with conn:
            conn.settimeout(TIMEOUT)
            try:
                self._answer(conn.recv(256), conn.sendall, peer)
            except OSError:
                pass

    def _answer(self, data, send, peer):
        words = data.decode(errors="replace").split()
        if len(words) == 2 and words[0] == "VNET":
            send(f"VNET {words[1]} {self.name} {peer[0]}\n".encode())
            self._note(words[1])

    def _sniff(self, packet, udp):
        """An IPv4 packet to our address and port: note the nonces in its payload."""
        ihl = (packet[0] & 15) * 4
        if socket.inet_ntoa(packet[16:20]) != self.address or \
                int.from_bytes(packet[ihl + 2:ihl + 4], "big") != int(self.spec["port"]):
            return
        payload = packet[ihl + 8:] if udp else packet[ihl + (packet[ihl + 12] >> 4) * 4:]
        for nonce in NONCE_RE.findall(payload):
            self._note(nonce.decode())

    def report(self):
        self.done.set()
        if self.sock is not None:
            self.thread.join()        # a blocked accept() keeps the socket open until it returns
            self.sock.close()
        return {"mode": self.mode, "detail": self.detail, "nonces": self.seen}


def hold_forwards(specs):
    """Start holding every forward aimed at this guest (see above); returns the holds."""
    with open("/proc/sys/kernel/hostname") as f:
        name = f.read().strip()
    holds = [ForwardHold(spec, name) for spec in specs]
    for hold in holds:
        hold.start()
    return holds


def release_forwards(holds, started, lifetime=FORWARD_LIFETIME):
    """Wait until every forward saw all its origins (or the lifetime ends), then close them:
    nothing vnet started outlives this module run. -> {forward id: report}"""
    import time

    for hold in holds:
        hold.done.wait(max(0.0, started + lifetime - time.monotonic()))
    return {hold.spec["id"]: hold.report() for hold in holds}


def main():
    if sys.argv[1:2] == ["--serve"]:          # vnet's host-side listeners
        serve(int(sys.argv[2]), sys.argv[3])
        return
    import time

    started = time.monotonic()
    with open(sys.argv[1]) as f:
        args = json.load(f)
    holds = hold_forwards(args.get("forwards") or [])      # up before the host probes them
    results = run_all(args.get("probes", []))
    drivers = {mac: driver_of(mac) for mac in args.get("nic_macs", [])}
    forwards = release_forwards(holds, started)
    print(json.dumps({"changed": False, "probes": results, "drivers": drivers,
                      "forwards": forwards}))


if __name__ == "__main__":
    main()
