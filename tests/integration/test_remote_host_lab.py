"""A host outside the sandbox's namespaces, for real (drivers/libvirt/remotehosts.py): in a
`--hosts 2` sandbox, hv2 is listed by its qemu+ssh:// URI and vnet treats it as a remote
machine. Every host-side step for hv2 (its VXLAN devices, the underlay echo, the serial-log
directory and the reads of its guests' consoles) goes over SSH, through hv2's forced command,
whose own log is the evidence (sandbox_files/ssh_forced_command.py; nothing is mocked). The
matrix is green; with the lab's VXLAN port dropped on hv2 the cross-host cells turn red;
destroy while hv2's SSH port is refused removes hv1's part and names hv2 with the command that
finishes the job; that repeat, and gc of a lab whose record is gone, leave nothing on hv2: no
VXLAN device, no log directory, no domain or network."""
import json
import re
import shutil

import pytest

from provisioner.drivers.base import driver_class
from provisioner.drivers.libvirt import remotehosts
from provisioner.drivers.libvirt.connection import LibvirtDriver
from provisioner.errors import HypervisorError
from provisioner.host import hostaccess, sandbox, sandbox_hosts, state, vxlan
from provisioner.host.state import Target
from provisioner.lab import loader as labfile
from provisioner.lab.model import Backend
from provisioner.verify.run import verify

from .conftest import hosts_sandbox, iptables_rule, vxlan_drop_rule

pytestmark = pytest.mark.integration

LAB = {"name": "rhl", "hosts": [{"name": "hv1"}, {"name": "hv2"}],
       "networks": [{"name": "lan", "mode": "natnetwork", "subnet": "10.74.0.0/24", "home": "hv1"},
                    {"name": "back", "mode": "internal", "subnet": "10.74.1.0/24"}],
       "vms": [{"name": "a1", "host": "hv1", "nics": [{"network": "lan"}, {"network": "back"}]},
               {"name": "b1", "host": "hv2", "nics": [{"network": "lan"}, {"network": "back"}]}]}
BLOCK = vxlan_drop_rule("vnet-test-block-remote-vxlan")
NO_SSH = ["INPUT", "-p", "tcp", "--dport", "22", "-m", "comment", "--comment",
          "vnet-test-hv2-unreachable", "-j", "REJECT", "--reject-with", "tcp-reset"]
NOTHING = {"vxlan": [], "log_dir": False, "remote_dir": [], "libvirt": None}
PATHS = {"vm_to_vm", "host_to_vm", "vm_to_host", "vm_to_internet", "internet_to_vm"}


@pytest.fixture
def sandbox_with_remote_hv2(tiny_image):
    with hosts_sandbox("rhr", 2) as sb:
        yield sb


def _commands(sb) -> list[tuple[str, list[str]]]:
    """(verdict, argv) of every command hv2's SSH server was asked to run, in order."""
    log = sandbox_hosts.host_view(sb, 2).state_dir / "ssh-commands.log"
    lines = [json.loads(ln) for ln in log.read_text().splitlines()] if log.exists() else []
    return [(e["verdict"], e["command"].split()) for e in lines]


def _left_on_hv2(sb, lab: str, owner: str) -> dict:
    hv2 = sandbox_hosts.host_view(sb, 2)
    conn = LibvirtDriver(Target(uri=hv2.uri))
    return {"vxlan": [d["name"] for d in vxlan.devices(hv2.host_netns)],
            "log_dir": (hv2.state_dir / "remote-root" / owner / lab).exists(),
            "remote_dir": sorted(p.name for p in (hv2.state_dir / "remote-root").iterdir()),
            "libvirt": conn.labs().get(lab)}


def _crosses(cell) -> bool:
    """b1 is the only VM on hv2: a cell with it at one end crosses the underlay (to a1, to the
    home host's address, through its NAT)."""
    return "b1" in {re.match(r"[a-z0-9-]*", cell[end]).group(0) for end in ("source", "target")}


def _key(cell):
    return cell["kind"], cell["network"], cell["source"], cell["target"]


