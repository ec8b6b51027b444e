"""A lab on two sandbox hosts (drivers/libvirt/multihost.py): a natnetwork homed on hv1 and an
internal network, stretched to hv2 over VXLAN, two VMs per host. The whole matrix is green
(VM<->VM across hosts, host->VM from the home host, VM->Internet through hv1's NAT); with the
lab's VXLAN port blocked on hv2's underlay the cross-host cells turn red and the same-host cells
stay green (negative control); status names each VM's host; destroy with hv2's libvirtd gone
removes hv1's part and names hv2 with the command to finish; the repeat removes the rest."""

import pytest

from provisioner.drivers.base import driver_class
from provisioner.drivers.libvirt import imagecopy
from provisioner.errors import HypervisorError
from provisioner.host import procs, sandbox, sandbox_hosts, state, vxlan
from provisioner.lab import loader as labfile
from provisioner.lab.model import Backend
from provisioner.verify.run import verify

from .conftest import hosts_sandbox, iptables_rule, vxlan_drop_rule


pytestmark = pytest.mark.integration

LAB = {"name": "mhl", "hosts": [{"name": "hv1"}, {"name": "hv2"}],
       "networks": [{"name": "lan", "mode": "natnetwork", "subnet": "10.73.0.0/24", "home": "hv1",
                     # served on hv1 (the first host) to a VM on hv2, across the underlay
                     "port_forwards": [{"name": "web", "proto": "tcp", "host_port": 18181,
                                        "vm": "b1", "guest_port": 8080}]},
                    {"name": "back", "mode": "internal", "subnet": "10.73.1.0/24"}],
       "vms": [{"name": n, "host": h, "nics": [{"network": "lan"}, {"network": "back"}]}
               for n, h in (("a1", "hv1"), ("a2", "hv1"), ("b1", "hv2"), ("b2", "hv2"))]}
BLOCK = vxlan_drop_rule("vnet-test-block-lab-vxlan")
PATHS = {"vm_to_vm", "host_to_vm", "vm_to_host", "vm_to_internet", "internet_to_vm",
         "port_forward"}
HOST_OF = {"a1": "hv1", "a2": "hv1", "b1": "hv2", "b2": "hv2"}


def _vm_of(label):
    return next((vm for vm in HOST_OF if label == vm or label.startswith(vm + " ")
                 or label.startswith(vm + ":") or label.startswith(vm + "(")), None)


def _key(cell):
    return cell["kind"], cell["network"], cell["source"], cell["target"]


def _crosses_hosts(cell):
    """A cell whose path crosses the underlay: VM<->VM on two hosts, a VM on hv2 and the home
    host hv1 (host address, NAT to the Internet)."""
    ends = [_vm_of(cell["source"]), _vm_of(cell["target"])]
    hosts = {HOST_OF[vm] for vm in ends if vm} | ({"hv1"} if None in ends else set())
    return len(hosts) > 1


def split_crossing(cells):
    """(the positive cells whose path crosses hosts, the cells that stay on one host): what
    blocking the underlay must turn red, and what it must leave alone."""
    cross = [c for c in cells if c["kind"] in PATHS and _crosses_hosts(c)]
    return [c for c in cross if c["expected"] == "pass"], [c for c in cells if c not in cross]


@pytest.fixture
def two_host_sandbox(tiny_image, monkeypatch):
    with hosts_sandbox("mhl", 2) as sb:
        yield sb


def test_two_host_lab_up_status_and_destroy_with_a_host_gone(two_host_sandbox):
    sb = two_host_sandbox
    lab = labfile.resolve(LAB, sandbox.lab_defaults(sb.name))
    libvirt_driver = driver_class(Backend.LIBVIRT)
    target = libvirt_driver.target_for(sb.name, None)
    driver = libvirt_driver(target)
    record = driver.up(lab, progress=print)
    assert set(record["hosts"]) == {"hv1", "hv2"}
    # hv2 is reached over qemu+ssh:// and boots the image vnet copied into its storage pool
    assert record["hosts"]["hv2"]["uri"].startswith("qemu+ssh://")
    import libvirt
    conn = libvirt.open(sandbox_hosts.host_view(sb, 2).uri)
    try:
        assert f"<kernel>{imagecopy.POOL_DIR}/" in conn.lookupByName("vnet-mhl-b1").XMLDesc()
    finally:
        conn.close()

    status = driver.status("mhl")
    by_vm = {vm["name"]: vm for vm in status["vms"]}
    assert {n: v["host"] for n, v in by_vm.items()} == HOST_OF
    assert {v["state"] for v in by_vm.values()} == {"running"}
    # b1 sits on hv2; its natnetwork address came from hv1's dnsmasq, through VXLAN
    lan_b = next(n for n in by_vm["b1"]["nics"] if n["network"] == "lan")
    assert lan_b["addresses"] == [str(lab.vm("b1").nics[0].ip.ip)]
    hv2 = sandbox_hosts.host_view(sb, 2)
    from provisioner.host.owner import owner_id

    owner = owner_id()            # the alias names the owner, as libvirt tags do (vxlan.py)
    assert {d["alias"] for d in vxlan.devices(hv2.host_netns)} == {
        f"vnet:{owner}:mhl:lan", f"vnet:{owner}:mhl:back", f"vnet:{owner}:mhl:mgmt"}

    result = verify(lab, target, print)
    cells = result["checks"]
    assert result["ok"], [c for c in cells if not c["ok"]]
    crossing, same = split_crossing(cells)
    assert same and {c["kind"] for c in crossing} >= {"vm_to_vm", "host_to_vm", "vm_to_internet",
                                                      "port_forward"}

    # Negative control: the lab's VXLAN port dropped on hv2's underlay (management rides
    # its own port, so vnet still reaches every guest).
    with iptables_rule(hv2.host_netns, BLOCK):
        blocked = verify(lab, target, print)["checks"]
    by_key = {_key(c): c for c in blocked}
    assert [c for c in crossing if by_key[_key(c)]["ok"]] == []      # every one turned red
    assert [c for c in same if not by_key[_key(c)]["ok"]] == []      # and nothing else did

    # hv2's libvirtd goes away: destroy removes hv1's part and names hv2 with the command.
    pid = procs.running(hv2.state_dir / "libvirtd.pid", str(hv2.state_dir), "libvirtd")
    procs.terminate([pid], 5.0)
    with pytest.raises(HypervisorError) as exc:
        driver.destroy("mhl", progress=print)
    assert "but hv2" in exc.value.message
    assert f"vnet destroy mhl --sandbox {sb.name}" in exc.value.hint
    assert state.read(target, "mhl")["hosts"].keys() == {"hv2"}
    hv1 = sandbox_hosts.host_view(sb, 1)
    assert "hv1" not in state.read(target, "mhl")["hosts"]
    assert vxlan.devices(hv1.host_netns) == []

    # hv2 back (sandbox up repairs it by rebuilding; its lab objects died with its libvirtd's
    # QEMUs); the repeated destroy finishes and forgets the lab.
    from provisioner.host import sandbox_setup
    sandbox_setup.start_libvirtd(hv2, print)
    driver.destroy("mhl", progress=print)
    assert state.read(target, "mhl") is None
    assert vxlan.devices(hv2.host_netns) == []
