"""A lab on two sandbox hosts (drivers/libvirt/multihost.py): a natnetwork homed on hv1 and an
internal network, stretched to hv2 over VXLAN; one VM per host (kept light for CI). The VM on
hv2 gets its planned address from hv1's dnsmasq across the tunnel (so the stretch works end to
end); status names each VM's host; destroy with hv2's libvirtd gone removes hv1's part and
names hv2 with the command to finish; the repeat after hv2 is back removes the rest."""
import os
import shutil
import tempfile

import pytest

from provisioner.drivers.base import driver_class
from provisioner.errors import HypervisorError
from provisioner.host import procs, sandbox, sandbox_hosts, state, vxlan
from provisioner.lab import loader as labfile
from provisioner.lab.model import Backend

from .conftest import missing_for_labs

pytestmark = pytest.mark.integration

LAB = {"name": "mhl", "hosts": [{"name": "hv1"}, {"name": "hv2"}],
       "networks": [{"name": "lan", "mode": "natnetwork", "subnet": "10.73.0.0/24", "home": "hv1"},
                    {"name": "back", "mode": "internal", "subnet": "10.73.1.0/24"}],
       "vms": [{"name": "a", "host": "hv1", "nics": [{"network": "lan"}, {"network": "back"}]},
               {"name": "b", "host": "hv2", "nics": [{"network": "lan"}, {"network": "back"}]}]}


@pytest.fixture
def two_host_sandbox(tiny_image, monkeypatch):
    if shutil.which("dropbear") is None:
        pytest.skip("dropbear is missing: apt-get install dropbear-bin")
    name = f"mh{os.getpid() % 10000}l"
    try:
        yield sandbox.up(name, progress=print, hosts=2)
    finally:
        sandbox.down(name, progress=print)


def test_two_host_lab_up_status_and_destroy_with_a_host_gone(two_host_sandbox):
    sb = two_host_sandbox
    lab = labfile.resolve(LAB, sandbox.lab_defaults(sb.name))
    libvirt_driver = driver_class(Backend.LIBVIRT)
    target = libvirt_driver.target_for(sb.name, None)
    driver = libvirt_driver(target)
    record = driver.up(lab, progress=print)
    assert set(record["hosts"]) == {"hv1", "hv2"}

    status = driver.status("mhl")
    by_vm = {vm["name"]: vm for vm in status["vms"]}
    assert {n: v["host"] for n, v in by_vm.items()} == {"a": "hv1", "b": "hv2"}
    assert {v["state"] for v in by_vm.values()} == {"running"}
    # b sits on hv2; its natnetwork address came from hv1's dnsmasq, through VXLAN
    lan_b = next(n for n in by_vm["b"]["nics"] if n["network"] == "lan")
    assert lan_b["addresses"] == [str(lab.vm("b").nics[0].ip.ip)]
    hv2 = sandbox_hosts.host_view(sb, 2)
    assert {d["alias"] for d in vxlan.devices(hv2.host_netns)} == {"vnet:mhl:lan", "vnet:mhl:back"}

    # hv2's libvirtd goes away: destroy removes hv1's part and names hv2 with the command.
    pid = procs.running(hv2.state_dir / "libvirtd.pid", str(hv2.state_dir), "libvirtd")
    procs.terminate([pid], 5.0)
    with pytest.raises(HypervisorError) as exc:
        driver.destroy("mhl", progress=print)
    assert "but hv2" in exc.value.message
    assert f"vnet destroy mhl --sandbox {sb.name}" in exc.value.hint
    assert state.read(target, "mhl")["hosts"].keys() == {"hv2"}
    hv1 = sandbox_hosts.host_view(sb, 1)
    assert vxlan.devices(hv1.host_netns) == []

    # hv2 back (sandbox up repairs it by rebuilding; its lab objects died with its libvirtd's
    # QEMUs); the repeated destroy finishes and forgets the lab.
    from provisioner.host import sandbox_setup
    sandbox_setup.start_libvirtd(hv2, print)
    driver.destroy("mhl", progress=print)
    assert state.read(target, "mhl") is None
    assert vxlan.devices(hv2.host_netns) == []
