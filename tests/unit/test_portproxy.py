"""vnet's port proxy against loopback "guests": TCP relay with half-close, a refused guest seen
as a reset (never a clean EOF), UDP relayed per client and sessions that expire. The proxy runs
as vnet starts it (forwarding.proxy_argv), only on 127.0.0.1."""
import errno
import socket
import subprocess
import threading
import time

import pytest

from provisioner import forwarding

LOCAL = "127.0.0.1"


def free_port(kind=socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind((LOCAL, 0))
        return s.getsockname()[1]


def refused_port() -> int:
    """A TCP port on loopback where nothing listens (bound, never listening: stays refused)."""
    s = socket.socket()
    s.bind((LOCAL, 0))
    refused_port.keep.append(s)
    return s.getsockname()[1]


refused_port.keep = []


@pytest.fixture
def proxy(tmp_path):
    """start(rules, *extra) -> the proxy process; rules as the renderer writes them."""
    started = []

    def start(rules, *extra):
        argv = forwarding.proxy_argv(tmp_path, rules)
        argv[-len(rules):-len(rules)] = list(extra)     # options before the rule specs
        log = tmp_path / "proxy.log"
        proc = subprocess.Popen(argv, stdout=open(log, "w"), stderr=subprocess.STDOUT, cwd="/")
        started.append(proc)
        deadline = time.monotonic() + 10
        while "ready" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.02)
        return proc

    yield start
    for proc in started:
        proc.kill()
        proc.wait()


def rule(proto, host_port, guest_port):
    return {"proto": proto, "host_ip": LOCAL, "host_port": host_port, "guest_ip": LOCAL,
            "guest_port": guest_port}


def tcp_guest():
    """A guest service that reads to EOF, then answers with what it read, upper-cased."""
    server = socket.create_server((LOCAL, 0))
    port = server.getsockname()[1]

    def serve():
        conn, _ = server.accept()
        with conn:
            data = b""
            while chunk := conn.recv(65536):
                data += chunk
            conn.sendall(data.upper())
        server.close()
    threading.Thread(target=serve, daemon=True).start()
    return port


def test_tcp_is_relayed_and_a_half_close_passes_through(proxy):
    guest, host = tcp_guest(), free_port()
    proxy([rule("tcp", host, guest)])
    with socket.create_connection((LOCAL, host), timeout=10) as c:
        c.sendall(b"hello " * 20000)
        c.shutdown(socket.SHUT_WR)              # the guest answers only after our EOF
        answer = b""
        while chunk := c.recv(65536):
            answer += chunk
    assert answer == b"HELLO " * 20000


def test_a_refusing_guest_resets_the_client_instead_of_a_clean_close(proxy):
    host = free_port()
    proxy([rule("tcp", host, refused_port())])
    with socket.create_connection((LOCAL, host), timeout=10) as c:
        with pytest.raises(ConnectionResetError):
            c.sendall(b"VNET x\n")
            data = c.recv(100)                  # b"" would be a clean close: the old proxy
            pytest.fail(f"the client saw a clean close ({data!r}), not a reset")


def udp_guest():
    """A UDP guest service that answers each datagram with its sender's port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((LOCAL, 0))

    def serve():
        while True:
            data, peer = sock.recvfrom(2048)
            sock.sendto(data + b" from %d" % peer[1], peer)
    threading.Thread(target=serve, daemon=True).start()
    return sock.getsockname()[1]


def ask(client: socket.socket, port: int, text: bytes) -> bytes:
    client.sendto(text, (LOCAL, port))
    return client.recvfrom(2048)[0]


def udp_client() -> socket.socket:
    c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    c.bind((LOCAL, 0))
    c.settimeout(10)
    return c


def test_udp_is_relayed_per_client_and_answers_reach_their_own_client(proxy):
    guest, host = udp_guest(), free_port(socket.SOCK_DGRAM)
    proxy([rule("udp", host, guest)])
    with udp_client() as a, udp_client() as b:
        a1, b1 = ask(a, host, b"a1"), ask(b, host, b"b1")
        a2, b2 = ask(a, host, b"a2"), ask(b, host, b"b2")
    assert a1.startswith(b"a1 from ") and b1.startswith(b"b1 from ")
    # one upstream socket per client: the guest sees two clients, each of them steadily
    assert a1.split()[-1] == a2.split()[-1] != b1.split()[-1] == b2.split()[-1]


def test_an_idle_udp_session_expires_and_a_new_one_starts(proxy):
    guest, host = udp_guest(), free_port(socket.SOCK_DGRAM)
    proxy([rule("udp", host, guest)], "--udp-idle", "0.2")
    with udp_client() as a:
        first = ask(a, host, b"x").split()[-1]
        pause, seen = 0.5, first
        while seen == first and pause < 10:     # silent longer than the idle time, then ask
            time.sleep(pause)
            seen = ask(a, host, b"x").split()[-1]
            pause *= 2
    assert seen != first, "the idle session was never closed"


def test_tcp_and_udp_forwards_share_one_proxy(proxy):
    tguest, uguest, port = tcp_guest(), udp_guest(), free_port()
    proxy([rule("tcp", port, tguest), rule("udp", port, uguest)])
    with udp_client() as a:
        assert ask(a, port, b"dns?").startswith(b"dns? from ")
    with socket.create_connection((LOCAL, port), timeout=10) as c:
        c.sendall(b"ok")
        c.shutdown(socket.SHUT_WR)
        assert c.recv(10) == b"OK"


def test_the_proxy_listens_only_on_its_address(proxy):
    """Bound to 127.0.0.1 (the default outside a sandbox), not to every address."""
    host = free_port()
    proxy([rule("tcp", host, refused_port())])
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.2", host))     # free on another loopback address: not wildcard
        except OSError as exc:
            assert exc.errno != errno.EADDRINUSE, "the proxy listens on every address"
