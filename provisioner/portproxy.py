"""vnet's port proxy for natnetwork port forwards on libvirt: listens on the host and relays
TCP and UDP to a guest, as VirtualBox's NAT service does. Run by vnet (forwarding.start_proxy),
one process per lab, by path with `python -I` (nothing is imported from the caller's
directory; it needs the standard library only), inside the host's network namespace; ended by
its recorded PID on `vnet destroy`.

    python -I portproxy.py --owner LAB_DIR tcp:127.0.0.1:7001=192.168.150.10:7 \
        udp:127.0.0.1:5353=192.168.150.11:53

TCP: the guest is connected first; when it refuses (or does not answer), the client is reset
(SO_LINGER 0), so it sees a refused connection as it would without the proxy, never an accepted
one that closes cleanly. Half-closes pass through. UDP: one upstream socket per client address
(so the guest sees clients apart and answers reach the right one), closed after
`--udp-idle` seconds without traffic.
"""
from __future__ import annotations

import argparse
import asyncio
import socket
import struct
import time
from dataclasses import dataclass

CONNECT_TIMEOUT = 5.0
UDP_IDLE = 60.0            # seconds a UDP session lives without a datagram either way
UDP_MAX_SESSIONS = 1024
READY = "vnet-portproxy ready"   # printed once every forward listens    # per forward: bounds the sockets one noisy client set can open


@dataclass(frozen=True)
class Rule:
    proto: str            # tcp | udp
    bind_ip: str
    host_port: int
    guest_ip: str
    guest_port: int

    def spec(self) -> str:
        return f"{self.proto}:{self.bind_ip}:{self.host_port}={self.guest_ip}:{self.guest_port}"


def parse(specs: list[str]) -> list[Rule]:
    """PROTO:BIND_IP:HOST_PORT=GUEST_IP:GUEST_PORT, as Rule.spec() writes them."""
    rules = []
    for spec in specs:
        listen, _, target = spec.partition("=")
        proto, bind_ip, host_port = listen.split(":")
        guest_ip, _, guest_port = target.rpartition(":")
        if proto not in ("tcp", "udp"):
            raise ValueError(f"{spec}: protocol must be tcp or udp")
        rules.append(Rule(proto, bind_ip, int(host_port), guest_ip, int(guest_port)))
    return rules


# ---------------------------------------------------------------- TCP

def reset(writer: asyncio.StreamWriter) -> None:
    """Close with an RST: SO_LINGER on, 0 seconds (tcp(7)), so the peer sees ECONNRESET."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    writer.transport.abort()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                other: asyncio.StreamWriter) -> None:
    """Copy until EOF (then half-close writer); a reset on either side resets the other."""
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except OSError:         # reset, timed out, unreachable: the other side learns it too
        reset(writer)
        reset(other)


def _tcp_handler(rule: Rule):
    async def handle(reader, writer):
        try:
            g_reader, g_writer = await asyncio.wait_for(
                asyncio.open_connection(rule.guest_ip, rule.guest_port), CONNECT_TIMEOUT)
        except (OSError, asyncio.TimeoutError):
            reset(writer)
            return
        try:
            await asyncio.gather(_pipe(reader, g_writer, writer), _pipe(g_reader, writer, g_writer))
        finally:
            for w in (writer, g_writer):
                w.close()
    return handle


# ---------------------------------------------------------------- UDP

class _Upstream(asyncio.DatagramProtocol):
    """One client's session: a socket connected to the guest; answers go back to the client."""

    def __init__(self, listener: asyncio.DatagramTransport, client: tuple):
        self.listener, self.client = listener, client
        self.transport: asyncio.DatagramTransport | None = None
        self.last = time.monotonic()

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        self.last = time.monotonic()
        self.listener.sendto(data, self.client)

    def error_received(self, exc):     # ICMP port unreachable from the guest: UDP drops it
        pass


class _UdpListener(asyncio.DatagramProtocol):
    def __init__(self, rule: Rule, idle: float):
        self.rule, self.idle = rule, idle
        self.sessions: dict[tuple, _Upstream] = {}
        self.transport: asyncio.DatagramTransport | None = None
        self.pending: set[tuple] = set()

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        session = self.sessions.get(addr)
        if session is not None and session.transport is not None:
            session.last = time.monotonic()
            session.transport.sendto(data)
        elif len(self.sessions) + len(self.pending) < UDP_MAX_SESSIONS:
            self.pending.add(addr)
            asyncio.ensure_future(self._open(data, addr))

    def error_received(self, exc):
        pass

    async def _open(self, first: bytes, client: tuple) -> None:
        loop = asyncio.get_running_loop()
        try:
            _, session = await loop.create_datagram_endpoint(
                lambda: _Upstream(self.transport, client),
                remote_addr=(self.rule.guest_ip, self.rule.guest_port))
        except OSError:
            return
        finally:
            self.pending.discard(client)
        self.sessions[client] = session
        session.transport.sendto(first)

    def expire(self) -> None:
        now = time.monotonic()
        for client, session in list(self.sessions.items()):
            if now - session.last > self.idle:
                session.transport.close()
                del self.sessions[client]


async def _expire_sessions(listeners: list[_UdpListener], idle: float) -> None:
    while True:
        await asyncio.sleep(min(idle / 2, 5.0))
        for listener in listeners:
            listener.expire()


# ---------------------------------------------------------------- serving

async def serve(rules: list[Rule], udp_idle: float = UDP_IDLE,
                ready: asyncio.Event | None = None) -> None:
    loop = asyncio.get_running_loop()
    servers, udp = [], []
    for rule in rules:
        if rule.proto == "tcp":
            servers.append(await asyncio.start_server(_tcp_handler(rule), rule.bind_ip,
                                                      rule.host_port, reuse_address=True))
        else:
            _, listener = await loop.create_datagram_endpoint(
                lambda r=rule: _UdpListener(r, udp_idle), local_addr=(rule.bind_ip, rule.host_port))
            udp.append(listener)
    print(READY, flush=True)
    if ready is not None:
        ready.set()
    await asyncio.gather(_expire_sessions(udp, udp_idle),
                         *(s.serve_forever() for s in servers))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="portproxy.py", description=__doc__.split("\n")[0])
    parser.add_argument("--owner", help="the lab's state directory (names the lab in `ps`)")
    parser.add_argument("--udp-idle", type=float, default=UDP_IDLE,
                        help="seconds an idle UDP session is kept (default %(default)s)")
    parser.add_argument("rules", nargs="+", help="PROTO:BIND_IP:HOST_PORT=GUEST_IP:GUEST_PORT")
    args = parser.parse_args(argv)
    asyncio.run(serve(parse(args.rules), args.udp_idle))


if __name__ == "__main__":
    main()
