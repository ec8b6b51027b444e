"""Port forwards' transport (issue 10 point 5, issue 11 point 5): UDP forwards plan on both
backends and both NAT modes, and every forward listens on its own address: loopback by default,
the lab's host_ip when named, the sandbox uplink inside a sandbox."""
import socket

import pytest

from provisioner import forwarding, labfile
from provisioner.drivers.libvirt_render import LibvirtRenderer
from provisioner.drivers.vbox_render import VirtualBoxRenderer
from provisioner.errors import Unsupported
from provisioner.state import Target

from .test_vbox_render import _apply_and_destroy, fake_fast  # noqa: F401 - the stand-in


def lab(mode: str, **forward) -> dict:
    net = {"name": "n1", "mode": mode, "port_forwards": [
        {"name": "dns", "proto": "udp", "host_port": 5353, "vm": "a", "guest_port": 53, **forward}]}
    if mode == "natnetwork":
        net["subnet"] = "192.168.150.0/24"
    return {"name": "t", "networks": [net], "vms": [
        {"name": "a", "nics": [{"network": "n1", "mac": "52:54:00:aa:bb:01"}]},
        {"name": "b", "nics": [{"network": "n1", "mac": "52:54:00:aa:bb:02"}]}]}


def test_a_udp_forward_on_a_libvirt_natnetwork_goes_to_the_port_proxy():
    plan = LibvirtRenderer().plan(labfile.resolve(lab("natnetwork")))   # was Unsupported
    assert plan.extra["proxies"] == [{"name": "dns", "vm": "a", "proto": "udp",
                                      "host_ip": "127.0.0.1", "host_port": 5353,
                                      "guest_ip": "192.168.150.10", "guest_port": 53}]
    argv = forwarding.proxy_argv(forwarding.Path("/s/labs/x/t"), plan.extra["proxies"])
    assert argv[1:] == ["-I", str(forwarding.PROXY_SCRIPT), "--owner", "/s/labs/x/t",
                        "udp:127.0.0.1:5353=192.168.150.10:53"]


class FakeMonitor:
    def __init__(self):
        self.sent = []

    def hmp(self, domain, command):
        self.sent.append(command)
        return ""


@pytest.mark.parametrize("host_ip, bound", [(None, "127.0.0.1"), ("192.0.2.5", "192.0.2.5")])
def test_qemu_hostfwd_binds_the_forwards_address_for_udp_and_tcp(host_ip, bound):
    data = lab("nat", **({"host_ip": host_ip} if host_ip else {}))
    data["networks"][0]["port_forwards"].append(
        {"name": "ssh", "proto": "tcp", "host_port": 2222, "vm": "b", "guest_port": 22})
    plan = LibvirtRenderer().plan(labfile.resolve(data))
    monitor = FakeMonitor()
    forwarding.add_hostfwds(monitor, plan.extra["hostfwd"])
    assert [c for c in monitor.sent if c.startswith("hostfwd_add")] == [
        f"hostfwd_add hostnet0 udp:{bound}:5353-:53", "hostfwd_add hostnet0 tcp:127.0.0.1:2222-:22"]


def test_in_a_sandbox_forwards_bind_its_uplink_address():
    from provisioner import sandbox
    sb = sandbox.describe("h2t")
    plan = LibvirtRenderer().plan(labfile.resolve(lab("natnetwork"), labfile.sandbox_defaults(sb)))
    assert plan.extra["proxies"][0]["host_ip"] == sb.host_uplink_ip == "203.0.113.2"


@pytest.mark.parametrize("mode", ["nat", "natnetwork"])
def test_virtualbox_udp_forwards_bind_loopback_and_run_on_the_stand_in(fake_fast, mode):  # noqa: F811
    plan = VirtualBoxRenderer().plan(labfile.resolve(lab(mode)))
    state = _apply_and_destroy(fake_fast, plan)
    if mode == "natnetwork":
        rule = state["natnets"]["vnet-t-n1"]["forwards"]["dns"]
    else:
        vm = next(v for v in state["vms"].values() if v["name"] == "vnet-t-a")
        rule = vm["nics"]["1"]["natpf"]["dns"]
    assert (rule["proto"], rule["host_ip"], rule["host_port"], rule["guest_port"]) == \
        ("udp", "127.0.0.1", 5353, 53)


def test_host_port_check_uses_the_bind_address():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        forwards = [{"proto": "tcp", "host_ip": "127.0.0.1", "host_port": port}]
        with pytest.raises(Unsupported, match=f"tcp/127.0.0.1:{port} \\(already in use\\)"):
            forwarding.check_host_ports(Target(uri="qemu:///system"), "t", forwards)
        # the same port on another loopback address is free: nothing listens everywhere
        forwarding.check_host_ports(Target(uri="qemu:///system"), "t",
                                    [dict(forwards[0], host_ip="127.0.0.2")])
    with pytest.raises(Unsupported, match="not an address of this host"):
        forwarding.check_host_ports(Target(uri="qemu:///system"), "t", [
            {"proto": "udp", "host_ip": "192.0.2.99", "host_port": 40000}])
