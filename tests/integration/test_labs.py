"""Real labs in a real sandbox: every mode with virtio and e1000 boots, gets its addresses and
verifies green; broken labs turn red; destroy, gc and Ctrl-C leave nothing behind."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from provisioner.lab import loader as labfile, modes
from provisioner.drivers.libvirt import lifecycle
from provisioner.host import netns, runner, state
from provisioner.verify import run as verifier
from provisioner.lab.defaults import default_lab
from provisioner.drivers.libvirt.connection import LibvirtDriver
from provisioner.drivers.libvirt.render import bridge_name

pytestmark = pytest.mark.integration
quiet = lambda message: None  # noqa: E731


def target_of(box):
    return lifecycle.target_for(box.name, None)


def make(box, mode, model="virtio", name=None, vms=2, port_base=0):
    return labfile.resolve(default_lab(mode, model, vms, name, port_base=port_base),
                           labfile.sandbox_defaults(box))


def tagged(box, lab_name):
    return LibvirtDriver(target_of(box)).labs().get(lab_name)


@pytest.mark.parametrize("model", ["virtio", "e1000"])
@pytest.mark.parametrize("mode", modes.names())
def test_mode_boots_and_verifies_green(lab_sandbox, mode, model):
    target = target_of(lab_sandbox)
    lab = make(lab_sandbox, mode, model, name=f"{mode[:8]}-{model}")
    try:
        record = lifecycle.up(lab, target, quiet)
        status = lifecycle.status(lab.name, target)
        for vm in status["vms"]:
            assert vm["state"] == "running"
            assert all(nic["addresses"] for nic in vm["nics"]), vm
            assert {nic["model"] for nic in vm["nics"]} == {model}
        result = verifier.verify(lab, target, quiet, timings=record["timings"])
        red = [f"{c['kind']} {c['source']}->{c['target']}: {c['observed']} ({c['detail']})"
               for c in result["checks"] if not c["ok"]]
        assert result["ok"], red
        kinds = {c["kind"] for c in result["checks"]}
        assert {"vm_to_host", "host_to_vm", "vm_to_vm", "vm_to_internet", "internet_to_vm",
                "nic_model"} <= kinds
        if modes.MODES[mode].port_forwards:
            assert "port_forward" in kinds
        # every expected value comes from the mode table, negative cells included
        assert any(c["expected"] == "fail" for c in result["checks"]) == (mode != "bridged")
        assert set(result["timings"]) >= {"define", "address", "verify", "total"}
        # every guest ran the tiny image's precompiled probe in one SSH call (bakedprobe.py)
        modules = [g.get("module", {}) for g in result["verify_breakdown"]["per_guest"].values()]
        assert len(modules) == len(lab.vms) and all(m.get("baked") for m in modules), modules
        if (mode, model) == ("natnetwork", "virtio"):    # once: a second verify, warm, green
            again = verifier.verify(lab, target, quiet)
            warm = [g["module"] for g in again["verify_breakdown"]["per_guest"].values()]
            assert again["ok"] and len(warm) == len(lab.vms), warm
            assert all(m["warm"] for m in warm), warm
    finally:
        lifecycle.destroy(lab.name, target, quiet)
    assert tagged(lab_sandbox, lab.name) is None
    assert not state.lab_dir(target, lab.name).exists()


def test_up_twice_changes_nothing(lab_sandbox):
    target = target_of(lab_sandbox)
    lab = make(lab_sandbox, "hostonly", name="idem")
    try:
        lifecycle.up(lab, target, quiet)
        driver = LibvirtDriver(target)
        ids = {d.name(): d.ID() for d in driver.conn.listAllDomains(0)}
        again = lifecycle.up(lab, target, quiet)
        assert {d.name(): d.ID() for d in driver.conn.listAllDomains(0)} == ids
        assert again["lab"] == "idem"
    finally:
        lifecycle.destroy(lab.name, target, quiet)


def test_internal_network_given_a_host_address_turns_red(lab_sandbox):
    """Negative control: the host on an internal network is a failure, and the management
    network must not hide it either way."""
    target = target_of(lab_sandbox)
    lab = make(lab_sandbox, "internal", name="broken")
    try:
        lifecycle.up(lab, target, quiet)
        assert verifier.verify(lab, target, quiet)["ok"]
        net = lab.networks[0]
        runner.run(netns.netns_argv(lab_sandbox.host_netns, [
            "ip", "addr", "add", f"{net.subnet.network_address + 1}/{net.subnet.prefixlen}",
            "dev", bridge_name(lab.name, net.name)]))
        result = verifier.verify(lab, target, quiet)
        assert not result["ok"]
        red = {(c["kind"], c["observed"]) for c in result["checks"] if not c["ok"]}
        assert ("host_to_vm", "pass") in red
        text = verifier.matrix_text(result)
        assert "MISMATCH" in text and "diagnosis:" in text and "NOT VERIFIED" in text
    finally:
        lifecycle.destroy(lab.name, target, quiet)


def test_hostonly_given_a_route_out_turns_red(lab_sandbox):
    """Negative control: let the host forward and masquerade a hostonly network."""
    target = target_of(lab_sandbox)
    lab = make(lab_sandbox, "hostonly", name="leaky")
    net = lab.networks[0]
    rules = [["iptables", "-I", "FORWARD", "1", "-s", str(net.subnet), "-j", "ACCEPT"],
             ["iptables", "-I", "FORWARD", "1", "-d", str(net.subnet), "-j", "ACCEPT"],
             ["iptables", "-t", "nat", "-I", "POSTROUTING", "1", "-s", str(net.subnet),
              "!", "-d", str(net.subnet), "-j", "MASQUERADE"]]
    try:
        lifecycle.up(lab, target, quiet)
        for rule in rules:
            runner.run(netns.netns_argv(lab_sandbox.host_netns, rule))
        result = verifier.verify(lab, target, quiet)
        red = {(c["kind"], c["observed"]) for c in result["checks"] if not c["ok"]}
        assert ("vm_to_internet", "pass") in red, result["checks"]
    finally:
        for rule in rules:
            runner.run(netns.netns_argv(lab_sandbox.host_netns,
                                        [r if r != "-I" else "-D" for r in rule if r != "1"]),
                       check=False)
        lifecycle.destroy(lab.name, target, quiet)


def test_gc_removes_objects_whose_state_is_gone(lab_sandbox):
    target = target_of(lab_sandbox)
    lab = make(lab_sandbox, "internal", name="orphan", vms=1)
    lifecycle.up(lab, target, quiet, wait=False)
    state.remove(target, lab.name)          # as if the state dir had been lost
    assert tagged(lab_sandbox, "orphan")
    removed = lifecycle.gc(target, quiet)
    assert any("vnet-orphan-vm1" in r for r in removed)
    assert tagged(lab_sandbox, "orphan") is None


def test_busy_host_port_is_reported_before_anything_is_created(lab_sandbox):
    target = target_of(lab_sandbox)
    lab = make(lab_sandbox, "natnetwork", name="busy", port_base=500)
    blocker = runner.spawn(netns.netns_argv(lab_sandbox.host_netns, [
        sys.executable, "-c", "import socket,time; s=socket.socket(); "
        "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('0.0.0.0', 7501)); "
        "s.listen(); print('ready', flush=True); time.sleep(60)"]), log_path="/dev/null")
    try:
        time.sleep(0.5)
        from provisioner.errors import Unsupported
        with pytest.raises(Unsupported, match="tcp/203.0.113.2:7501 .already in use"):
            lifecycle.up(lab, target, quiet)
        assert tagged(lab_sandbox, "busy") is None
    finally:
        blocker.kill()
        blocker.wait()
        state.remove(target, "busy")


def test_ctrl_c_during_up_leaves_only_what_destroy_removes(lab_sandbox):
    vnet = os.path.join(os.path.dirname(sys.executable), "vnet")
    proc = subprocess.Popen([vnet, "create", "--mode", "natnetwork", "--name", "intr",
                             "--sandbox", lab_sandbox.name, "--no-verify"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    while not tagged(lab_sandbox, "intr") and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    output = proc.communicate(timeout=60)[0]
    # destroy whatever happened: a lab left up here would take the subnet of every later lab
    result = subprocess.run([vnet, "destroy", "intr", "--sandbox", lab_sandbox.name],
                            capture_output=True, text=True)
    assert proc.returncode == 130, output
    assert "vnet destroy" in output
    assert result.returncode == 0, result.stderr
    assert tagged(lab_sandbox, "intr") is None
    assert not state.lab_dir(target_of(lab_sandbox), "intr").exists()
    leftovers = runner.run(["pgrep", "-f", "portproxy.py .*:7001="], check=False).stdout
    assert leftovers.strip() == ""


def test_cli_create_reports_json_and_junit(lab_sandbox, tmp_path):
    vnet = os.path.join(os.path.dirname(sys.executable), "vnet")
    out = tmp_path / "report.json"
    try:
        result = subprocess.run([vnet, "create", "--mode", "natnetwork", "--name", "cli",
                                 "--sandbox", lab_sandbox.name, "--report", "json", "--out",
                                 str(out)], capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "VERIFIED" in result.stdout
        report = json.loads(out.read_text())
        assert set(report) >= {"lab", "backend", "ok", "checks", "timings"}
        assert report["ok"] and report["lab"] == "cli" and "total" in report["timings"]
        junit = tmp_path / "report.xml"
        result = subprocess.run([vnet, "verify", "cli", "--sandbox", lab_sandbox.name,
                                 "--report", "junit", "--out", str(junit)],
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        assert junit.read_text().count("<testcase") == len(report["checks"])
        status = json.loads(subprocess.run([vnet, "status", "cli", "--sandbox", lab_sandbox.name,
                                            "--format", "json"], capture_output=True,
                                           text=True).stdout)
        assert status["lab"] == "cli" and len(status["vms"]) == 2
        assert set(status["vms"][0]["nics"][0]) == {"network", "model", "mac", "addresses"}
    finally:
        subprocess.run([vnet, "destroy", "cli", "--sandbox", lab_sandbox.name])


def test_multi_network_lab_from_a_file_verifies_green(lab_sandbox):
    """Multi-homed VMs on natnetwork + internal + hostonly: every cell is probed over the NIC
    of its own network, and each matrix still equals its mode's row."""
    result = verify_lab_file(lab_sandbox, "multi.yaml")
    assert {c["network"] for c in result["checks"]} == {"lan", "back", "ho"}
    assert len(result["checks"]) == 38


