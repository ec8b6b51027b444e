"""The impairment cell's throughput measurement against a real shaper, without guests (issue
18): two network namespaces joined by a veth pair, vnet's listener in one, the guest's probe
code (vnet_probe.measure) in the other, and the very tbf argv libvirt puts on a tap
(drivers/libvirt/impair.tbf_argv). Both directions are measured: toward the "guest" (libvirt
shapes the tap's egress) and from it (VirtualBox's bandwidth groups limit what the VM sends,
which cannot run here). Unshaped, the declared rate is out of tolerance: its negative control;
and where the "guest" cannot carry much more than the declared rate anyway (its management path,
the control, shaped as well), the rate is too small to tell."""
import json
import shutil
import sys
import uuid

import pytest

from provisioner.drivers.libvirt.impair import tbf_argv
from provisioner.host import procs, runner
from provisioner.host.netns import netns_argv
from provisioner.lab.model import Backend, Impairment
from provisioner.resources import data_dir
from provisioner.verify import impairment
from provisioner.verify.run import listener_argv

pytestmark = pytest.mark.integration
GUEST_MAC = "52:54:00:18:18:02"
PORT = 24518
MGMT, MGMT_GUEST = "10.250.19.1", "10.250.19.2"


@pytest.fixture
def link(tmp_path):
    import os

    if os.geteuid() != 0 or not shutil.which("ip") or not shutil.which("tc"):
        pytest.skip("needs root, ip and tc (iproute2): makes network namespaces and a tbf qdisc")
    tag = "im" + uuid.uuid4().hex[:6]
    guest, host = f"{tag}g", f"{tag}h"
    made = []
    record = tmp_path / "listener.pid"
    try:
        for ns in (guest, host):
            runner.run(["ip", "netns", "add", ns])
            made.append(ns)
        runner.run(["ip", "link", "add", f"{tag}G", "address", GUEST_MAC, "netns", guest,
                    "type", "veth", "peer", "name", f"{tag}H", "netns", host])
        # the "management path": a second pair, the route's choice for the baseline
        runner.run(["ip", "link", "add", f"{tag}M", "netns", guest,
                    "type", "veth", "peer", "name", f"{tag}N", "netns", host])
        for ns, dev, ip in ((guest, f"{tag}G", "10.250.18.2/30"), (host, f"{tag}H", "10.250.18.1/30"),
                            (guest, f"{tag}M", f"{MGMT_GUEST}/30"), (host, f"{tag}N", f"{MGMT}/30")):
            runner.run(["ip", "-n", ns, "addr", "add", ip, "dev", dev])
            runner.run(["ip", "-n", ns, "link", "set", dev, "up"])
        script = str(data_dir("playbooks") / "library" / "vnet_probe.py")
        log = tmp_path / "listener.log"
        procs.spawn(netns_argv(host, listener_argv(script, PORT, "host", "0.0.0.0")), record,
                    script, log_path=str(log), cwd="/")
        import time

        deadline = time.monotonic() + 10
        while "ready" not in (log.read_text() if log.exists() else ""):
            assert time.monotonic() < deadline, "the listener did not start"
            time.sleep(0.05)
        yield {"guest": guest, "host": host, "tag": tag}
    finally:
        if record.exists():
            procs.stop(record, lambda m: None)
        for ns in made:
            runner.run(["ip", "netns", "delete", ns], check=False)


def _measure(link, backend, rate):
    spec = {"id": "0", "target": "10.250.18.1", "port": PORT, "expect_name": "host",
            "bind_mac": GUEST_MAC, "timeout": 3.0,
            "impair": impairment.probe_for(Impairment(rate_mbit=rate), backend, MGMT)}
    # a process of its own in the namespace (`ip netns exec` mounts that namespace's /sys,
    # where vnet_probe finds the NIC by its MAC), as the probe module runs in a guest
    code = ("import json, runpy, sys; m = runpy.run_path(sys.argv[1]); "
            "print(json.dumps(m['run_all']([json.loads(sys.argv[2])])))")
    script = str(data_dir("playbooks") / "library" / "vnet_probe.py")
    done = runner.run(netns_argv(link["guest"], [sys.executable, "-I", "-c", code, script,
                                                 json.dumps(spec)]), timeout=60)
    return json.loads(done.stdout.strip().splitlines()[-1])["0"]


@pytest.mark.parametrize("backend, side", [(Backend.LIBVIRT, "host"), (Backend.VIRTUALBOX, "guest")])
def test_a_shaped_link_is_measured_within_tolerance_and_an_unshaped_one_is_not(link, backend,
                                                                               side):
    dev = f"{link['tag']}{'H' if side == 'host' else 'G'}"
    runner.run(netns_argv(link[side], tbf_argv(dev, 8)))
    shaped = _measure(link, backend, 8)
    print(shaped["detail"])
    assert shaped["observed"] == "pass", shaped["detail"]
    runner.run(netns_argv(link[side], ["tc", "qdisc", "del", "dev", dev, "root"]))
    unshaped = _measure(link, backend, 8)
    print(unshaped["detail"])
    assert unshaped["observed"] == "error" and "out of tolerance: mbit" in unshaped["detail"]
    # a "guest" that carries only 8 Mbit/s anyway (its management path shaped too): an 8
    # Mbit/s lab path then proves no limit, whatever it measures
    runner.run(netns_argv(link[side], tbf_argv(dev, 8)))
    mgmt = f"{link['tag']}{'N' if side == 'host' else 'M'}"
    runner.run(netns_argv(link[side], tbf_argv(mgmt, 8)))
    slow = _measure(link, backend, 8)
    print(slow["detail"])
    assert slow["observed"] == "error" and "too small to tell" in slow["detail"] \
        and "unshaped transfer over the management path" in slow["detail"]
