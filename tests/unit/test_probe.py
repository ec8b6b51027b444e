"""The nonce protocol, over real TCP on loopback: a probe passes only with a fresh nonce from
the listener it meant to reach."""
import socket
import threading

import pytest

from provisioner.verify import probe_module

probe = probe_module()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def listener():
    port = free_port()
    threading.Thread(target=probe.serve, args=(port, "alpha", "127.0.0.1"), daemon=True).start()
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            break
        except OSError:
            threading.Event().wait(0.02)
    return port


def test_pass_with_the_right_endpoint(listener):
    r = probe.probe({"target": "127.0.0.1", "port": listener, "expect_name": "alpha"})
    assert r["observed"] == "pass" and "alpha" in r["detail"]


def test_wrong_endpoint_fails(listener):
    r = probe.probe({"target": "127.0.0.1", "port": listener, "expect_name": "beta"})
    assert r == {"observed": "fail", "detail": "wrong endpoint: answered by alpha, not beta"}


def test_refused_is_a_diagnosed_failure():
    r = probe.probe({"target": "127.0.0.1", "port": free_port(), "expect_name": "x"})
    assert r == {"observed": "fail", "detail": "refused"}


def test_a_server_that_does_not_echo_the_nonce_fails():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)

    def stale():
        conn, _ = server.accept()
        conn.recv(100)
        conn.sendall(b"VNET 0000000000000000 alpha\n")   # a replayed answer
        conn.close()
    threading.Thread(target=stale, daemon=True).start()
    r = probe.probe({"target": "127.0.0.1", "port": server.getsockname()[1], "expect_name": "alpha"})
    assert r["observed"] == "fail" and "no fresh nonce" in r["detail"]


def test_probes_run_concurrently(listener):
    specs = [{"id": str(i), "target": "127.0.0.1", "port": listener, "expect_name": "alpha"}
             for i in range(20)]
    results = probe.run_all(specs)
    assert len(results) == 20 and all(r["observed"] == "pass" for r in results.values())


def test_binding_to_a_missing_nic_is_an_error():
    r = probe.probe({"target": "127.0.0.1", "port": 1, "bind_mac": "02:00:00:00:00:99"})
    assert r["observed"] == "error"
