"""The nonce protocol, over real TCP and UDP on loopback: a probe passes only with a fresh
nonce from the listener it meant to reach; it fails only when no connection could be made;
anything else (silence, a wrong endpoint, a replayed nonce, garbage) is an error, which no
cell accepts."""
import errno
import socket
import sys
import threading

import pytest

from provisioner.verify.checks import Check
from provisioner.verify.run import probe_module

probe = probe_module()
SHORT = 0.3          # how long a probe waits for a listener that never answers


def free_port(kind=socket.SOCK_STREAM):
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(port):
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return
        except OSError:
            threading.Event().wait(0.02)


@pytest.fixture(scope="module")
def listener():
    """vnet's own listener (TCP and UDP) named alpha."""
    port = free_port()
    threading.Thread(target=probe.serve, args=(port, "alpha", "127.0.0.1"), daemon=True).start()
    wait_for(port)
    return port


def tcp_server(behave, read_first=True):
    """A TCP server: behave(conn, request_line) plays a misbehaving far end."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)

    def run():
        while True:
            conn, _ = server.accept()
            with conn:
                conn.settimeout(5)
                try:
                    behave(conn, conn.recv(100).decode() if read_first else "")
                except OSError:
                    pass
    threading.Thread(target=run, daemon=True).start()
    return server.getsockname()[1]


def nonce_of(line):
    return line.split()[1]


BEHAVIOURS = {
    "silent": lambda conn, line: threading.Event().wait(3 * SHORT),
    "closes": lambda conn, line: None,
    "other name": lambda conn, line: conn.sendall(f"VNET {nonce_of(line)} beta\n".encode()),
    "replayed nonce": lambda conn, line: conn.sendall(b"VNET 0000000000000000 alpha\n"),
    "garbled": lambda conn, line: conn.sendall(b"HTTP/1.0 400 Bad Request\r\n"),
}
DETAILS = {"silent": "connected, but the listener stayed silent",
           "closes": "connected, but the far end closed without answering",
           "other name": "leak: answered by beta instead of alpha",
           "replayed nonce": "stale or replayed",
           "garbled": "answer is garbled"}


def test_pass_with_the_right_endpoint(listener):
    r = probe.probe({"target": "127.0.0.1", "port": listener, "expect_name": "alpha"})
    assert r["observed"] == "pass" and "alpha" in r["detail"]


def test_wrong_endpoint_is_an_error_named_as_a_leak(listener):
    r = probe.probe({"target": "127.0.0.1", "port": listener, "expect_name": "beta"})
    assert r == {"observed": "error", "detail": "leak: answered by alpha instead of beta",
                 "reached": True}


def test_refused_is_a_diagnosed_failure():
    r = probe.probe({"target": "127.0.0.1", "port": free_port(), "expect_name": "x"})
    assert r == {"observed": "fail", "detail": "refused", "refused": True}


@pytest.mark.parametrize("behaviour", list(BEHAVIOURS))
def test_a_connected_probe_never_fails_it_errs(behaviour):
    port = tcp_server(BEHAVIOURS[behaviour])
    r = probe.probe({"target": "127.0.0.1", "port": port, "expect_name": "alpha",
                     "answer_timeout": SHORT})
    assert r["observed"] == "error" and DETAILS[behaviour] in r["detail"], r


@pytest.mark.parametrize("behaviour", ["refused", *BEHAVIOURS])
def test_only_a_refusal_confirms_a_negative_cell(behaviour):
    port = free_port() if behaviour == "refused" else tcp_server(BEHAVIOURS[behaviour])
    r = probe.probe({"target": "127.0.0.1", "port": port, "expect_name": "alpha",
                     "answer_timeout": SHORT})
    cell = Check("vm_to_internet", "net", "hostonly", "vm1", "internet", "fail", "guest:vm1",
                 observed=r["observed"], detail=r["detail"])
    assert cell.ok == (behaviour == "refused"), r


def test_an_unexpected_banner_is_an_error():
    port = tcp_server(lambda conn, line: None, read_first=False)   # closes: no banner
    banner = tcp_server(lambda conn, line: conn.sendall(b"SSH-2.0-dropbear\r\n\x00\x01\xff"),
                        read_first=False)
    r = probe.probe({"target": "127.0.0.1", "port": port, "banner": "SSH-"})
    assert r["observed"] == "error" and "not 'SSH-'" in r["detail"]
    assert probe.probe({"target": "127.0.0.1", "port": banner, "banner": "SSH-"}) == {
        "observed": "pass", "detail": "banner 'SSH-2.0-dropbear'"}     # its first line only


def test_only_network_errors_before_connecting_are_failures():
    assert probe._not_connected(socket.timeout("timed out"))["observed"] == "fail"
    for code in (errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ECONNREFUSED):
        assert probe._not_connected(OSError(code, "x"))["observed"] == "fail"
    # a local firewall or a bad bind on the prober says nothing about the network under test
    for code in (errno.EPERM, errno.EADDRNOTAVAIL):
        assert probe._not_connected(OSError(code, "x"))["observed"] == "error"


# --- UDP ---------------------------------------------------------------------------------------

def udp_server(behave):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))

    def run():
        while True:
            data, peer = sock.recvfrom(512)
            reply = behave(data.decode())
            if reply:
                sock.sendto(reply.encode(), peer)
    threading.Thread(target=run, daemon=True).start()
    return sock.getsockname()[1]


def udp(port, **spec):
    return probe.probe(dict({"target": "127.0.0.1", "port": port, "proto": "udp",
                             "expect_name": "alpha", "timeout": SHORT}, **spec))


def test_udp_nonce_exchange_with_vnets_listener(listener):
    r = udp(listener)
    assert r["observed"] == "pass" and r["detail"] == "nonce echoed by alpha (seen from 127.0.0.1)"
    assert udp(listener, expect_name="beta") == {
        "observed": "error", "detail": "leak: answered by alpha instead of beta", "reached": True}


def test_udp_refused_by_icmp_port_unreachable_is_a_failure():
    assert udp(free_port(socket.SOCK_DGRAM)) == {"observed": "fail", "refused": True,
                                                 "detail": "refused (ICMP port unreachable)"}


def test_udp_replayed_nonce_is_an_error():
    port = udp_server(lambda line: "VNET 0000000000000000 alpha\n")
    r = udp(port)
    assert r["observed"] == "error" and "stale or replayed" in r["detail"]


def test_udp_silence_is_an_error_unless_a_positive_control_saw_the_listener(listener):
    port = udp_server(lambda line: None)
    silent = udp(port)
    assert silent["observed"] == "error" and silent["silent"] and "ambiguous" in silent["detail"]
    assert probe.settle_silence(silent, [{"observed": "fail"}])["observed"] == "error"
    settled = probe.settle_silence(silent, [{"observed": "pass"}])
    assert settled["observed"] == "fail" and "listener is up" in settled["detail"]
    # run_all settles within its batch: the control is a probe of the same listener
    results = probe.run_all([
        {"id": "0", "target": "127.0.0.1", "port": port, "proto": "udp", "timeout": SHORT},
        {"id": "1", "target": "127.0.0.1", "port": port, "proto": "udp", "timeout": SHORT,
         "confirmed_by": ["2"]},
        {"id": "2", "target": "127.0.0.1", "port": listener, "proto": "udp",
         "expect_name": "alpha", "timeout": SHORT}])
    assert [results[i]["observed"] for i in "012"] == ["error", "fail", "pass"]


def test_probes_run_concurrently(listener):
    specs = [{"id": str(i), "target": "127.0.0.1", "port": listener, "expect_name": "alpha",
              "proto": ("tcp", "udp")[i % 2]} for i in range(20)]
    results = probe.run_all(specs)
    assert len(results) == 20 and all(r["observed"] == "pass" for r in results.values())


def test_binding_to_a_missing_nic_is_an_error():
    for proto in ("tcp", "udp"):
        r = probe.probe({"target": "127.0.0.1", "port": 1, "proto": proto,
                         "bind_mac": "02:00:00:00:00:99"})
        assert r["observed"] == "error"


# --- the connect timeout derived from the batch's measured round trips (issue 15) ---

def unanswered_port():
    """A TCP port whose SYNs go unanswered (its accept queue is full): a connect there can only
    time out, like a path that drops packets without a refusal."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    filler = socket.create_connection(("127.0.0.1", port))
    return port, (server, filler)


