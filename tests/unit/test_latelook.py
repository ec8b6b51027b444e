"""A host-side refused attempt that ended after the target guest's last look at its sockets:
the guest looks again once every host-side probe has ended (verify/latelook.py), and that look
judges the refusal. Before, such a cell was an `error` for good (a CI run under load turned a
natnetwork lab's Internet->VM cell red that way)."""
from __future__ import annotations

import json
from types import SimpleNamespace

from provisioner.guest import bakedprobe
from provisioner.host import runner
from provisioner.host.state import Target
from provisioner.verify import latelook
from provisioner.verify import run as verifier

from .test_refusals import BOOT, guests, lab, look, refused


def one_vm_lab():
    return lab({"name": "ho", "networks": [{"name": "n", "mode": "hostonly"}],
                "vms": [{"name": "vm1", "nics": [{"network": "n"}]}]})


def verify_with(tmp_path, last_at, late_look):
    """verify() with FAKE sources: the guest's own run looked last at `last_at`; every
    host-side probe is refused at [100.0, 100.1] (the host's clock)."""
    one = one_vm_lab()
    addr = str(one.vm("vm1").nics[0].ip.ip)

    def fake_guests(lab_, target, cells, inventory, progress, holds, stop, playbook):
        report = guests([[addr, 9]], [[addr, 9]], first_at=90.0, last_at=last_at)
        report["vm1"].update(drivers={}, probes={
            str(i): {"observed": "pass", "detail": ""}
            for i, c in enumerate(cells) if c.runner == "guest:vm1"})
        return report
    sources = verifier.ProbeSources(
        start_listeners=lambda *a: None, guests=fake_guests, late_look=late_look,
        probe_module=lambda: SimpleNamespace(
            run_all=lambda specs: {s["id"]: refused() for s in specs}, probe=lambda s: {}))
    inventory = verifier.Inventory(hosts={"vm1": {"ansible_host": "100.64.0.10"}},
                                   mgmt_host_ip="100.64.0.1", work_dir=tmp_path,
                                   console=lambda vm: f"VNET-LISTEN tcp/7 {BOOT} 2.5 9\n")
    result = verifier.verify(one, Target(uri="test:///default"), lambda m: None,
                             inventory=inventory, sources=sources)
    return {c["kind"]: c for c in result["checks"]}


def test_a_refusal_after_the_guests_last_look_is_judged_by_a_late_look(tmp_path):
    asked = []

    def late_look(vm, host, netns, watch):
        asked.append((vm, watch["ports"]))
        return look(200.0, [[host_address, 9]])        # the same socket, still listening
    host_address = str(one_vm_lab().vm("vm1").nics[0].ip.ip)
    cell = verify_with(tmp_path, 100.05, late_look)["host_to_vm"]
    assert asked == [("vm1", ["tcp/7"])]
    assert cell["observed"] == "fail" and "stamped listening" in cell["detail"], cell


def test_without_a_late_look_such_a_refusal_stays_an_error(tmp_path):
    cell = verify_with(tmp_path, 100.05, lambda *a: None)["host_to_vm"]
    assert cell["observed"] == "error" and "after the guest's last look" in cell["detail"]


def test_no_late_look_where_the_guests_own_last_look_came_after_the_attempts(tmp_path):
    asked = []
    cell = verify_with(tmp_path, 105.0, lambda *a: asked.append(a))["host_to_vm"]
    assert asked == [] and cell["observed"] == "fail"


def test_the_late_look_runs_the_baked_probe_over_ssh_with_the_listing_only():
    seen = {}
    last = look(200.0, [["0.0.0.0", 9]])

    def run(argv, check=False, timeout=None, input=None):
        seen.update(argv=argv, input=json.loads(input))
        return runner.Result(argv, 0, json.dumps({"listening": {"first": last, "last": last}}),
                             "")
    host = {"ansible_host": "100.64.0.10", "ansible_ssh_private_key_file": "/k/id"}
    got = latelook.look_again("vm1", host, "ns-h", {"ports": ["tcp/7"], "clock": None}, run=run)
    assert got == last
    assert seen["argv"][:4] == ["ip", "netns", "exec", "ns-h"] and "root@100.64.0.10" in \
        seen["argv"]
    assert bakedprobe.baked_path(bakedprobe.probe_source()) in seen["argv"][-1]
    assert seen["input"] == {"probes": [], "listening": {"ports": ["tcp/7"], "clock": None}}
    missing = latelook.look_again("vm1", host, None, {"ports": ["tcp/7"]}, run=lambda *a, **k:
                                  runner.Result(a[0], 0, bakedprobe.MISSING + "\n", ""))
    assert missing is None                        # a cloud image: the cell stays an error


def test_a_late_look_of_another_boot_is_not_taken(tmp_path):
    """Inodes repeat across boots: a guest rebooted between its run and the late look could
    show the same inode, which its first look's socket would then seem to be."""
    other = look(200.0, [["0.0.0.0", 9]])
    other["boot"] = "another-boot"
    cell = verify_with(tmp_path, 100.05, lambda *a: other)["host_to_vm"]
    assert cell["observed"] == "error" and "after the guest's last look" in cell["detail"]