def test_hv2_by_its_ssh_uri_is_a_remote_host(sandbox_with_remote_hv2):
    sb = sandbox_with_remote_hv2
    lab = labfile.resolve(LAB, sandbox.lab_defaults(sb.name))
    assert lab.hosts[1].uri == sandbox_hosts.ssh_uri(sb)
    libvirt_driver = driver_class(Backend.LIBVIRT)
    target = libvirt_driver.target_for(sb.name, None)
    driver = libvirt_driver(target)
    owner = LibvirtDriver(target).owner
    hv2 = sandbox_hosts.host_view(sb, 2)

    record = driver.up(lab, progress=print)
    assert record["hosts"]["hv2"]["netns"] is None            # no namespace: reached by SSH
    remote_dir = hostaccess.remote_lab_dir(owner, "rhl")
    assert record["hosts"]["hv2"]["log_dir"] == remote_dir
    assert remotehosts.remembered(target) == [lab.hosts[1].uri]     # for a later gc
    # b1's console was written on hv2, in its own directory, not in the lab's state dir
    assert "VNET-READY" in (hv2.state_dir / "remote-root" / owner / "rhl" /
                            "b1.serial.log").read_text(errors="replace")
    assert not (state.lab_dir(target, "rhl") / "b1.serial.log").exists()
    by_vm = {vm["name"]: vm for vm in driver.status("rhl")["vms"]}
    assert by_vm["b1"]["nics"][0]["addresses"] == [str(lab.vm("b1").nics[0].ip.ip)]

    # every VXLAN device on hv2 was made over SSH, and the rest of the host side went there too
    ran = [argv for verdict, argv in _commands(sb) if verdict == "ran"]
    devices = {d["name"] for d in vxlan.devices(hv2.host_netns)}
    assert len(devices) == 3
    assert {a[3] for a in ran if a[:3] == ["ip", "link", "add"]} == devices
    assert ["ping", "-c", "1", "-W", "2", str(lab.hosts[0].underlay_ip)] in ran
    assert ["mkdir", "-p", "-m", "0755", "--", remote_dir] in ran
    assert ["cat", "--", f"{remote_dir}/b1.serial.log"] in ran
    assert not any("/a1.serial.log" in " ".join(a) for a in ran)    # hv1's stays local
    assert all(v in ("ran", "libvirt") for v, _ in _commands(sb))  # vnet sent nothing refused

    result = verify(lab, target, print)
    cells = result["checks"]
    assert result["ok"], [c for c in cells if not c["ok"]]
    crossing = [c for c in cells if c["kind"] in PATHS and _crosses(c) and c["expected"] == "pass"]
    assert {c["kind"] for c in crossing} >= {"vm_to_vm", "host_to_vm", "vm_to_internet"}

    with iptables_rule(hv2.host_netns, BLOCK):
        blocked = {_key(c): c for c in verify(lab, target, print)["checks"]}
    assert [c for c in crossing if blocked[_key(c)]["ok"]] == []         # every one turned red
    assert [c for c in cells if not _crosses(c) and not blocked[_key(c)]["ok"]] == []

    # hv2 unreachable (its SSH port refused): destroy removes hv1's part and names hv2
    with iptables_rule(hv2.host_netns, NO_SSH), pytest.raises(HypervisorError) as exc:
        driver.destroy("rhl", progress=print)
    assert "but hv2" in exc.value.message
    assert f"vnet destroy rhl --sandbox {sb.name}" in exc.value.hint
    assert state.read(target, "rhl")["hosts"].keys() == {"hv2"}
    assert remotehosts.remembered(target) == [lab.hosts[1].uri]
    # hv2 answers again: the repeat removes everything there
    before = len(_commands(sb))
    driver.destroy("rhl", progress=print)
    assert state.read(target, "rhl") is None
    assert _left_on_hv2(sb, "rhl", owner) == NOTHING
    ran = [argv for verdict, argv in _commands(sb)[before:] if verdict == "ran"]
    assert {a[3] for a in ran if a[:3] == ["ip", "link", "del"]} == devices
    assert ["rmdir", "--ignore-fail-on-non-empty", "--", remote_dir] in ran   # never rm -r
    assert ["rm", "-f", "--", f"{remote_dir}/b1.serial.log"] in ran
    assert remotehosts.remembered(target) == []                     # no lab uses it now

    # gc: a lab whose record is gone is found on hv2 (remembered as a remote host) and removed
    driver.up(lab, progress=print, wait=False)
    assert _left_on_hv2(sb, "rhl", owner)["log_dir"]
    shutil.rmtree(state.lab_dir(target, "rhl"))
    before = len(_commands(sb))
    driver.gc(progress=print)
    assert _left_on_hv2(sb, "rhl", owner) == NOTHING
    ran = [argv for verdict, argv in _commands(sb)[before:] if verdict == "ran"]
    assert {a[3] for a in ran if a[:3] == ["ip", "link", "del"]} == devices   # over SSH
    assert ["rmdir", "--ignore-fail-on-non-empty", "--", remote_dir] in ran
    assert remotehosts.remembered(target) == []