def test_the_timeout_is_derived_from_the_slowest_passing_round_trip():
    trips = probe.RoundTrips()
    spec = {"target": "t", "port": 1, "timeout": 3.0, "rtt_timeout": True}
    assert trips.timeout(spec)[0] == 3.0                  # nothing measured: the fixed one
    assert "no passing probe" in trips.timeout(spec)[1]["basis"]
    trips.add(0.001, {"target": "a", "port": 7})
    assert trips.timeout(spec)[0] == probe.RTT_FLOOR      # a fast path: the floor holds
    trips.add(0.4, {"target": "b", "port": 7})
    seconds, why = trips.timeout(spec)
    assert seconds == 0.4 * probe.RTT_MULTIPLIER and why["rtt_of"] == "b:7"
    trips.add(5.0, {"target": "c", "port": 7})
    assert trips.timeout(spec)[0] == probe.RTT_CEILING
    assert trips.timeout({"timeout": 3.0})[0] == 3.0      # a probe that did not ask: fixed


def test_a_negative_probe_ends_at_the_derived_timeout_and_says_why(listener):
    port, keep = unanswered_port()
    specs = [{"id": "0", "target": "127.0.0.1", "port": listener, "expect_name": "alpha",
              "rtt_timeout": True},
             {"id": "1", "target": "127.0.0.1", "port": port, "expect_name": "beta",
              "timeout": 30.0, "rtt_timeout": True}]
    results = probe.run_all(specs)
    assert results["0"]["observed"] == "pass" and "connect_ms" in results["0"]
    negative = results["1"]
    assert negative["observed"] == "fail", negative
    assert negative["connect_timeout"]["seconds"] == probe.RTT_FLOOR
    assert negative["connect_timeout"]["rtt_of"] == f"127.0.0.1:{listener}"
    assert negative["detail"].startswith(f"timed out after {probe.RTT_FLOOR:g} s")
    for s in keep:
        s.close()


