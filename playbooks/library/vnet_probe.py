#!/usr/bin/python
# WANT_JSON
"""vnet_probe: run all of one guest's reachability probes in ONE light invocation.

Ansible runs this as a "WANT_JSON" module: no AnsiballZ, no module_utils import, so it costs a
single Python start on a slow (TCG) guest. The host-side probes and vnet's host-side listeners
(`--serve`, on the host and in the sandbox's Internet) import or run this same file, so guest
and host speak one protocol.

Protocol, TCP and UDP alike: the prober sends "VNET <nonce>\\n" (a fresh nonce per probe); a
vnet listener answers "VNET <nonce> <its name> [<peer address>]\\n".

Three outcomes per probe (the verification principles: a negative cell is confirmed only by
"fail", never by a connection that went to the wrong place):
  pass   the expected endpoint echoed this probe's fresh nonce;
  fail   no connection could be established: refused, no route (host or network unreachable)
         or the connect timed out; for UDP, an ICMP port or host unreachable. A refusal is
         marked "refused": the target's own stack refuses a port nothing listens on, so vnet
         counts it only where the target listened all along (provisioner/verify/refusals.py);
  error  anything else: connected but the listener stayed silent or closed without answering,
         a garbled answer, a stale or replayed nonce, an answer from another endpoint (a leak).
A peer whose address is the prober's own (every VM of a nat lab is 10.0.2.15 on its own
private NAT) cannot be reached by any IP probe, which would never leave the prober: its cell
asks the NIC's layer-2 segment who holds the address instead ("arp_claim", probe_arp_claim).

UDP silence is ambiguous (a dropped datagram, or no listener at all). A UDP probe that gets no
answer is "error" with "silent": true, unless the verifier knows the listener is up: a probe
may name positive controls of the same listener ("confirmed_by": probe ids); when one of them
passed, the silence is "fail" (the listener is there, so the path dropped the datagram).
`settle_silence` applies that rule; run_all applies it within one batch, provisioner/verify/run.py
across the guests, the host and the Internet.

Each probe: {"id", "target", "port", "proto" ("tcp", default, or "udp"), "expect_name",
"arp_claim" (instead of target and port: {"address", "peer", "peer_mac", "control" (the
gateway, which must answer), "note"}; see probe_arp_claim),
"bind_dev" and "bind_ip" (optional: a tunnel's device and this end's overlay address, bound
the same way), "bind_mac" (optional: the NIC under test; the socket is bound to its device with
SO_BINDTODEVICE and to its own address, so no other NIC can carry the probe and the guest's
per-NIC routing table sends it by that network's gateway), "nonce" (optional: preset, e.g. a
forward's origin-tagged nonce), "banner" (optional, TCP: accept this banner prefix instead of a
nonce, for e.g. SSH), "timeout" (connect, or the UDP wait), "answer_timeout" (TCP, after
connecting), "confirmed_by" (optional, UDP), "rtt_timeout" (optional: derive the connect
timeout, or the UDP wait, from this batch's measured round trips; see RoundTrips)}.

Options:
  ARGS_FILE           Ansible's WANT_JSON file of module args
  - [PORT]            the image's precompiled copy (provisioner/guest/bakedprobe.py): module
                      args on stdin; with PORT it stays warm after: see stay_warm()
  module args {"probes": [...], "nic_macs": [...], "forwards": [...], "listening": {...}}
      -> {"probes": {...}, "drivers": {...}, "forwards": {...}} (forwards: see ForwardHold;
      "listening": {"ports": ["tcp/7", ...], "clock": ...} adds {"listening": {"first",
      "last", "v6only"}}, see listening(), and measures the clock at "clock")
  --serve PORT NAME   vnet's listener: answers on TCP and UDP PORT as NAME
"""
import _json
import _socket as socket    # the C modules: `socket`, `json` and `threading` import enum,
import _thread              # functools and re, 0.27 s of a cold TCG guest's 0.65 s start
import errno
import os
import select
import sys
import time

SO_BINDTODEVICE = 25
SIOCGIFADDR = 0x8915
TIMEOUT = 3.0          # connect (and UDP wait): negative cells end here, so keep it short
ANSWER_TIMEOUT = 10.0  # after connecting
UDP_RESEND = 1.0       # a datagram may be lost: send again this often while waiting
# A derived connect timeout (RoundTrips): RTT_MULTIPLIER x the slowest round trip a passing
# probe of the same batch measured, never under RTT_FLOOR nor over RTT_CEILING. The floor is
# the fixed TIMEOUT it replaces: a working path whose first SYNs are lost (resent after 1 s,
# then 2 s more: RFC 6298 section 5.5) while a bond fails over or a bridge relearns a MAC
# still connects within it; a 1.5 s floor turned such a green host->VM cell red (a bond
# failover beside the probe, tests/integration/test_links.py). So the derived timeout only
# ever waits longer than the fixed one, on a slow path.
RTT_FLOOR = TIMEOUT
RTT_MULTIPLIER = 10
RTT_CEILING = 10.0
# The connect errors that mean "no connection could be established". Any other error (e.g. a
# local EPERM from a firewall on the prober, or a bad bind) is not evidence about the network.
NOT_CONNECTED = {errno.ECONNREFUSED: "refused", errno.ETIMEDOUT: "timed out",
                 errno.EHOSTUNREACH: "no route (host unreachable)",
                 errno.ENETUNREACH: "no route (network unreachable)",
                 errno.ENETDOWN: "no route (network down)",
                 errno.EHOSTDOWN: "no route (host down)"}
PARENT_CHECK_SECONDS = 1.0   # how soon a listener notices that its vnet is gone
REQUEST_AGAIN = 5.0          # a bond failover repeats its console request this often
MAIN_AT = 0.0                # when main() started (monotonic): the verify breakdown
# The warm copy's first line: it took the run, or it is another bytecode's (_warm_child);
# provisioner/guest/bakedprobe.py runs afresh on anything but WARM_ACCEPTED
WARM_ACCEPTED, WARM_OTHER = b"VNET-WARM-ACCEPTED", b"VNET-WARM-OTHER"


# --- the few pieces of socket, threading and json this module uses, on their C halves -------

class Sock(socket.socket):
    """socket.socket's context manager and accept() on the C socket type."""
    __slots__ = ()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def accept(self):
        fd, peer = self._accept()
        conn = Sock(self.family, self.type, self.proto, fileno=fd)
        if self.gettimeout():       # as socket.socket.accept: the new socket blocks
            conn.setblocking(True)
        return conn, peer


class Thread:
    """threading.Thread's start and join (every thread here may die with the process)."""
    live, counting = 0, _thread.allocate_lock()      # started and not yet ended (all of them)

    def __init__(self, target, args=(), daemon=True):
        self.target, self.args = target, args
        self.running = _thread.allocate_lock()

    def start(self):
        self.running.acquire()
        self._count(1)              # now, not when it first runs: threads_alive() sees it at once
        try:
            _thread.start_new_thread(self._run, ())
        except BaseException:
            self._count(-1)
            self.running.release()
            raise

    def _count(self, step):
        with Thread.counting:
            Thread.live += step

    def _run(self):
        try:
            self.target(*self.args)
        finally:
            self._count(-1)
            self.running.release()

    def join(self, timeout=None):
        if self.running.acquire(True, -1 if timeout is None else max(0.0, timeout)):
            self.running.release()


class Event:
    """threading.Event's set, is_set and wait."""

    def __init__(self):
        self.flag = False
        self.gate, self.mutex = _thread.allocate_lock(), _thread.allocate_lock()
        self.gate.acquire()          # released once, by set(); each waiter passes it on

    def is_set(self):
        return self.flag

    def set(self):
        with self.mutex:
            if not self.flag:
                self.flag = True
                self.gate.release()

    def wait(self, timeout=None):
        if not self.flag and self.gate.acquire(True, -1 if timeout is None
                                               else max(0.0, timeout)):
            self.gate.release()
        return self.flag


def threads_alive():
    """How many threads besides the main one still run (threading.active_count() - 1)."""
    return Thread.live


class _JsonContext:                   # what json's C scanner reads from a JSONDecoder
    strict = True
    object_hook = object_pairs_hook = None
    parse_float, parse_int = float, int
    parse_constant = {"-Infinity": float("-inf"), "Infinity": float("inf"),
                      "NaN": float("nan")}.__getitem__


