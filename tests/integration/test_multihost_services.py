"""Forwards and tunnels across two sandbox hosts (issue 13), hv1 and hv3 of one `--hosts 3`
sandbox: hv3 is reached in its own network namespace, where forwards are served and taps
captured (hv2 plays a remote machine over SSH, which serves no forward yet).

Forwards: a natnetwork homed on hv3 with a TCP and a UDP forward to b (on hv3) and a TCP forward
to a (on hv1, across the stretch), and a nat NIC on b with a QEMU hostfwd. Everything is served
on hv3: the port proxy runs in hv3's namespace and listens on hv3's address, the hostfwd is b's
QEMU's; host->VM is probed from hv3 and Internet->VM at hv3's address; the whole matrix is
green. Negative controls: hv3's proxy stopped by its PID turns exactly the proxied forward cells
red (the hostfwd and every other cell stay green); then b's QEMU on hv3 dropping its hostfwd
turns the hostfwd's cells red too, and still no other cell.

Tunnels: a VXLAN tunnel from b (hv3) to a (hv1) over an internal network stretched between the
hosts: green, its MTU set in the guests (1450 less VXLAN's 50), its encapsulation proven on the
wire by a capture on b's tap in hv3's namespace. Negative control: the lab's VXLAN port dropped
on hv3's underlay turns the tunnel and encapsulation cells red (and the VM<->VM cells, which
cross the same underlay), nothing else."""
import os

import pytest

from provisioner.drivers.base import driver_class
from provisioner.drivers.libvirt.connection import LibvirtDriver
from provisioner.host import forwarding, netns, procs, runner, sandbox, sandbox_hosts, state
from provisioner.lab import loader as labfile
from provisioner.host.state import Target
from provisioner.lab.model import Backend
from provisioner.verify.run import matrix_text, verify

from .conftest import hosts_sandbox, iptables_rule, vxlan_drop_rule

pytestmark = pytest.mark.integration

HOSTS = [{"name": "hv1"}, {"name": "hv3"}]
FORWARDS_LAB = {
    "name": "fwh", "hosts": HOSTS,
    "networks": [{"name": "lan", "mode": "natnetwork", "subnet": "10.74.0.0/24", "home": "hv3",
                  "port_forwards": [
                      {"name": "web", "proto": "tcp", "host_port": 18281, "vm": "b",
                       "guest_port": 8080},
                      {"name": "dns", "proto": "udp", "host_port": 18253, "vm": "b",
                       "guest_port": 5353},
                      {"name": "far", "proto": "tcp", "host_port": 18282, "vm": "a",
                       "guest_port": 8081}]},
                 {"name": "out", "mode": "nat", "port_forwards": [
                     {"name": "qfwd", "proto": "tcp", "host_port": 18283, "vm": "b",
                      "guest_port": 8082}]}],
    "vms": [{"name": "a", "host": "hv1", "nics": [{"network": "lan"}]},
            {"name": "b", "host": "hv3", "nics": [{"network": "lan"}, {"network": "out"}]}]}
TUNNEL_LAB = {
    "name": "tnh", "hosts": HOSTS,
    "networks": [{"name": "lan", "mode": "internal", "subnet": "10.75.0.0/24"}],
    "vms": [{"name": "a", "host": "hv1", "nics": [{"network": "lan"}]},
            {"name": "b", "host": "hv3", "nics": [{"network": "lan"}]}],
    # the near end (whose tap is captured) is b, on hv3
    "tunnels": [{"name": "vx1", "type": "vxlan", "id": 4242, "subnet": "10.99.0.0/24",
                 "endpoints": ["b", "a"]}]}
BLOCK = vxlan_drop_rule("fw-test-block-lab-vxlan")


def say(message):
    print(message, flush=True)


def red(result):
    return {(c["kind"], c["source"], c["target"]) for c in result["checks"] if not c["ok"]}


@pytest.fixture(scope="module")
def two_hosts(tiny_image):
    with hosts_sandbox("fws", 3, say) as sb:
        yield sb


def _up(sb, data):
    lab = labfile.resolve(data, sandbox.lab_defaults(sb.name))
    cls = driver_class(Backend.LIBVIRT)
    target = cls.target_for(sb.name, None)
    driver = cls(target)
    driver.up(lab, progress=say)
    return lab, target, driver