def test_udp_silence_waits_the_derived_time_and_says_so(listener):
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))                 # bound, never answers: no ICMP either
    specs = [{"id": "0", "target": "127.0.0.1", "port": listener, "expect_name": "alpha",
              "rtt_timeout": True},
             {"id": "1", "target": "127.0.0.1", "port": silent.getsockname()[1], "proto": "udp",
              "expect_name": "beta", "timeout": 30.0, "rtt_timeout": True}]
    results = probe.run_all(specs)
    assert results["1"]["silent"] and "round trip" in results["1"]["detail"]
    assert results["1"]["connect_timeout"]["seconds"] == probe.RTT_FLOOR
    silent.close()


def test_the_cell_json_carries_the_timeout_it_was_given():
    from provisioner.verify.run import record
    cell = Check("vm_to_host", "net", "internal", "vm1", "host", "fail", "guest:vm1",
                 {"target": "10.0.0.1", "port": 1})
    why = {"seconds": 1.5, "basis": "10 x the 1.0 ms round trip of ..."}
    record([cell], {"vm1": {"probes": {"0": {"observed": "fail", "detail": "timed out after 1.5 s",
                                             "connect_timeout": why}},
                            "drivers": {}, "forwards": {}}}, {})
    assert cell.as_dict()["connect_timeout"] == why


def test_the_module_reports_where_its_own_seconds_went(tmp_path):
    import json
    import subprocess
    import sys

    from provisioner.resources import data_dir
    args = tmp_path / "args.json"
    args.write_text(json.dumps({"probes": [], "nic_macs": []}))
    out = subprocess.run([sys.executable, str(data_dir("playbooks") / "library" / "vnet_probe.py"),
                          str(args)], capture_output=True, text=True, check=True).stdout
    timing = json.loads(out)["timing"]
    assert set(timing) == {"python_start_s", "probes_s", "forwards_wait_s", "baked", "warm"}
    assert timing["python_start_s"] >= 0 and timing["probes_s"] >= 0
    assert timing["baked"] is False and timing["warm"] is False  # its source, as Ansible sends it


def test_the_module_imports_nothing_heavy_on_the_guest():
    """Every import is a cost on a TCG guest's Python start (the verify breakdown's
    python_start_s): the nonces come from os.urandom, not the secrets module."""
    import subprocess
    import sys

    from provisioner.resources import data_dir
    path = data_dir("playbooks") / "library" / "vnet_probe.py"
    loaded = subprocess.run(
        [sys.executable, "-c", "import importlib.util as u, sys; "
         f"s = u.spec_from_file_location('p', {str(path)!r}); s.loader.exec_module("
         "u.module_from_spec(s)); print(' '.join(sys.modules))"],
        capture_output=True, text=True, check=True).stdout.split()
    assert not {"secrets", "hashlib", "random", "hmac"} & set(loaded)
    assert len(probe.token_hex(8)) == 16 and probe.token_hex(8) != probe.token_hex(8)


# --- a prober that got no CPU past its deadline (a slow TCG guest with many probe threads) ----

class StarvedClock:
    """time.monotonic, jumped forward the moment the answer is already there: the probe's
    thread did not run between the answer's arrival and its deadline."""
    def __init__(self):
        self.jump, self.real = 0.0, probe.time.monotonic

    def __call__(self):
        return self.real() + self.jump