_scan_json = _json.make_scanner(_JsonContext())
JSON_SPACE = " \t\n\r"


def from_json(text):
    """json.loads (str or UTF-8 bytes), by json's own C scanner."""
    if isinstance(text, (bytes, bytearray)):
        text = text.decode("utf-8")
    start = len(text) - len(text.lstrip(JSON_SPACE))
    try:
        value, end = _scan_json(text, start)
    except StopIteration as exc:
        raise ValueError(f"not JSON: expecting a value at {exc.value}") from None
    except (SystemError, ValueError):
        # Python 3.11's scanner says what is wrong only once json.decoder is loaded (else a
        # SystemError): rare and never on the fast path, so load it now and let it say
        import json
        return json.loads(text)
    if text[end:].strip(JSON_SPACE):
        raise ValueError(f"not JSON: extra data at {end}")
    return value


def _unserializable(obj):
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def to_json(value):
    """json.dumps with its defaults, by json's own C encoder (its circular-reference marks are
    this call's own)."""
    encode = _json.make_encoder({}, _unserializable, _json.encode_basestring_ascii, None,
                                ": ", ", ", False, False, True)
    return "".join(encode(value, 0))


def interface_of(mac):
    for name in os.listdir("/sys/class/net"):
        if os.path.exists(f"/sys/class/net/{name}/master"):
            continue     # a bond's member: the bond (same MAC) is the NIC under test
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

    with Sock(socket.AF_INET, socket.SOCK_DGRAM) as s:
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


def token_hex(nbytes):
    """A fresh random nonce, as secrets.token_hex makes it (os.urandom): importing secrets
    pulls in hashlib, hmac and random, a sixth of a second per Python start on a TCG guest."""
    return os.urandom(nbytes).hex()


def _result(observed, detail, **extra):
    return dict(extra, observed=observed, detail=detail)


def _reason(exc):
    code = getattr(exc, "errno", None)
    if isinstance(exc, socket.timeout) or code == errno.ETIMEDOUT:
        said = str(exc)
        return said if said.startswith("timed out after") else "timed out"
    if code in NOT_CONNECTED:
        return NOT_CONNECTED[code]
    return str(exc) or exc.__class__.__name__


def _not_connected(exc, spec=None):
    """A connect (or UDP send/receive) error: "fail" only for the errors that mean no
    connection could be established. Across an impaired NIC whose loss can take all three
    ARP solicitations (provisioner/verify/impairment.py: "arp_unproven"), "host unreachable"
    is no such proof: the neighbour may simply not have heard."""
    code = getattr(exc, "errno", None)
    if code in (errno.EHOSTUNREACH, errno.EHOSTDOWN) and (spec or {}).get("arp_unproven"):
        return _result("error", f"{_reason(exc)}, which the declared loss on this path can "
                                "explain (every ARP request or answer lost)")
    if isinstance(exc, socket.timeout) or code in NOT_CONNECTED:
        # "refused": proof of a closed path only if the target's port listened all along
        # (provisioner/verify/refusals.py); the target's own stack refuses an idle port too
        return _result("fail", _reason(exc), **({"refused": True}
                                                 if code == errno.ECONNREFUSED else {}))
    return _result("error", f"could not probe: {_reason(exc)}")


class RoundTrips:
    """The round trips that this batch's passing probes measured (TCP: connect to established;
    UDP: request to answer), and the connect timeout derived from them for the probes that ask
    for it ("rtt_timeout"): a negative cell ends as soon as a path that works here would surely
    have answered, instead of at a fixed time. Until a round trip is measured, the probe's own
    fixed "timeout" holds, so a batch with no passing probe waits exactly as long as before."""

    def __init__(self):
        self.lock = _thread.allocate_lock()
        self.slowest = None          # (seconds, "target:port") of the slowest passing probe

    def add(self, seconds, spec):
        with self.lock:
            if self.slowest is None or seconds > self.slowest[0]:
                self.slowest = (seconds, f"{spec['target']}:{spec['port']}")

    def timeout(self, spec):
        """-> (seconds, why): the connect timeout for this probe now."""
        fixed = float(spec.get("timeout", TIMEOUT))
        if not spec.get("rtt_timeout"):
            return fixed, {"seconds": fixed, "basis": "fixed"}
        with self.lock:
            slowest = self.slowest
        if slowest is None:
            return fixed, {"seconds": fixed, "basis": "fixed: no passing probe had measured "
                                                      "a round trip yet"}
        seconds = min(RTT_CEILING, max(RTT_FLOOR, RTT_MULTIPLIER * slowest[0]))
        return seconds, {"seconds": round(seconds, 3), "rtt_ms": round(slowest[0] * 1000, 2),
                         "rtt_of": slowest[1], "multiplier": RTT_MULTIPLIER,
                         "floor_s": RTT_FLOOR, "ceiling_s": RTT_CEILING,
                         "basis": f"{RTT_MULTIPLIER} x the {slowest[0] * 1000:.1f} ms round trip "
                                  f"of a passing probe to {slowest[1]}, at least {RTT_FLOOR:g} s"}


FIXED = RoundTrips()     # probes outside a batch: nothing measured, so their fixed timeout


def _connect(sock, spec, trips):
    """Connect within the timeout trips gives (re-read while waiting: a round trip measured
    meanwhile shortens it). -> (seconds to connect, the timeout's why); raises the connect
    error, or socket.timeout."""
    began = time.monotonic()
    if not spec.get("rtt_timeout"):          # a fixed timeout: the plain blocking connect
        sock.settimeout(spec.get("timeout", TIMEOUT))
        sock.connect((spec["target"], int(spec["port"])))
        return time.monotonic() - began, None
    sock.setblocking(False)
    code = sock.connect_ex((spec["target"], int(spec["port"])))
    while code == errno.EINPROGRESS:
        limit, why = trips.timeout(spec)
        left = began + limit - time.monotonic()
        # past the deadline, one last look without waiting: a thread that got no CPU for a
        # while (a slow TCG guest) must not call a connection the kernel made a timeout
        if select.select([], [sock], [], max(0.0, min(left, 0.1)))[1]:
            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        elif left <= 0:
            raise socket.timeout(f"timed out after {why['seconds']:g} s ({why['basis']})")
    if code:
        raise OSError(code, os.strerror(code))
    return time.monotonic() - began, trips.timeout(spec)[1]


TCP_INFO = 11     # linux/tcp.h; struct tcp_info: tcpi_rtt (us) at byte 68, tcpi_total_retrans 100


def round_trip(sock, took):
    """The path's round trip, from a connect that took `took` s: where the connect resent its
    SYN (the first resend comes 1 s later, RFC 6298), the kernel's own measure, since that
    second is a lost packet, not the path (10 x it made every negative cell of the batch wait
    the 10 s ceiling); else `took`."""
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, TCP_INFO, 104)
    except OSError:
        return took
    if len(info) < 104:
        return took
    rtt_us = int.from_bytes(info[68:72], sys.byteorder)
    resent = int.from_bytes(info[100:104], sys.byteorder)
    return rtt_us / 1e6 if resent and rtt_us else took


def _open(spec, kind):
    """A socket, bound to the NIC under test when the probe names one; (sock, None) or
    (None, error result)."""
    sock = Sock(socket.AF_INET, kind)
    if spec.get("bind_dev"):      # a tunnel cell: its device and this end's overlay address
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, spec["bind_dev"].encode())
            sock.bind((spec["bind_ip"], 0))
        except OSError as exc:
            sock.close()
            return None, _result("error", f"cannot bind to {spec['bind_dev']} "
                                          f"({spec['bind_ip']}): {_reason(exc)}")
    if spec.get("bind_mac"):
        unusable = bind_to_nic(sock, spec["bind_mac"])      # device and the NIC's address
        if unusable:
            sock.close()
            return None, _result("error", unusable)
    return sock, None


def _reached(detail):
    """An error after the probe reached something (a connection, an answer): what a path that
    should be closed must never show, so a repeated probe keeps it (telling)."""
    return _result("error", detail, reached=True)