def verify_lab_file(lab_sandbox, name: str) -> dict:
    """Bring up tests/integration/labs/NAME, verify it, destroy it; the green result."""
    from pathlib import Path

    target = target_of(lab_sandbox)
    lab = labfile.load(Path(__file__).parent / "labs" / name, labfile.sandbox_defaults(lab_sandbox))
    try:
        lifecycle.up(lab, target, quiet)
        result = verifier.verify(lab, target, quiet)
        red = [f"{c['network']} {c['kind']} {c['source']}->{c['target']}: {c['observed']} "
               f"({c['detail']})" for c in result["checks"] if not c["ok"]]
        assert result["ok"], red
        return result
    finally:
        lifecycle.destroy(lab.name, target, quiet)




def test_five_mode_multi_homed_lab_verifies_green(lab_sandbox):
    """Two VMs, each with a NIC on every mode (tests/integration/labs/fivemodes.yaml): every
    cell is probed over the NIC of its own network, whatever the guest's default route (per-NIC
    policy routing in the guest; probes bound to device and address). Before that, the
    VM->Internet cells of the nat and natnetwork NICs that were not the default route, and the
    nat forwards (their answers left by the default route), were red: 60/68."""
    cells = verify_lab_file(lab_sandbox, "fivemodes.yaml")["checks"]
    assert len([c for c in cells if c["kind"] != "port_forward"]) == 60
    assert {c["mode"] for c in cells if c["kind"] == "vm_to_internet"} == set(modes.names())
    inbound = [c for c in cells if c["kind"] == "internet_to_vm" and c["mode"] != "bridged"]
    assert len(inbound) == 8 and all(c["observed"] == "fail" for c in inbound)
    forwards = [c for c in cells if c["kind"] == "port_forward"]
    assert len(forwards) == 8
    for c in forwards:      # SSH: a login reads the VM's name; echo (7): a service is there
        vm = c["target"].split(":")[0]
        assert (f"hostname {vm}" if ":22 " in c["target"] else "service present") \
            in c["detail"], c