def test_forwards_are_served_on_the_home_host_and_probed_there(two_hosts):
    sb = two_hosts
    hv3 = sandbox_hosts.host_view(sb, 3)
    hv3_ip = str(sandbox_hosts.underlay_ip(sb, 3))
    lab, target, driver = _up(sb, FORWARDS_LAB)
    lab_dir = state.lab_dir(target, lab.name)
    try:
        # the proxy is hv3's: recorded by host, running in hv3's namespace, on hv3's address
        pid = forwarding.proxy_pid(lab_dir, "hv3")
        assert pid and forwarding.proxy_pid(lab_dir, "hv1") is None
        assert os.stat(f"/proc/{pid}/ns/net").st_ino == netns.netns_inode(hv3.host_netns)
        status = driver.status(lab.name)
        served = {f["name"]: (f["host"], f["listen"], f["served_by"]) for f in status["forwards"]}
        assert served["web"] == ("hv3", f"{hv3_ip}:18281", f"vnet port proxy (pid {pid})")
        assert served["qfwd"][0] == "hv3" and served["qfwd"][2] == "QEMU hostfwd of b"

        result = verify(lab, target, say)
        say(matrix_text(result))
        cells = result["checks"]
        assert result["ok"], [c for c in cells if not c["ok"]]
        forwards = [c for c in cells if c["kind"] == "port_forward"]
        assert {(c["source"], c["served_on"]) for c in forwards} == {("host.hv3", "hv3"),
                                                                      ("internet", "hv3")}
        assert all(f"via {hv3_ip}:" in c["target"] for c in forwards)
        assert len(forwards) == 8 and any(c["hosts"] == "hv3->hv1" for c in forwards)
        proxied = {(c["kind"], c["source"], c["target"]) for c in forwards
                   if c["network"] == "lan"}
        assert len(proxied) == 6

        # Negative control: hv3's proxy stopped by its PID; exactly its forwards turn red.
        procs.stop(lab_dir / forwarding.proxy_record_name("hv3"), say)
        assert not procs.pid_alive(pid)
        stopped = verify(lab, target, say)
        say(matrix_text(stopped))
        assert red(stopped) == proxied, red(stopped) ^ proxied

        # ... and b's QEMU (on hv3) drops its hostfwd: now every forward cell is red, no other.
        where = state.read(target, lab.name)["hosts"]["hv3"]
        qemu = LibvirtDriver(Target(uri=where["uri"], netns=where["netns"]))
        reply = qemu.hmp("vnet-fwh-b", f"hostfwd_remove hostnet1 tcp:{hv3_ip}:18283")
        assert "host forwarding rule for" in reply and "removed" in reply, reply
        unserved = verify(lab, target, say)
        say(matrix_text(unserved))
        every = {(c["kind"], c["source"], c["target"]) for c in forwards}
        assert red(unserved) == every, red(unserved) ^ every
    finally:
        driver.destroy(lab.name, progress=say)
    assert forwarding.proxy_records(lab_dir) == []


def test_a_vxlan_tunnel_between_hosts_is_green_on_the_wire_and_red_without_the_underlay(
        two_hosts):
    sb = two_hosts
    hv3 = sandbox_hosts.host_view(sb, 3)
    lab, target, driver = _up(sb, TUNNEL_LAB)
    try:
        said = []
        result = verify(lab, target, lambda m: (said.append(m), say(m)))
        say(matrix_text(result))
        cells = result["checks"]
        assert result["ok"], [c for c in cells if not c["ok"]]
        tunnel = [c for c in cells if c["kind"] in ("tunnel", "encapsulation")]
        assert {c["kind"] for c in tunnel} == {"tunnel", "encapsulation"} and len(tunnel) == 3
        assert all("MTU 1400" in c["target"] for c in tunnel if c["kind"] == "tunnel")
        encap = next(c for c in tunnel if c["kind"] == "encapsulation")
        assert encap["observed"] == "pass" and os.path.getsize(encap["pcap"]) > 0
        # the capture ran on the near end's tap, in hv3's namespace
        assert any("capturing the underlay b:0 (tap " in m for m in said), said
        record = state.read(target, lab.name)
        key, _ = state.ssh_key(target, lab.name)
        mtu = runner.run(netns.netns_argv(target.netns, [
            "ssh", "-i", str(key), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
            f"root@{record['mgmt']['b']}", "cat /sys/class/net/vx1/mtu"]), timeout=120).stdout
        assert mtu.strip() == "1400"

        # Negative control: the lab's VXLAN port dropped on hv3's underlay.
        with iptables_rule(hv3.host_netns, BLOCK):
            blocked = verify(lab, target, say)
            say(matrix_text(blocked))
        crossing = {(c["kind"], c["source"], c["target"]) for c in cells
                    if c["kind"] in ("tunnel", "encapsulation", "vm_to_vm")}
        assert len(crossing) == 5
        assert red(blocked) == crossing, red(blocked) ^ crossing
    finally:
        driver.destroy(lab.name, progress=say)