def judge(answer, nonce, spec, how="connected"):
    """What an answer proves: pass only for this probe's fresh nonce from the expected name."""
    text = answer.decode(errors="replace")
    words = text.split()
    if not words:
        return _reached("connected, but the far end closed without answering"
                        if how == "connected" else f"{how}, but with an empty answer")
    if len(words) < 3 or words[0] != "VNET":
        return _reached(f"{how}, but the answer is garbled: {text[:60]!r}")
    if words[1] != nonce:
        return _reached(f"{how}, but the nonce is stale or replayed "
                        f"({words[1][:20]!r} is not this probe's): answered by {words[2]}")
    name = words[2]
    peer = f" (seen from {words[3]})" if len(words) > 3 else ""
    if spec.get("expect_name") and name != spec["expect_name"]:
        return _reached(f"leak: answered by {name} instead of {spec['expect_name']}")
    return _result("pass", f"nonce echoed by {name}{peer}")


def _read_line(sock):
    answer = b""
    while not answer.endswith(b"\n") and len(answer) < 512:
        chunk = sock.recv(512)
        if not chunk:
            break
        answer += chunk
    return answer


def probe(spec, trips=FIXED):
    """One probe -> {"observed": "pass"|"fail"|"error", "detail": str}; UDP when the spec
    says "proto": "udp", TCP otherwise. trips: the batch's RoundTrips (run_all); a probe that
    asks for "rtt_timeout" reports the timeout it was given as "connect_timeout"."""
    if spec.get("arp_claim"):
        return probe_arp_claim(spec)
    began = time.time()
    result = _probe_udp(spec, trips) if spec.get("proto", "tcp") == "udp" \
        else _probe_tcp(spec, trips)
    if spec.get("rtt_timeout") and "connect_timeout" not in result:
        result["connect_timeout"] = trips.timeout(spec)[1]
    if result.get("refused") and spec.get("listens"):
        # wall times: vnet checks the target's port listened from before to after this
        result["at"] = [began, time.time()]
    return result


ETH_P_ARP = 0x0806
PACKET_OUTGOING = 4        # sll_pkttype of a frame this host sent (linux/if_packet.h)
ARP_WAIT = 1.0             # how long an address claim is listened for (a kernel answers ARP in
#                            microseconds, even in a TCG guest; four requests go out meanwhile)
ARP_RESEND = 0.25


def arp_request(mine, sender_ip, target_ip):
    """A broadcast ARP request (RFC 826), padded to the 60-byte Ethernet minimum."""
    frame = b"\xff" * 6 + mine + ETH_P_ARP.to_bytes(2, "big") + \
        b"\x00\x01\x08\x00\x06\x04\x00\x01" + mine + socket.inet_aton(sender_ip) + \
        b"\x00" * 6 + socket.inet_aton(target_ip)
    return frame.ljust(60, b"\x00")


def arp_replies(sock, deadline, resend):
    """(sender MAC, sender IP) of each ARP reply on the socket until the deadline; resend()
    every ARP_RESEND seconds meanwhile."""
    found, next_send = [], 0.0
    while (now := time.monotonic()) < deadline:
        if now >= next_send:
            resend()
            next_send = now + ARP_RESEND
        if not select.select([sock], [], [], max(0.0, min(deadline, next_send) - now))[0]:
            continue
        frame, where = sock.recvfrom(2048)
        if where[2] == PACKET_OUTGOING or len(frame) < 42 or frame[20:22] != b"\x00\x02":
            continue
        found.append((frame[22:28].hex(":"), socket.inet_ntoa(frame[28:32])))
    return found


