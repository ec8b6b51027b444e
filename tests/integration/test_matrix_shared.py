"""The matrix's shared lab, booted for real: the lab `vnet matrix` makes for virtio (two VMs,
one NIC on a network of every mode), verified once and split per mode, must be the truth about
each mode. Its negative controls turn exactly the right per-mode cells red:
- one mode's NICs cut on both VMs (their links down, every other NIC up), for each mode in
  turn: that mode's positive cells, and only they, turn red, while the other modes that promise
  the Internet still reach it. A probe of that mode that found its way out through another
  mode's NIC would stay green (with the probes' NIC binding removed, this test fails);
- the internal network given a host address: only internal cells turn red (observed pass);
  before that, internal's "no VM->host" is a `fail` on the very VMs whose hostonly NIC reaches
  the host.
Each mode's split result claims what that mode's own lab claims (test_matrix_shared.py in the
unit tier compares them cell by cell)."""
import pytest

from provisioner.drivers.base import driver_class
from provisioner.drivers.libvirt import lifecycle
from provisioner.drivers.libvirt.render import bridge_name
from provisioner.host import netns, runner
from provisioner.lab import loader as labfile, modes
from provisioner.lab.model import Backend
from provisioner.ops import matrix, matrixlabs
from provisioner.verify import run as verifier

pytestmark = pytest.mark.integration
quiet = lambda message: None  # noqa: E731
MODEL = "virtio"


@pytest.fixture(scope="module")
def shared(lab_sandbox):
    """The shared lab of `vnet matrix --nic-models virtio`, as the matrix builds it."""
    target = lifecycle.target_for(lab_sandbox.name, None)
    defaults = labfile.sandbox_defaults(lab_sandbox)
    combos = [(m, MODEL) for m in modes.names()]
    name = matrixlabs.shared_name(MODEL)
    data = matrixlabs.shared_lab([(m, matrixlabs.combo_lab(combos, i, name, None,
                                                           defaults.bridged_subnet))
                                  for i, (m, _) in enumerate(combos)], name)
    lab = labfile.resolve(data, defaults)
    try:
        lifecycle.up(lab, target, quiet)
        yield lab_sandbox, target, lab
    finally:
        lifecycle.destroy(lab.name, target, quiet)


def key(c) -> tuple:
    return (c["network"], c["kind"], c["source"], c["target"])


def why(result) -> list[str]:
    return [f"{c['network']} {c['kind']} {c['source']}->{c['target']}: {c['observed']} "
            f"({c['detail']})" for c in result["checks"] if not c["ok"]]


def red(result) -> set[tuple]:
    return {key(c) for c in result["checks"] if not c["ok"]}


def test_the_shared_lab_verifies_green_and_splits_into_green_modes(shared):
    _, target, lab = shared
    result = verifier.verify(lab, target, quiet)
    assert result["ok"], why(result)
    names = modes.names()
    for mode in names:
        part = matrixlabs.split(result, mode, matrixlabs.lab_name(mode, MODEL), lab.name, names)
        assert matrix.judged(part) == ("green", ""), mode
        kinds = {c["kind"] for c in part["checks"]}
        assert {"vm_to_host", "host_to_vm", "vm_to_vm", "vm_to_internet", "internet_to_vm",
                "nic_model"} <= kinds, mode
    # internal's "no VM->host" is a true negative on the same VMs whose hostonly NIC reaches
    # the host (and whose management NIC reaches the very address that probe targets)
    to_host = {(c["mode"], c["source"]): c for c in result["checks"] if c["kind"] == "vm_to_host"}
    for vm in ("vm1", "vm2"):
        assert to_host[("hostonly", vm)]["observed"] == "pass"
        assert to_host[("internal", vm)]["observed"] == "fail", to_host[("internal", vm)]
    # libvirt's own row, as data, per mode: the host reaches natnetwork's VMs, not nat's
    host_to_vm = {(c["mode"], c["observed"]) for c in result["checks"] if c["kind"] == "host_to_vm"}
    assert ("natnetwork", "pass") in host_to_vm and ("internal", "fail") in host_to_vm


@pytest.mark.parametrize("mode", modes.names())
def test_one_modes_nics_cut_turn_only_its_positive_cells_red(shared, mode):
    _, target, lab = shared
    driver = driver_class(Backend.LIBVIRT)(target)
    cut = [(vm.name, [n.network for n in vm.nics].index(mode)) for vm in lab.vms]
    try:
        for vm, nic in cut:
            driver.set_link(lab.name, vm, nic, False)
        result = verifier.verify(lab, target, quiet)
    finally:
        for vm, nic in cut:
            driver.set_link(lab.name, vm, nic, True)
    # red: the mode's positive cells, and a nat VM<->VM cell, whose ARP probe needs the NAT
    # gateway's answer on the cut NIC to call its silence isolation (an error without it)
    expected = {key(c) for c in result["checks"] if c["network"] == mode
                and c["kind"] != "nic_model" and (c["expected"] == "pass"
                                                  or "not proven to carry ARP" in c["detail"])}
    assert expected and red(result) == expected, why(result)
    if mode == "nat":
        assert {c["observed"] for c in result["checks"]
                if c["network"] == "nat" and c["kind"] == "vm_to_vm"} == {"error"}
    # the same VMs still reach the Internet through the other modes that promise it
    reach = {c["mode"] for c in result["checks"] if c["kind"] == "vm_to_internet" and c["ok"]
             and c["observed"] == "pass"}
    assert reach == {"bridged", "nat", "natnetwork"} - {mode}, why(result)
    if mode in ("bridged", "nat", "natnetwork"):
        assert (mode, "vm_to_internet", "vm1", "internet (203.0.113.1)") in red(result)


def test_the_internal_network_given_a_host_address_turns_only_internal_cells_red(shared):
    box, target, lab = shared
    net = lab.network("internal")
    address = f"{net.subnet.network_address + 1}/{net.subnet.prefixlen}"
    bridge = bridge_name(lab.name, net.name)
    runner.run(netns.netns_argv(box.host_netns, ["ip", "addr", "add", address, "dev", bridge]))
    try:
        result = verifier.verify(lab, target, quiet)
    finally:
        runner.run(netns.netns_argv(box.host_netns, ["ip", "addr", "del", address, "dev",
                                                     bridge]), check=False)
    wrong = [c for c in result["checks"] if not c["ok"]]
    assert wrong and {c["network"] for c in wrong} == {"internal"}, why(result)
    assert {c["observed"] for c in wrong} == {"pass"}, why(result)
    assert {c["source"] for c in wrong if c["kind"] == "host_to_vm"} == {"host"}
    assert len([c for c in wrong if c["kind"] == "host_to_vm"]) == 2, why(result)
