"""No process outlives its lab (issue 10, point 6): the port proxy is recorded when spawned and
stopped when `up` fails after it started, by `destroy` (even with corrupt state) and by
`sandbox down`; the verifier's listeners stop even when starting them fails. Real proxy
processes on 127.0.0.1, the hypervisor faked; no root, no namespace."""
import socket
from pathlib import Path
from types import SimpleNamespace

import pytest

from provisioner.host import forwarding, procs, sandbox, state
from provisioner.drivers.libvirt import lifecycle
from provisioner.lab.defaults import default_lab
from provisioner.errors import HypervisorError, VnetError
from provisioner.lab.loader import resolve
from provisioner.host.state import Target

from .lab_fakes import FakeDriver

TARGET = Target(uri="qemu:///system")


@pytest.fixture
def state_root(tmp_path, monkeypatch):
    monkeypatch.setenv("VNET_STATE_DIR", str(tmp_path / "state"))
    return tmp_path / "state"


def free_port_base() -> int:
    """A port_base whose SSH (2221+) and echo (7001+) ports are free on loopback."""
    for base in range(40000, 50000, 97):
        try:
            for port in (2221 + base, 2222 + base, 7001 + base, 7002 + base):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
    pytest.skip("no free loopback ports for the test lab")


def proxy_rules(lab_dir: Path) -> list[dict]:
    port = free_port_base() + 7001
    return [{"name": "echo", "vm": "vm1", "proto": p, "host_ip": "127.0.0.1", "host_port": port,
             "guest_ip": "192.0.2.10", "guest_port": 7} for p in ("tcp", "udp")]


def test_a_failure_after_the_proxy_started_leaves_no_proxy(state_root, monkeypatch):
    from provisioner.host import accel
    from provisioner import doctor
    from provisioner.guest import images
    seen = {}
    monkeypatch.setattr(doctor, "preflight", lambda lab, target: None)
    monkeypatch.setattr(images, "build_tiny", lambda **kw: SimpleNamespace(
        kernel="/k", initrd="/i", rootdisk="/r", cmdline_base="console=ttyS0"))
    monkeypatch.setattr(accel, "choose", lambda image, progress: "tcg")
    monkeypatch.setattr(state, "ssh_key", lambda target, lab: (Path("/k"), "ssh-ed25519 AAAA"))
    monkeypatch.setattr(lifecycle, "LibvirtDriver", FakeDriver)

    def boot_fails(lab, target, driver, lab_dir, progress, **kw):
        seen["pid"] = forwarding.proxy_pid(lab_dir)      # the proxy runs by now
        raise HypervisorError("injected: VM vm1 stopped while booting")
    monkeypatch.setattr(lifecycle, "wait_for_addresses", boot_fails)
    lab = resolve(default_lab("natnetwork", name="pfail", port_base=free_port_base()))
    with pytest.raises(HypervisorError, match="injected"):
        lifecycle.up(lab, TARGET, lambda m: None)
    assert seen["pid"], "the proxy never started: the test proves nothing"
    assert not procs.pid_alive(seen["pid"])
    assert not (state.lab_dir(TARGET, "pfail") / forwarding.PROXY_PID).exists()


def test_a_proxy_that_does_not_come_up_is_stopped_not_left(state_root, tmp_path):
    lab_dir = tmp_path / "lab"
    lab_dir.mkdir()
    rules = proxy_rules(lab_dir)
    with socket.socket() as blocker:       # its port taken: the proxy exits before "ready"
        blocker.bind(("127.0.0.1", rules[0]["host_port"]))
        blocker.listen()
        with pytest.raises(VnetError, match="did not start"):
            forwarding.start_proxy(TARGET, lab_dir, rules)
    assert not (lab_dir / forwarding.PROXY_PID).exists()


def test_destroy_stops_the_proxy_and_removes_the_lab_despite_corrupt_state(state_root,
                                                                           monkeypatch):
    monkeypatch.setattr(lifecycle, "LibvirtDriver", FakeDriver)
    lab_dir = state.save(TARGET, "broken", {"lab": "broken"})      # as `up` makes it
    pid = forwarding.start_proxy(TARGET, lab_dir, proxy_rules(lab_dir))
    (lab_dir / "lab.json").write_text('{"lab": "broken", "vms": [')      # cut off mid-write
    with pytest.raises(state.CorruptState, match="lab.json is corrupt"):
        state.read(TARGET, "broken")
    lifecycle.destroy("broken", TARGET, lambda m: None)
    assert not procs.pid_alive(pid)
    assert not lab_dir.exists()