def probe_arp_claim(spec):
    """Is the peer on this NIC's layer-2 segment? For a peer whose address is the prober's own
    (nat: every VM is 10.0.2.15 on its own private NAT), no IP probe can leave the prober, so
    the segment is asked who else holds the address: an ARP probe (RFC 5227: sender address
    0.0.0.0, so no one's cache learns from it). A reply from the peer's MAC: the peer shares the
    segment ("pass"); from another MAC: a leak ("error"); none, while the network's gateway
    answers its own ARP request on the same NIC: no one else holds the address ("fail").
    Without the gateway's answer the silence proves nothing ("error")."""
    claim = spec["arp_claim"]
    ifname = interface_of(spec["bind_mac"])
    if ifname is None:
        return _result("error", f"no NIC with MAC {spec['bind_mac']}")
    own = address_of(ifname)
    mine = bytes.fromhex(spec["bind_mac"].replace(":", ""))
    try:
        sock = Sock(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
    except OSError as exc:
        return _result("error", f"cannot open a packet socket: {_reason(exc)}")
    with sock:
        def send():
            sock.send(arp_request(mine, "0.0.0.0", claim["address"]))
            sock.send(arp_request(mine, own or "0.0.0.0", claim["control"]))
        try:
            sock.bind((ifname, ETH_P_ARP))
            replies = arp_replies(sock, time.monotonic() + spec.get("arp_wait", ARP_WAIT), send)
        except OSError as exc:       # a probe reports, never takes its batch down
            return _result("error", f"ARP on {ifname}: {_reason(exc)}")
    me = spec["bind_mac"].lower()
    holders = sorted({mac for mac, ip in replies if ip == claim["address"] and mac != me})
    gateway = sorted({mac for mac, ip in replies if ip == claim["control"]})
    peer, peer_mac = claim["peer"], claim["peer_mac"].lower()
    if peer_mac in holders:
        return _result("pass", f"connected at layer 2: {peer} ({peer_mac}) answers ARP for "
                               f"{claim['address']} on {ifname}'s segment")
    if holders:
        return _result("error", f"leak: {claim['address']} is held by {', '.join(holders)} on "
                                f"{ifname}'s segment, not by {peer}")
    if not gateway:
        return _result("error", f"no ARP answer from the gateway {claim['control']} either: "
                                f"{ifname}'s segment is not proven to carry ARP")
    return _result("fail", f"isolated: no station on {ifname}'s segment holds "
                           f"{claim['address']} besides this VM (ARP probes), while the gateway "
                           f"{claim['control']} answered ({gateway[0]}); {claim.get('note', '')}"
                   .rstrip("; "))


def _probe_tcp(spec, trips):
    nonce = spec.get("nonce") or token_hex(8)   # preset: a forward's origin-tagged one
    sock = None
    try:
        sock, failed = _open(spec, socket.SOCK_STREAM)
        if failed:
            return failed
        try:
            took, why = _connect(sock, spec, trips)
        except OSError as exc:
            return _not_connected(exc, spec)
        # Connected: from here on, nothing is a "fail". A busy TCG guest may take a while to
        # answer (its listener forks a shell per connection), so the answer gets longer.
        sock.settimeout(spec.get("answer_timeout", ANSWER_TIMEOUT))
        try:
            if spec.get("banner"):
                # the first line only: an SSH server sends its binary KEXINIT right after
                answer = (sock.recv(256).decode(errors="replace").splitlines() or [""])[0]
                if answer.startswith(spec["banner"]):
                    return _result("pass", f"banner {answer[:40]!r}")
                return _reached(f"connected, but the banner is {answer[:40]!r}, not "
                                f"{spec['banner']!r}...")
            sock.sendall(f"VNET {nonce}\n".encode())
            answer = _read_line(sock)
        except socket.timeout:
            return _reached("connected, but the listener stayed silent")
        except OSError as exc:
            return _reached(f"connected, but then: {_reason(exc)}")
        result = judge(answer, nonce, spec)
        if result["observed"] == "pass":   # a round trip of a path proven to be the right one
            trips.add(round_trip(sock, took), spec)
        return dict(result, connect_ms=round(took * 1000, 2), connect_timeout=why) \
            if spec.get("rtt_timeout") else result
    except Exception as exc:  # a probe must report, never crash the others
        return _result("error", repr(exc))
    finally:
        if sock is not None:
            sock.close()


def probe_udp(spec, trips=FIXED):
    return probe(dict(spec, proto="udp"), trips)


def _probe_udp(spec, trips):
    """One UDP nonce exchange. "fail" only on an ICMP port or host unreachable (ECONNREFUSED,
    EHOSTUNREACH on the connected socket); silence is "error" with "silent": true (see the
    module docstring: settle_silence turns it into "fail" when the listener is known up)."""
    nonce = spec.get("nonce") or token_hex(8)
    sock = None
    try:
        sock, failed = _open(spec, socket.SOCK_DGRAM)
        if failed:
            return failed
        began = time.monotonic()
        try:
            sock.connect((spec["target"], int(spec["port"])))   # no packet: fixes the peer
            while True:
                wait, why = trips.timeout(spec)     # re-read: a round trip may come meanwhile
                left = began + wait - time.monotonic()
                if left <= 0:    # one last look without waiting (a starved thread, as in TCP)
                    sock.setblocking(False)
                    try:
                        answer = sock.recv(512)
                    except BlockingIOError:
                        said = f"{wait:g}s" if why["basis"] == "fixed" else \
                            f"{wait:g} s ({why['basis']})"
                        return _result("error", f"no UDP answer in {said}: silence is "
                                                "ambiguous (dropped, or no listener)", silent=True)
                else:
                    sock.send(f"VNET {nonce}\n".encode())
                    sock.settimeout(min(UDP_RESEND, left))
                    try:
                        answer = sock.recv(512)
                    except socket.timeout:
                        continue
                result = judge(answer, nonce, spec, how="answered")
                if result["observed"] == "pass":
                    trips.add(time.monotonic() - began, spec)
                return result
        except OSError as exc:
            if getattr(exc, "errno", None) == errno.ECONNREFUSED:
                return _result("fail", "refused (ICMP port unreachable)", refused=True)
            return _not_connected(exc, spec)
    except Exception as exc:  # a probe must report, never crash the others
        return _result("error", repr(exc))
    finally:
        if sock is not None:
            sock.close()


def settle_silence(result, controls):
    """UDP silence is "fail" only when a positive control of the same listener passed (the
    listener is up, so the path dropped the datagram); otherwise it stays "error"."""
    if not result.get("silent"):
        return result
    passed = [c for c in controls if c and c.get("observed") == "pass"]
    if not passed:
        return dict(result, detail=result["detail"] + "; no positive control confirmed "
                                                      "the listener")
    return dict({k: v for k, v in result.items() if k != "silent"}, observed="fail",
                detail="no UDP answer, and the listener is up (its positive control passed): "
                       "the datagram was dropped")   # the rest (nonces, attempts) stays


def _sys(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return ""


def failover(spec, console="/dev/console"):
    """A bond_failover cell (provisioner/verify/linkcells.py): probe over the bond, ask vnet on
    the console to cut the active member's link ("VNET-CUT <bond> <member's MAC> <token>"),
    wait for that member's carrier to drop, probe until one passes again. ok ("pass") when the
    probes before and after pass and the active member changed; the outage is measured from
    the carrier drop to the first passing probe."""
    opts = spec["failover"]
    base = {k: v for k, v in spec.items() if k != "failover"}
    bond = opts["bond"]
    active = lambda: _sys(f"/sys/class/net/{bond}/bonding/active_slave")  # noqa: E731
    before = active()
    if not before:
        return _result("error", f"{bond} has no active member before the cut")
    first = probe(base)
    if first["observed"] != "pass":
        return dict(first, detail=f"before the cut: {first['detail']}")
    mac = _sys(f"/sys/class/net/{before}/bonding_slave/perm_hwaddr")
    request = f"\nVNET-CUT {bond} {mac} {token_hex(4)}\n"
    deadline = time.monotonic() + opts.get("wait", 30.0)
    asked = 0.0
    while _sys(f"/sys/class/net/{before}/carrier") == "1":
        if time.monotonic() > deadline:
            return _result("error", f"vnet did not cut {before} ({mac}) within "
                                    f"{opts.get('wait', 30.0):g}s")
        if time.monotonic() - asked > REQUEST_AGAIN:   # a console line may be lost
            with open(console, "w") as con:
                con.write(request)
            asked = time.monotonic()
        time.sleep(0.02)
    dropped = time.monotonic()
    tries, last = 0, None
    while time.monotonic() < dropped + opts.get("outage_max", 10.0):
        tries += 1
        last = probe(dict(base, timeout=0.5))
        if last["observed"] == "pass":
            break
        time.sleep(0.05)
    outage = round((time.monotonic() - dropped) * 1000)
    after = active()
    if last is None or last["observed"] != "pass":
        return dict(last or _result("fail", "no probe ran"),
                    detail=f"cut {before} ({mac}): no probe passed within "
                           f"{opts.get('outage_max', 10.0):g}s "
                           f"({last['detail'] if last else 'none'}); active member now "
                           f"{after or 'none'}")
    if after in ("", before):
        return _result("error", f"probes passed after cutting {before} ({mac}), but the "
                                f"active member is still {after or 'none'}")
    return _result("pass", f"active member {before} -> {after}; cut {before} ({mac}); outage "
                           f"{outage} ms ({tries} probe(s) after the cut); before: "
                           f"{first['detail']}; after: {last['detail']}")


def probe_until(spec):
    """A probe of a port another guest holds only while its own module run lasts (a declared
    check, provisioner/verify/declared.py): repeated with fresh nonces tagged with the prober's
    name ("nonce_prefix") until one passes or "until" seconds are over. -> the attempt that
    tells most (telling()), with every nonce sent (the holder reports which arrived) and each
    attempt's [start, end] wall time (vnet checks a refusal came while the holder listened)."""
    deadline = time.monotonic() + float(spec["until"])
    nonces, attempts, kept = [], [], None
    while True:
        nonce = f"{spec.get('nonce_prefix', 'guest')}-{token_hex(8)}"
        nonces.append(nonce)
        began = time.time()
        kept = telling(kept, probe(dict(spec, nonce=nonce)))
        attempts.append([began, time.time()])
        if kept["observed"] == "pass" or time.monotonic() >= deadline:
            return dict(kept, nonces=nonces, attempts=attempts)
        time.sleep(0.4)


def _weight(result):
    if result["observed"] == "pass":
        return 3
    return 2 if result["observed"] == "error" and result.get("reached") else 1


def telling(kept, result):
    """Of the attempts at one cell so far (`kept`) and a new one, the one that tells most: the
    first pass; else the first error that reached something (_reached: a wrong endpoint, a
    garbled or missing answer after connecting), since a leak seen once must not be hidden by
    a later refusal or timeout that came from elsewhere (the leaking end's own port closing);
    else the latest attempt, as before (a fail, a silence, or an error that reached nothing:
    an unanswered ARP across a lossy path, a local bind error)."""
    if kept is None or _weight(result) > _weight(kept):
        return result
    return result if _weight(kept) == 1 else kept


def run_all(specs):
    """All probes at once: negative cells wait for timeouts, so they must overlap. Bond
    failovers and impairment measurements run after them, one at a time: a cut link must not
    disturb the other cells, and the other cells' traffic must not disturb a measurement."""
    later = [s for s in specs if s.get("failover") or s.get("impair")]
    specs = [s for s in specs if not (s.get("failover") or s.get("impair"))]
    results = _run_probes(specs)
    for spec in later:
        try:
            results[spec["id"]] = failover(spec) if spec.get("failover") else measure(spec)
        except Exception as exc:  # a probe must report, never crash the others
            results[spec["id"]] = _result("error", repr(exc))
    return results


# --- impairment: RTT, loss and throughput across one NIC (provisioner/verify/impairment.py) ---

def _udp_samples(spec, opts):
    """`samples` UDP datagrams to the listener, each with its own fresh nonce; -> (sent,
    {seq: rtt ms}, wrong answers)."""
    sock, failed = _open(spec, socket.SOCK_DGRAM)
    if failed:
        raise OSError(failed["detail"])
    base = token_hex(6)
    sent, rtts, wrong = {}, {}, []
    done = Event()

    def receive():
        sock.settimeout(0.2)
        while not done.is_set():
            try:
                data = sock.recv(512)
            except socket.timeout:
                continue
            except OSError:
                continue      # an ICMP error for one datagram: that sample is lost
            now = time.monotonic()
            words = data.decode(errors="replace").split()
            seq = words[1].rpartition("-")[2] if len(words) >= 3 else ""
            if len(words) < 3 or words[0] != "VNET" or words[1] != f"{base}-{seq}" \
                    or not seq.isdigit() or int(seq) not in sent or words[2] != spec["expect_name"]:
                wrong.append(data[:60].decode(errors="replace"))
                continue
            rtts.setdefault(int(seq), (now - sent[int(seq)]) * 1000)
    try:
        sock.connect((spec["target"], int(spec["port"])))
        reader = Thread(target=receive, daemon=True)
        reader.start()
        start = time.monotonic()
        for seq in range(opts["samples"]):
            pause = start + seq * opts["interval"] - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            sent[seq] = time.monotonic()
            try:
                sock.send(f"VNET {base}-{seq}\n".encode())
            except OSError:
                pass          # e.g. an ICMP error queued by an earlier datagram: still sent
        time.sleep(opts["drain"])
        done.set()
        reader.join()
    finally:
        sock.close()
    return len(sent), rtts, wrong


def _ask(spec, request):
    """A TCP connection to the listener, bound like every probe, that has sent `request`
    (the caller reads the answer its own way and closes it)."""
    sock, failed = _open(spec, socket.SOCK_STREAM)
    if failed:
        raise OSError(failed["detail"])
    try:
        sock.settimeout(spec.get("timeout", TIMEOUT))
        sock.connect((spec["target"], int(spec["port"])))
        sock.settimeout(ANSWER_TIMEOUT)
        sock.sendall(request.encode())
    except BaseException:
        sock.close()
        raise
    return sock


def _stream(spec, seconds, warmup):
    """The listener streams for `seconds` after echoing this probe's nonce; -> Mbit/s received
    after `warmup`, and the seconds counted."""
    nonce = token_hex(8)
    sock = _ask(spec, f"VNET {nonce} STREAM {seconds}\n")
    try:
        line = b""
        while not line.endswith(b"\n"):
            chunk = sock.recv(1)
            if not chunk:
                break
            line += chunk
        verdict = judge(line, nonce, spec)
        if verdict["observed"] != "pass":
            return None, verdict["detail"]
        first = counted = None
        total = 0
        while True:
            chunk = sock.recv(65536)
            now = time.monotonic()
            if not chunk:
                break
            if first is None:
                first = now
            elif now - first >= warmup:
                if counted is None:
                    counted, total = now, 0
                total += len(chunk)
                last = now
        if counted is None or last <= counted:
            return None, "the stream ended before the warm-up was over"
        return total * 8 / (last - counted) / 1e6, round(last - counted, 2)
    finally:
        sock.close()


def _sink(spec, seconds, warmup):
    """The guest sends for `seconds` after the listener echoed this probe's nonce; the listener
    counts what arrives after `warmup` and answers with it (a rate limit on what the VM sends,
    VirtualBox's); -> (Mbit/s, seconds counted) or (None, why)."""
    nonce = token_hex(8)
    sock = _ask(spec, f"VNET {nonce} SINK {seconds} {warmup}\n")
    try:
        verdict = judge(_read_line(sock), nonce, spec)
        if verdict["observed"] != "pass":
            return None, verdict["detail"]
        block = bytes(65536)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            sock.sendall(block)
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(ANSWER_TIMEOUT + seconds)
        words = _read_line(sock).decode(errors="replace").split()
        if len(words) != 4 or words[:2] != ["VNET", nonce]:
            return None, f"the listener's count is garbled: {' '.join(words)[:60]!r}"
        counted, span = int(words[2]), float(words[3])
        if span <= 0:
            return None, "the listener counted nothing after the warm-up"
        return counted * 8 / span / 1e6, round(span, 2)
    finally:
        sock.close()


def _quartiles(values):
    ordered = sorted(values)
    at = lambda q: ordered[min(len(ordered) - 1, int(q * (len(ordered) - 1) + 0.5))]  # noqa: E731
    return at(0.25), at(0.5), at(0.75)


def _rtt_stats(sent, rtts):
    q1, median, q3 = _quartiles(list(rtts.values()))
    return {"samples": sent, "answered": len(rtts), "lost": sent - len(rtts),
            "loss_pct": round(100 * (sent - len(rtts)) / sent, 2),
            "rtt_median_ms": round(median, 2), "rtt_iqr_ms": round(q3 - q1, 2),
            "rtt_min_ms": round(min(rtts.values()), 2), "rtt_max_ms": round(max(rtts.values()), 2)}


def _over_management(spec, opts):
    """The same probe to the same listener over the management path: the route's choice, no
    NIC binding, the baseline's target."""
    plain = {k: v for k, v in spec.items() if k not in ("bind_mac", "bind_dev", "bind_ip")}
    plain["target"] = opts["baseline"]["target"]
    return plain


def _baseline_samples(spec, opts):
    """The same datagrams to the same listener over the management path (the route's choice,
    no NIC binding), in a thread: same guest, host and load, no impairment; -> (the thread,
    a dict whose "out" is then (sent, rtts, wrong) or the OSError)."""
    plain = _over_management(spec, opts)
    box = {}

    def run():
        try:
            box["out"] = _udp_samples(plain, opts)
        except OSError as exc:
            box["out"] = exc
    worker = Thread(target=run, daemon=True)
    worker.start()
    return worker, box


def judge_excess(bounds, noise, measured, baseline, floor=None, rate_control=None):
    """The declared parts against the excess of `measured` over `baseline` (the rules:
    provisioner/verify/impairment.py); -> (out of tolerance: [text], too small to tell: [text]).
    floor: per part, what the path may do on its own whatever the baseline shows (loss);
    rate_control: the Mbit/s the guest's unshaped transfer must reach for a rate to be told
    from what the guest carries anyway. Adds the excess values to `measured`."""
    floor = floor or {}
    out, blind = [], []
    excess = {}
    for key, (low, high) in bounds.items():
        value = measured[key]
        if key == "mbit":
            unshaped = measured.get("baseline_mbit")
            if rate_control and (unshaped is None or unshaped < rate_control):
                blind.append(f"mbit: the guest's unshaped transfer over the management path "
                             f"reached {unshaped} Mbit/s, under {rate_control}: the limit "
                             "cannot be told from what the guest carries anyway")
            if not lo_hi(value, (low, high)):
                out.append(f"mbit {value} outside {[low, high]}")
            continue
        base = baseline[key if key == "lost" else "rtt_iqr_ms"]
        if low <= noise[key] * base:
            what = "lost" if key == "lost" else "IQR"
            blind.append(f"{key}: the declared value's lower bound {low} is not above "
                         f"{noise[key]:g} x the baseline's {what} {base}")
        elif low <= floor.get(key, 0):
            blind.append(f"{key}: the declared value's lower bound {low} is not above the "
                         f"{floor[key]} the path may lose on its own")
        if key == "rtt_median_ms":
            ex = round(value - baseline[key], 2)
            judged = [round(low - base, 2), high]
            fits = value >= low and lo_hi(ex, judged)
            text = f"excess {ex} (measured {value} - baseline {baseline[key]}) outside {judged}" \
                + ("" if value >= low else f", measured below {low}")
        elif key == "rtt_iqr_ms":
            ex = round(max(0.0, value ** 2 - base ** 2) ** 0.5, 2)
            fits = lo_hi(ex, (low, high))
            text = f"excess {ex} (sqrt({value}^2 - baseline {base}^2)) outside {[low, high]}"
        else:
            ex = value - base
            fits = ex >= low and value <= high
            text = f"excess {ex} (lost {value} - baseline {base}) below {low}" if ex < low \
                else f"{value} above {high}"
        excess[key] = ex
        if not fits:
            out.append(f"{key} {text}")
    if excess:
        measured["excess"] = excess
    return out, blind


def measure(spec):
    """An impairment cell: measure RTT, loss and (if declared) throughput over the impaired NIC
    and, at the same time, RTT and loss over the unimpaired management path (the baseline), then
    judge the excess with the bounds vnet sent. pass: every judged quantity within its bounds;
    fail: no sample was answered (no connection); error: anything else, an out-of-tolerance
    value, a declared part too small to tell from the baseline and nothing to judge included."""
    opts = spec["impair"]
    if not opts.get("bounds"):
        return _result("error", "nothing declared to judge (an empty impairment measures nothing)")
    relative = [k for k in opts["bounds"] if k != "mbit"]
    if (relative or opts.get("rate_control")) and not opts.get("baseline"):
        parts = relative + (["mbit"] if opts.get("rate_control") else [])
        return _result("error", f"{', '.join(parts)}: no baseline path to judge the "
                                "impairment against (the probe spec names none)")
    began = time.monotonic()
    worker, box = _baseline_samples(spec, opts) if relative else (None, {})
    sent, rtts, wrong = _udp_samples(spec, opts)
    if worker:
        worker.join()
    if wrong:
        return _result("error", f"{len(wrong)} answer(s) were not this probe's: {wrong[0]!r}")
    if not rtts:
        return _result("fail", f"none of {sent} UDP samples was answered by "
                               f"{spec['expect_name']} at {spec['target']}:{spec['port']}")
    measured = _rtt_stats(sent, rtts)
    baseline = None
    if worker:
        where = f"the baseline over the management path ({opts['baseline']['target']})"
        if isinstance(box["out"], OSError):
            return _result("error", f"{where}: {_reason(box['out'])}", measured=measured)
        b_sent, b_rtts, b_wrong = box["out"]
        if b_wrong or not b_rtts:
            why = f"{len(b_wrong)} answer(s) were not this probe's" if b_wrong else \
                f"none of {b_sent} UDP samples was answered"
            return _result("error", f"{where}: {why}; without it the impairment cannot be told "
                                    "from the path's own latency and loss", measured=measured)
        baseline = measured["baseline"] = _rtt_stats(b_sent, b_rtts)
    if opts.get("stream"):
        transfer = _sink if opts.get("direction") == "from_guest" else _stream
        mbit, counted = transfer(spec, opts["stream"], opts["warmup"])
        if mbit is None:
            return _result("error", f"throughput: {counted}", measured=measured)
        measured.update(mbit=round(mbit, 3), stream_s=counted)
        if opts.get("rate_control"):     # the control: the same transfer, unshaped, after it
            try:
                unshaped, why = transfer(_over_management(spec, opts), opts["stream"],
                                         opts["warmup"])
            except OSError as exc:
                unshaped, why = None, _reason(exc)
            if unshaped is None:
                return _result("error", f"the unshaped transfer over the management path "
                                        f"({opts['baseline']['target']}): {why}",
                                measured=measured)
            measured["baseline_mbit"] = round(unshaped, 3)
    measured["seconds"] = round(time.monotonic() - began, 2)
    out, blind = judge_excess(opts["bounds"], opts.get("noise", {}), measured, baseline,
                              opts.get("floor"), opts.get("rate_control"))
    declared = ", ".join(f"{k} {v:g}" for k, v in opts["declared"].items())
    shown = (f"RTT median {measured['rtt_median_ms']} ms (IQR {measured['rtt_iqr_ms']}, "
             f"min {measured['rtt_min_ms']}, max {measured['rtt_max_ms']}), loss "
             f"{measured['loss_pct']} % ({measured['lost']}/{sent})"
             + (f", {measured['mbit']} Mbit/s "
                f"{'from' if opts.get('direction') == 'from_guest' else 'toward'} the guest "
                f"over {measured['stream_s']} s"
                + (f" (unshaped over the management path: {measured['baseline_mbit']} Mbit/s)"
                   if "baseline_mbit" in measured else "")
                if "mbit" in measured else "")
             + (f"; baseline over the management path: RTT median {baseline['rtt_median_ms']} "
                f"ms (IQR {baseline['rtt_iqr_ms']}), loss {baseline['lost']}/{baseline['samples']}"
                if baseline else "")
             + ("; excess " + ", ".join(f"{k} {v}" for k, v in measured["excess"].items())
                if measured.get("excess") else ""))
    if blind or out:
        why = (f"too small to tell from the baseline: {'; '.join(blind)}" if blind else "") \
            + ("; " if blind and out else "") \
            + (f"out of tolerance: {'; '.join(out)}" if out else "")
        return _result("error", f"{why}; declared {declared}; measured {shown}",
                       measured=measured)
    return _result("pass", f"declared {declared}; measured {shown}; nonces echoed by "
                           f"{spec['expect_name']}", measured=measured)


def lo_hi(value, bounds):
    return bounds[0] <= value <= bounds[1]


def _run_probes(specs):
    results = {}
    trips = RoundTrips()       # the negative probes' timeouts come from the positive ones'

    def one(spec):
        results[spec["id"]] = probe_until(spec) if spec.get("until") else probe(spec, trips)

    threads = [Thread(target=one, args=(s,)) for s in specs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for spec in specs:         # controls in this batch; verify.py settles across batches
        ids = [str(i) for i in spec.get("confirmed_by", ())]
        if all(i in results for i in ids) and ids:
            results[spec["id"]] = settle_silence(results[spec["id"]], [results[i] for i in ids])
    return results


def answer_for(data, name, peer):
    """The listener's answer to one request line, or None for anything that is not one."""
    words = data.decode(errors="replace").split()
    if len(words) == 2 and words[0] == "VNET":
        return f"VNET {words[1]} {name} {peer}\n".encode()
    if len(words) == 3 and words[0] == "VNET" and words[2] == "TIME":   # clock_offset()
        return f"VNET {words[1]} TIME {time.time():.6f}\n".encode()
    return None


STREAM_MAX = 10.0       # s: the longest transfer a listener sends


def stream_for(conn, data, name, peer):
    """"VNET <nonce> STREAM <seconds>": echo the nonce line, then send for that long (an
    impairment cell's throughput measurement)."""
    words = data.decode(errors="replace").split()
    if len(words) == 5 and words[0] == "VNET" and words[2] == "SINK":
        sink_for(conn, data, words, name, peer)
        return
    if len(words) != 4 or words[0] != "VNET" or words[2] != "STREAM":
        return
    try:
        seconds = min(STREAM_MAX, float(words[3]))
    except ValueError:
        return
    conn.sendall(f"VNET {words[1]} {name} {peer}\n".encode())
    block = bytes(65536)
    end = time.monotonic() + seconds
    conn.settimeout(seconds + TIMEOUT)
    while time.monotonic() < end:
        conn.sendall(block)


def sink_for(conn, data, words, name, peer):
    """"VNET <nonce> SINK <seconds> <warmup>": echo the nonce line, count what arrives until
    the prober closes (after `warmup` s from the first byte), answer "VNET <nonce> <bytes>
    <seconds counted>"."""
    try:
        seconds, warmup = min(STREAM_MAX, float(words[3])), float(words[4])
    except ValueError:
        return
    conn.sendall(f"VNET {words[1]} {name} {peer}\n".encode())
    conn.settimeout(seconds + ANSWER_TIMEOUT)
    extra = len(data) - len(data.split(b"\n", 1)[0]) - 1     # bytes after the request line
    first = time.monotonic() if extra > 0 else None
    counted, start, last = 0, None, None
    while True:
        chunk = conn.recv(65536)
        now = time.monotonic()
        if not chunk:
            break
        first = first or now
        if now - first >= warmup:
            if start is None:
                start = now
            else:
                counted += len(chunk)
            last = now
    span = (last - start) if start is not None and last is not None else 0.0
    conn.sendall(f"VNET {words[1]} {counted} {span:.4f}\n".encode())


def _serve_udp(sock, name):
    while True:
        try:
            data, peer = sock.recvfrom(512)
            reply = answer_for(data, name, peer[0])
            if reply:
                sock.sendto(reply, peer)
        except OSError:
            pass


def serve(port, name, host="0.0.0.0"):
    """The vnet listener on TCP and UDP `port`: answer each "VNET <nonce>" with the nonce, our
    name and the peer's address."""
    server = Sock(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((host, port))
    server.listen(64)
    udp = Sock(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind((host, port))
    Thread(target=_serve_udp, args=(udp, name), daemon=True).start()
    # vnet stops its listeners when it is done; killed (SIGKILL) it cannot, so a listener
    # also ends once the vnet that started it is gone (it is reparented: getppid changes).
    # Read before "ready": vnet may be killed the moment it has seen that line.
    parent = os.getppid()
    print(f"vnet-listener {name} ready on {host}:{port} (tcp, udp)", flush=True)

    def answer(conn, peer):
        with conn:
            conn.settimeout(TIMEOUT)
            try:
                data = conn.recv(256)
                reply = answer_for(data, name, peer[0])
                if reply:
                    conn.sendall(reply)
                else:
                    stream_for(conn, data, name, peer[0])
            except OSError:
                pass

    server.settimeout(PARENT_CHECK_SECONDS)
    while os.getppid() == parent:
        try:
            conn, peer = server.accept()
        except socket.timeout:
            continue
        Thread(target=answer, args=(conn, peer), daemon=True).start()


# --- the guest side of port forwards --------------------------------------------------------
# A forward is proven with or without a service on its guest port. For the duration of this
# module run the guest holds each forward aimed at it: a free port gets a temporary nonce
# listener (TCP or UDP, bound to the forward's NIC); a port a service already holds is watched
# by a raw socket on that NIC, which records the nonces vnet's host-side probes send (so the
# service need not speak vnet's protocol). Host-side nonces start with their origin ("host-",
# "internet-"); a forward is done when every origin's nonce arrived, or at FORWARD_LIFETIME.

FORWARD_LIFETIME = 25.0
NONCE_CHARS = frozenset(b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz.-")


def nonces_in(payload):
    """Each "VNET <nonce>" in a packet's payload, as re.findall(rb"VNET ([0-9A-Za-z.-]{8,64})")
    finds them (no `re`: it imports enum and functools, a fifth of a second on a cold guest)."""
    found, at = [], payload.find(b"VNET ")
    while at >= 0:
        start = end = at + 5
        while end < len(payload) and end - start < 64 and payload[end] in NONCE_CHARS:
            end += 1
        if end - start >= 8:
            found.append(payload[start:end])
            at = payload.find(b"VNET ", end)
        else:
            at = payload.find(b"VNET ", at + 1)
    return found


class ForwardHold:
    def __init__(self, spec, name):
        self.spec, self.name = spec, name
        self.seen, self.mode, self.detail = [], "none", ""
        self.opened = self.closed = None      # wall times the port was held (listening)
        self.sock = None
        self.done = Event()

    def start(self):
        ifname = interface_of(self.spec["mac"])
        address = address_of(ifname) if ifname else None
        if address is None:
            self.mode, self.detail = "error", f"no NIC with an address for MAC {self.spec['mac']}"
            self.done.set()
            return
        udp = self.spec.get("proto") == "udp"
        sock = Sock(socket.AF_INET, socket.SOCK_DGRAM if udp else socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, ifname.encode())
        if not udp:   # a previous check's connections in TIME_WAIT must not look like a service
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((address, int(self.spec["port"])))
            if not udp:
                sock.listen(16)
            self.mode = "listener"
            self.detail = f"vnet's temporary listener on {ifname} {address}:{self.spec['port']}"
        except OSError as exc:
            sock.close()
            if exc.errno != errno.EADDRINUSE:
                self.mode, self.detail = "error", f"cannot hold port {self.spec['port']}: {exc}"
                self.done.set()
                return
            # taken: a service listens there; watch it instead
            sock = Sock(socket.AF_INET, socket.SOCK_RAW,
                        socket.IPPROTO_UDP if udp else socket.IPPROTO_TCP)
            sock.setsockopt(socket.SOL_SOCKET, SO_BINDTODEVICE, ifname.encode())
            self.mode = "service"
            self.detail = f"service present on {ifname} {address}:{self.spec['port']}"
        sock.settimeout(0.2)
        self.opened = time.time()
        self.sock, self.address = sock, address
        self.thread = Thread(target=self._loop, args=(udp,), daemon=True)
        self.thread.start()

    def _note(self, nonce):
        if nonce not in self.seen:
            self.seen.append(nonce)
        origins = self.spec.get("origins") or []
        if all(any(n.rsplit("-", 1)[0] == o for n in self.seen) for o in origins):  # exact:
            # names hold "-", so a prefix would take web-2's nonce for origin web's
            self._finish()

    def _finish(self):
        if not self.done.is_set() and self.opened is not None:
            self.closed = time.time()
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
                    Thread(target=self._tcp, args=(conn, peer), daemon=True).start()
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
        reply = answer_for(data, self.name, peer[0])
        if reply:
            send(reply)
            self._note(reply.split()[1].decode())

    def _sniff(self, packet, udp):
        """An IPv4 packet to our address and port: note the nonces in its payload."""
        ihl = (packet[0] & 15) * 4
        if socket.inet_ntoa(packet[16:20]) != self.address or \
                int.from_bytes(packet[ihl + 2:ihl + 4], "big") != int(self.spec["port"]):
            return
        payload = packet[ihl + 8:] if udp else packet[ihl + (packet[ihl + 12] >> 4) * 4:]
        for nonce in nonces_in(payload):
            self._note(nonce.decode())

    def report(self):
        self._finish()
        if self.sock is not None:
            self.thread.join()        # a blocked accept() keeps the socket open until it returns
            self.sock.close()
        return {"mode": self.mode, "detail": self.detail, "nonces": self.seen,
                "opened": self.opened, "closed": self.closed}


# --- this guest's clock against the host's -------------------------------------------------
# A hold's opening and closing and a prober's attempts are wall times of different machines;
# vnet compares them (provisioner/verify/forwardcheck.py) on the host's clock. A guest's clock
# starts from the RTC's whole seconds, so it is up to a second off; it is measured instead.

CLOCK_SAMPLES = 3
CLOCK_WAIT = 0.5        # s per sample: the host listener answers at once on a path Ansible uses


def clock_offset(to):
    """(host's clock - this guest's) from "VNET <nonce> TIME" exchanges with vnet's host
    listener ({"target", "port"}, over the management path): the host read its clock between
    our send and our receive, so the best sample's midpoint is off by at most half its round
    trip (the "error"). None when no answer came."""
    best = None
    with Sock(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(CLOCK_WAIT)
        for _ in range(CLOCK_SAMPLES):
            nonce = token_hex(8)
            sent = time.time()
            try:
                sock.sendto(f"VNET {nonce} TIME\n".encode(), (to["target"], int(to["port"])))
                while True:                  # a late answer to an earlier sample is skipped
                    words = sock.recv(256).decode(errors="replace").split()
                    if words[:3] == ["VNET", nonce, "TIME"] and len(words) == 4:
                        break
                received, host = time.time(), float(words[3])
            except (OSError, ValueError):
                continue
            if best is None or received - sent < best[1]:
                best = (host - (sent + received) / 2, received - sent)
    return None if best is None else {"offset": best[0], "error": best[1] / 2}


def clock_over_run(first, last):
    """The clock measured at a run's start and end as one bound for the whole run: the start's
    offset, its error widened by how far the offset moved meanwhile (drift, or a step). None
    unless both were measured: one measurement says nothing of a step during the run."""
    if first is None or last is None:
        return None
    moved = abs(last["offset"] - first["offset"])
    return {"offset": round(first["offset"], 6),
            "error": round(max(first["error"], last["error"]) + moved, 6),
            "moved": round(moved, 6)}


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
    no forward hold outlives this module run. -> {forward id: report}"""
    for hold in holds:
        hold.done.wait(max(0.0, started + lifetime - time.monotonic()))
    return {hold.spec["id"]: hold.report() for hold in holds}


def main():
    global MAIN_AT
    MAIN_AT = time.monotonic()
    if sys.argv[1:2] == ["--serve"]:          # vnet's host-side listeners
        serve(int(sys.argv[2]), sys.argv[3])
        return
    if sys.argv[1:2] == ["-"]:       # the baked copy, arguments on stdin (one SSH call)
        print(to_json(handle(from_json(sys.stdin.read()))), flush=True)
        if len(sys.argv) == 3:       # PORT: stay, warm, for the next run
            stay_warm(int(sys.argv[2]))
        return
    with open(sys.argv[1]) as f:     # WANT_JSON: Ansible's file of arguments
        args = from_json(f.read())
    print(to_json(handle(args)))


def handle(args, warm=False):
    """One run of the module: this guest's probes, drivers and forward holds -> its result."""
    started = time.monotonic()
    watch = args.get("listening") or {}
    first_look = listening(watch["ports"]) if watch.get("ports") else None
    holds = hold_forwards(args.get("forwards") or [])      # up before the host probes them
    # measured beside the probes (no wall time), again once the holds closed
    clock_to = next((s["clock"] for s in (args.get("forwards") or []) + args.get("probes", [])
                     if s.get("clock")), watch.get("clock"))
    first = {}

    def measure_first():
        try:
            first["at"] = clock_offset(clock_to)
        except Exception:       # noqa: BLE001 - unmeasured: vnet falls back to its bound
            first["at"] = None
    clocking = Thread(target=measure_first)
    if clock_to:
        clocking.start()
    results = run_all(args.get("probes", []))
    drivers = {mac: driver_of(mac) for mac in args.get("nic_macs", [])}
    probed = time.monotonic()
    forwards = release_forwards(holds, started)
    measured = {}
    if clock_to:
        clocking.join()
        try:
            last = first.get("at") and clock_offset(clock_to)
        except Exception:       # noqa: BLE001 - as above
            last = None
        measured["clock"] = clock_over_run(first.get("at"), last)
    if watch.get("ports"):     # after the holds closed; each look carries this run's clock
        last_look = listening(watch["ports"])
        for look in (first_look, last_look):
            if look:
                look["clock"] = measured.get("clock")
        measured["listening"] = {"first": first_look, "last": last_look, "v6only": _v6only()}
    # what vnet_tunnel built, passed on: that task runs with no_log (its arguments hold keys)
    built = {"tunnels": args["tunnels_built"]} if args.get("tunnels_built") else {}
    timing = {"python_start_s": python_start_seconds(), "probes_s": round(probed - started, 3),
              "forwards_wait_s": round(time.monotonic() - probed, 3),
              # the image's precompiled copy (provisioner/guest/bakedprobe.py), or a sent one
              "baked": sys.argv[0].endswith(".pyc"),
              # forked from the warm copy a run left behind (stay_warm): no Python start
              "warm": warm}
    return {"changed": False, "probes": results, "drivers": drivers, "forwards": forwards,
            "timing": timing, **built, **measured}


def stay_warm(port):
    """After a run of the image's precompiled copy, leave this interpreter behind, warm, for
    the next run (a second task, the next `vnet verify`): Python's start and imports are the
    largest part of a run inside a TCG guest. A forked child, detached from the SSH call (new
    session, standard streams on /dev/null, so the call ends with this run's result), listens
    on the guest's own loopback only. The action plugin's one command (provisioner/guest/
    bakedprobe.py) sends it two lines, the bytecode it expects and the JSON arguments, and
    reads the result (_warm_child). Each request runs in a child it forks, so no thread or
    socket of one run outlives it. Nothing is started at boot: there the guest's CPU is the
    boot's (a warm copy started with the boot slowed the create it was meant to speed up). If a
    warm copy already holds the port, this one ends."""
    if threads_alive() > 0:   # a thread of this run still lives: forking it is unsafe
        return
    if os.fork() != 0:
        return
    os.setsid()
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    server = Sock(socket.AF_INET, socket.SOCK_STREAM)
    try:
        server.bind(("127.0.0.1", port))
        server.listen(8)
    except OSError:
        os._exit(0)
    import _signal as signal       # `signal` imports enum
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)      # the kernel reaps the children
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    while True:
        conn, _ = server.accept()
        try:
            if os.fork() == 0:
                server.close()
                _warm_child(conn)
        except OSError:                # no child: the client sees no WARM_ACCEPTED, runs afresh
            pass
        conn.close()


def _warm_child(conn):
    """One request: line 1 the bytecode the client expects (this copy answers only for its
    own, else WARM_OTHER and the client runs that bytecode afresh), line 2 the JSON args.
    WARM_ACCEPTED goes first, so a client that gets no result knows this run was taken."""
    global MAIN_AT
    MAIN_AT = time.monotonic()
    import _signal as signal
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)      # this run's own children are waited for
    try:
        conn.settimeout(ANSWER_TIMEOUT)                # a client that sends nothing
        with conn:
            lines = Lines(conn)
            if lines.readline().decode(errors="replace").strip() != sys.argv[0]:
                conn.sendall(WARM_OTHER + b"\n")
                return
            conn.sendall(WARM_ACCEPTED + b"\n")
            try:
                out = handle(from_json(lines.readline()), warm=True)
            except Exception as e:      # the plugin shows it: a failed task, never a hang
                out = {"failed": True, "msg": f"vnet_probe warm copy: {type(e).__name__}: {e}"}
            conn.sendall(to_json(out).encode() + b"\n")
    finally:
        os._exit(0)


class Lines:
    """conn.makefile("rb").readline() on a socket (the C socket type has no makefile)."""

    def __init__(self, conn):
        self.conn, self.buffer = conn, b""

    def readline(self):
        while b"\n" not in self.buffer:
            data = self.conn.recv(65536)
            if not data:
                line, self.buffer = self.buffer, b""
                return line
            self.buffer += data
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line + b"\n"


# /proc/net/<proto>[6]: a TCP socket in LISTEN (0A), a UDP one unconnected (07, no peer)
IDLE_STATE = {"tcp": "0A", "udp": "07"}


def listening(watched):
    """The sockets of this guest that take new connections (TCP, LISTEN) or datagrams from
    anyone (UDP, bound and unconnected) on each watched "proto/port", as its kernel lists
    them, and when: {"from": t0, "to": t1, "uptime": u, "boot": boot id, "tcp/7": [[bound
    address, socket inode], ...]}, seen between the wall times t0 and t1; u, the uptime at t0,
    and the boot id place the console's VNET-LISTEN stamps on that wall clock.
    Taken at a run's start and end, the same inode both times is one socket that listened all
    along (inodes are never reused while a socket lives): the kernel then never refused that
    port itself, so a refusal met on the way there in between came from the path
    (provisioner/verify/refusals.py). None if /proc cannot say: no socket is vouched for."""
    try:
        return _listening(watched)
    except (OSError, ValueError, KeyError):      # a probe run must report, never crash
        return None


def _listening(watched):
    with open("/proc/uptime") as f:        # the clock of the console's VNET-LISTEN stamps
        found = {"from": time.time(), "uptime": float(f.read().split()[0])}
    with open("/proc/sys/kernel/random/boot_id") as f:     # whose stamps: inodes repeat
        found["boot"] = f.read().strip()
    for key in watched:
        proto, port = key.split("/")
        rows = []
        for suffix in ("", "6"):
            try:
                with open(f"/proc/net/{proto}{suffix}") as f:
                    lines = f.read().splitlines()[1:]
            except OSError:
                continue
            rows += proc_net_sockets(lines, int(port), IDLE_STATE[proto])
        found[key] = rows
    found["to"] = time.time()          # the sockets were seen between "from" and "to"
    return found


def proc_net_sockets(lines, port, state):
    """[address, inode] of each /proc/net/tcp-style row on local `port` in `state` with no
    peer (addresses are 32-bit words in the kernel's byte order)."""
    rows = []
    for line in lines:
        words = line.split()
        if len(words) < 10 or words[3] != state:
            continue
        local, remote = words[1].rsplit(":", 1), words[2].rsplit(":", 1)
        if int(local[1], 16) != port or int(remote[1], 16) != 0:
            continue
        raw = b"".join(int(local[0][i:i + 8], 16).to_bytes(4, sys.byteorder)
                       for i in range(0, len(local[0]), 8))
        family = socket.AF_INET if len(raw) == 4 else socket.AF_INET6
        rows.append([socket.inet_ntop(family, raw), int(words[9])])
    return rows


def _v6only():
    """net.ipv6.bindv6only: 0 (the default) lets a socket bound to :: take IPv4 as well."""
    try:
        with open("/proc/sys/net/ipv6/bindv6only") as f:
            return int(f.read().strip() or 0)
    except (OSError, ValueError):
        return 1      # unknown: :: then vouches for IPv6 only


def python_start_seconds():
    """Seconds from this process's start to now, less the time main() ran: what starting
    Python and importing this module cost on the guest (the verify breakdown); None if /proc
    cannot say."""
    try:
        with open("/proc/self/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])    # starttime, field 22
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return round(uptime - ticks / os.sysconf("SC_CLK_TCK") - (time.monotonic() - MAIN_AT), 3)


if __name__ == "__main__":
    main()