def test_a_udp_answer_that_waited_for_a_starved_prober_still_counts(listener, monkeypatch):
    clock = StarvedClock()

    class Starved(probe.Sock):
        def recv(self, size, *args):     # the answer is there, but the timeout fired first
            if clock.jump == 0.0 and self.gettimeout():
                assert __import__("select").select([self], [], [], 5)[0]
                clock.jump = 100.0
                raise socket.timeout("timed out")
            return super().recv(size, *args)

    monkeypatch.setattr(probe.time, "monotonic", clock)
    monkeypatch.setattr(probe, "Sock", Starved)
    r = probe.probe({"target": "127.0.0.1", "port": listener, "proto": "udp",
                     "expect_name": "alpha", "timeout": 2.0})
    assert clock.jump == 100.0 and r["observed"] == "pass", r


def test_a_tcp_connection_made_while_the_prober_starved_is_not_a_timeout(listener, monkeypatch):
    clock = StarvedClock()
    select_module = probe.select
    real_select = select_module.select

    def starved_select(r, w, x, timeout=None):   # connected, but seen only past the deadline
        if w and clock.jump == 0.0:
            assert real_select(r, w, x, 5)[1]
            clock.jump = 100.0
            return [], [], []
        return real_select(r, w, x, timeout)

    monkeypatch.setattr(probe.time, "monotonic", clock)
    monkeypatch.setattr(select_module, "select", starved_select)
    r = probe.probe({"target": "127.0.0.1", "port": listener, "expect_name": "alpha",
                     "timeout": 2.0, "rtt_timeout": True})
    assert clock.jump == 100.0 and r["observed"] == "pass", r


def test_a_hold_waits_for_each_origin_by_its_exact_name():
    """VM names hold '-': the nonce of web-2 is not one of origin web's."""
    hold = probe.ForwardHold({"origins": ["web", "host"]}, "b")
    hold._note("web-2-0123456789abcdef")
    hold._note("host-0123456789abcdef")
    assert not hold.done.is_set()
    hold._note("web-0123456789abcdef")
    assert hold.done.is_set()


def test_a_started_thread_counts_at_once_so_the_warm_copy_never_forks_beside_it():
    """_thread counts a thread only once it first runs: stay_warm could fork beside one that
    was started and had not run yet."""
    fresh = probe_module()                   # a count of its own: other tests' threads end
    gate = fresh._thread.allocate_lock()
    gate.acquire()
    t = fresh.Thread(target=gate.acquire)
    t.start()
    assert fresh.threads_alive() == 1
    gate.release()
    t.join()
    assert fresh.threads_alive() == 0


def test_bad_json_says_what_is_wrong_in_a_fresh_interpreter():
    """Python 3.11's C scanner raised SystemError where json.decoder was not loaded yet."""
    import subprocess
    import sys

    from provisioner.resources import data_dir

    source = str(data_dir("playbooks") / "library" / "vnet_probe.py")
    code = ("import importlib.util as u, sys\n"
            f"s = u.spec_from_file_location('p', {source!r})\n"
            "m = u.module_from_spec(s); s.loader.exec_module(m)\n"
            "for bad in ('{\"a\": 1,}', '\"\\x01\"'):\n"
            "    try:\n        m.from_json(bad)\n"
            "    except ValueError as e:\n        print(type(e).__name__)\n")
    out = subprocess.run([sys.executable, "-I", "-c", code], capture_output=True, text=True)
    assert out.stdout.split() == ["JSONDecodeError", "JSONDecodeError"], out


def test_a_connect_that_resent_its_syn_gives_the_kernels_round_trip_not_its_second():
    """A passing probe whose first SYN was lost connected after ~1 s: 10 x that made every
    negative cell of its batch wait the 10 s ceiling (a tunnels lab's verify went 7.8 -> 14.9 s).
    The kernel's RTT measure (TCP_INFO) is the path's round trip."""
    def info(rtt_us, resent):
        raw = bytearray(104)
        raw[68:72] = rtt_us.to_bytes(4, sys.byteorder)
        raw[100:104] = resent.to_bytes(4, sys.byteorder)
        return bytes(raw)

    class Fake:
        def __init__(self, raw):
            self.raw = raw

        def getsockopt(self, level, option, size):
            assert (level, option, size) == (socket.IPPROTO_TCP, probe.TCP_INFO, 104)
            return self.raw
    assert probe.round_trip(Fake(info(36400, 1)), 1.0149) == pytest.approx(0.0364)
    assert probe.round_trip(Fake(info(36400, 0)), 0.040) == 0.040       # nothing resent
    with socket.socket() as s:             # a real socket's TCP_INFO has that layout
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        with socket.create_connection(s.getsockname()) as c:
            raw = c.getsockopt(socket.IPPROTO_TCP, probe.TCP_INFO, 104)
            assert len(raw) == 104 and int.from_bytes(raw[68:72], sys.byteorder) > 0   # rtt
            assert int.from_bytes(raw[100:104], sys.byteorder) == 0           # nothing resent
            assert probe.round_trip(c, 0.5) == 0.5