def test_destroy_with_a_corrupt_pid_file_says_so_and_removes_the_lab(state_root, monkeypatch):
    monkeypatch.setattr(lifecycle, "LibvirtDriver", FakeDriver)
    lab_dir = state.save(TARGET, "junkpid", {"lab": "junkpid"})
    (lab_dir / forwarding.PROXY_PID).write_text("not a pid\n")
    said = []
    lifecycle.destroy("junkpid", TARGET, said.append)
    assert any("portproxy.pid is corrupt" in m and "no process was signalled" in m for m in said)
    assert not lab_dir.exists()


def test_sandbox_down_stops_the_proxies_of_its_labs(state_root):
    target = Target(uri="qemu:///system", sandbox="h2p")     # no namespace: the proxy runs here
    lab_dir = state.save(target, "lab1", {"lab": "lab1"})
    pid = forwarding.start_proxy(target, lab_dir, proxy_rules(lab_dir))
    assert procs.pid_alive(pid)
    sandbox.down("h2p", progress=lambda m: None)
    assert not procs.pid_alive(pid)
    assert not lab_dir.exists()


def test_verifier_listeners_that_fail_to_start_are_stopped(state_root, tmp_path, monkeypatch):
    """The listeners start inside the try that stops them: when the second one cannot start,
    verify() fails and the first one is stopped too."""
    from provisioner.verify import run as verify
    busy = socket.socket()
    busy.bind(("127.0.0.2", 0))
    busy.listen()
    port = busy.getsockname()[1]
    spawned = []
    real_spawn = procs.spawn
    monkeypatch.setattr(procs, "spawn", lambda *a, **kw: spawned.append(real_spawn(*a, **kw))
                        or spawned[-1])
    monkeypatch.setattr(verify.random, "randint", lambda a, b: port)
    lab = resolve(default_lab("hostonly", vms=1, name="lst"))
    inventory = verify.Inventory(hosts={}, mgmt_host_ip="192.0.2.1", work_dir=tmp_path)
    try:
        with pytest.raises(VnetError, match="listener on 127.0.0.2 did not start"):
            verify.verify(lab, TARGET, lambda m: None, inventory=inventory,
                          sources=verify.ProbeSources(
                              listener_addresses=lambda *a: ["127.0.0.1", "127.0.0.2"]))
    finally:
        busy.close()
    assert len(spawned) == 2, "the first listener never ran: the test proves nothing"
    assert not any(procs.pid_alive(p.pid) for p in spawned)
    assert not list(tmp_path.glob("listener-*.pid"))


def test_outside_a_sandbox_listeners_bind_loopback_and_lab_addresses_only():
    from provisioner.verify import listeners
    cells = [SimpleNamespace(kind="vm_to_host", probe={"target": t, "port": 20001})
             for t in ("10.0.2.2", "127.0.0.1", "192.0.2.77")] + \
        [SimpleNamespace(kind="host_to_vm", probe={"target": "127.0.0.3", "port": 7})]
    # 10.0.2.2 and 192.0.2.77 are no addresses of this host (QEMU's NAT maps 10.0.2.2 to
    # loopback); never the wildcard
    assert listeners.listener_addresses(TARGET, cells, 20001) == ["127.0.0.1"]
    cells.append(SimpleNamespace(kind="vm_to_host", probe={"target": "127.0.0.5", "port": 20001}))
    assert listeners.listener_addresses(TARGET, cells, 20001) == ["127.0.0.1", "127.0.0.5"]
    in_sandbox = Target(uri="x", sandbox="s", netns="vnet-s-host")
    assert listeners.listener_addresses(in_sandbox, cells, 20001) == ["0.0.0.0"]


def test_a_proxy_recorded_by_an_older_vnet_is_still_found_and_stopped(tmp_path):
    """Older vnet wrote a bare PID and ran `python -m provisioner.portproxy`."""
    import subprocess
    import sys
    import time
    old = subprocess.Popen([sys.executable, "-I", "-c", "import time; time.sleep(300)",
                            "-m", "provisioner.portproxy"])
    try:
        while not procs.proc_argv(old.pid):     # empty for a moment after exec
            time.sleep(0.01)
        (tmp_path / forwarding.PROXY_PID).write_text(str(old.pid))
        assert forwarding.proxy_pid(tmp_path) == old.pid
        forwarding.stop_proxy(tmp_path)
        assert not procs.pid_alive(old.pid)
    finally:
        old.kill()
        old.wait()


def test_sandbox_down_with_a_corrupt_pid_file_says_so_and_removes_its_state(state_root):
    box = sandbox.describe("h2c")
    box.state_dir.mkdir(parents=True)
    (box.state_dir / "sandbox.json").write_text("{}\n")      # vnet made this directory
    (box.state_dir / "http.pid").write_text("\x00\x01garbage")
    said = []
    sandbox.down("h2c", progress=said.append)
    assert any("http.pid is corrupt" in m for m in said), said
    assert not box.state_dir.exists()
