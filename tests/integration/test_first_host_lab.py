"""The first host outside a vnet sandbox (drivers/libvirt/multihost.py host_targets): vnet runs on
a machine, that machine is the lab's first host, and the second host is a remote machine over
SSH. Played for real without touching this machine's own namespace: vnet itself runs inside a
`--hosts 2` sandbox's host namespace (vnet-S-host, as if it were the machine), named by nothing
but `--uri` (no --sandbox), and the lab lists hv1 by that URI (its libvirt socket) and hv2 by its
qemu+ssh:// URI, both with explicit underlay_ip, as a lab for real machines does.

It proves: hv1's part is created through the given URI with its host side in the namespace vnet
runs in (the VXLAN devices, the port proxy, the serial logs in the URI's lab directory; the
record names no sandbox and no namespace), hv2's host side over SSH (its forced command's log);
the matrix is green for the cells that apply outside a sandbox (no Internet cells: there is no
Internet vnet may probe; the run says so in its notes); the lab's VXLAN port dropped in hv2's
namespace turns exactly the cross-host cells red; `vnet destroy LAB --uri ...` run the same way
leaves nothing: no domain or network on either host, no VXLAN device, no remote log directory,
no lab state, no proxy; and `vnet gc --uri ...` removes the same from both hosts for a lab whose
record is gone."""
import json
import os
import shutil
import sys

import pytest
import yaml

from provisioner.drivers.libvirt import remotehosts
from provisioner.drivers.libvirt.connection import LibvirtDriver
from provisioner.host import (forwarding, hostaccess, netns, procs, runner, sandbox_hosts,
                              state, vxlan)
from provisioner.host.state import Target

from .test_multihost_lab import BLOCK, _key, split_crossing
from .test_remote_host_lab import NOTHING, _commands, _left_on_hv2
from .conftest import hosts_sandbox, iptables_rule

pytestmark = pytest.mark.integration

VNET = os.path.join(os.path.dirname(sys.executable), "vnet")
NAME = "fhl"


def _lab(hv1_uri: str, sb) -> dict:
    """a1, a2 on hv1 (this machine), b1 on hv2 (remote); a forward served on hv1 to b1."""
    return {"name": NAME,
            "hosts": [{"name": "hv1", "uri": hv1_uri,
                       "underlay_ip": str(sandbox_hosts.underlay_ip(sb, 1))},
                      {"name": "hv2", "uri": sandbox_hosts.ssh_uri(sb),
                       "underlay_ip": str(sandbox_hosts.underlay_ip(sb, 2))}],
            "networks": [{"name": "lan", "mode": "natnetwork", "subnet": "10.75.0.0/24",
                          "home": "hv1",
                          "port_forwards": [{"name": "web", "proto": "tcp", "host_port": 18182,
                                             "vm": "b1", "guest_port": 8080}]},
                         {"name": "back", "mode": "internal", "subnet": "10.75.1.0/24"}],
            "vms": [{"name": n, "host": h, "nics": [{"network": "lan"}, {"network": "back"}]}
                    for n, h in (("a1", "hv1"), ("a2", "hv1"), ("b1", "hv2"))]}


@pytest.fixture
def machine_sandbox(tiny_image):
    with hosts_sandbox("fhm", 2) as sb:
        yield sb


def _vnet_on(sb, *args: str) -> runner.Result:
    """vnet as a user runs it on the machine: here inside hv1's namespace, no --sandbox."""
    done = runner.run(netns.netns_argv(sb.host_netns, [VNET, *args]), check=False, timeout=1800)
    print(done.stdout, done.stderr)
    return done


def test_vnet_on_the_first_host_outside_a_sandbox(machine_sandbox, tmp_path):
    sb = machine_sandbox
    uri = sb.uri                                    # hv1's libvirtd: qemu:///system?socket=...
    assert hostaccess.is_local_uri(uri)
    lab_file = tmp_path / "lab.yaml"
    lab_file.write_text(yaml.safe_dump(_lab(uri, sb)))
    target = Target(uri=uri)                        # what `--uri` makes: no sandbox, no netns
    hv2 = sandbox_hosts.host_view(sb, 2)
    owner = LibvirtDriver(target).owner

    try:
        up = _vnet_on(sb, "up", str(lab_file), "--uri", uri, "--report", "json",
                      "--out", str(tmp_path / "up.json"))
        assert up.returncode == 0, up.stderr[-3000:]

        # hv1's part: made through the URI, its host side in the namespace vnet ran in
        record = state.read(target, NAME)
        assert record["sandbox"] is None and record["uri"] == uri
        assert state.lab_dir(target, NAME).parent.name == target.key       # keyed by the URI
        assert record["hosts"]["hv1"] == {"uri": uri, "netns": None,
                                          "log_dir": str(state.lab_dir(target, NAME))}
        assert set(LibvirtDriver(target).labs()[NAME]["domain"]) >= {"vnet-fhl-a1", "vnet-fhl-a2"}
        owner = LibvirtDriver(target).owner                 # aliases name the owner
        assert {d["alias"] for d in vxlan.devices(sb.host_netns)} == {
            f"vnet:{owner}:fhl:lan", f"vnet:{owner}:fhl:back", f"vnet:{owner}:fhl:mgmt"}
        assert "VNET-READY" in (state.lab_dir(target, NAME) / "a1.serial.log").read_text(
            errors="replace")
        proxy = forwarding.proxy_pid(state.lab_dir(target, NAME), "hv1")
        assert proxy and os.stat(f"/proc/{proxy}/ns/net").st_ino == \
            netns.netns_inode(sb.host_netns)                    # the proxy runs where vnet ran

        shown = _vnet_on(sb, "status", NAME, "--uri", uri, "--format", "json")
        assert shown.returncode == 0, shown.stderr[-3000:]
        vms = json.loads(shown.stdout)["vms"]
        assert {vm["name"]: (vm["host"], vm["state"]) for vm in vms} == {
            "a1": ("hv1", "running"), "a2": ("hv1", "running"), "b1": ("hv2", "running")}

        # hv2's part: every host-side step over SSH, through its forced command
        remote_dir = hostaccess.remote_lab_dir(owner, NAME)
        ran = [argv for verdict, argv in _commands(sb) if verdict == "ran"]
        devices = {d["name"] for d in vxlan.devices(hv2.host_netns)}
        assert len(devices) == 3
        assert {a[3] for a in ran if a[:3] == ["ip", "link", "add"]} == devices
        assert ["ping", "-c", "1", "-W", "2", str(sandbox_hosts.underlay_ip(sb, 1))] in ran
        assert ["mkdir", "-p", "-m", "0755", "--", remote_dir] in ran
        assert ["cat", "--", f"{remote_dir}/b1.serial.log"] in ran
        assert all(v in ("ran", "libvirt") for v, _ in _commands(sb))   # nothing refused

        # the matrix: green for what applies outside a sandbox (no Internet cells)
        result = json.loads((tmp_path / "up.json").read_text())
        cells = result["checks"]
        assert result["ok"], [c for c in cells if not c["ok"]]
        assert not [c for c in cells if c["kind"] in ("vm_to_internet", "internet_to_vm")]
        assert "not in a sandbox: no Internet cells were probed" in result["notes"]
        crossing, same = split_crossing(cells)
        assert same and {c["kind"] for c in crossing} >= {"vm_to_vm", "host_to_vm", "vm_to_host",
                                                          "port_forward"}

        # negative control: the lab's VXLAN port dropped in hv2's namespace
        with iptables_rule(hv2.host_netns, BLOCK):
            blocked = _vnet_on(sb, "verify", NAME, "--uri", uri, "--report", "json",
                               "--out", str(tmp_path / "blocked.json"))
        assert blocked.returncode == 1, blocked.stderr[-3000:]
        by_key = {_key(c): c for c in json.loads((tmp_path / "blocked.json").read_text())["checks"]}
        assert [c for c in crossing if by_key[_key(c)]["ok"]] == []      # every one turned red
        assert [c for c in same if not by_key[_key(c)]["ok"]] == []      # and nothing else did

        # destroy, run the same way, leaves nothing on either host nor in vnet's state
        gone = _vnet_on(sb, "destroy", NAME, "--uri", uri)
        assert gone.returncode == 0, gone.stderr[-3000:]
        assert LibvirtDriver(target).labs().get(NAME) is None
        assert vxlan.devices(sb.host_netns) == []
        assert _left_on_hv2(sb, NAME, owner) == NOTHING
        assert not state.target_dir(target).exists()         # no lab dir, no directory for the URI
        assert remotehosts.remembered(target) == []
        assert not procs.pid_alive(proxy)

        # gc, run the same way, finds a lab whose record is gone on both hosts (this machine's VXLAN
        # devices too) and removes it; its proxy is stopped first, its PID record goes with the dir
        again = _vnet_on(sb, "up", str(lab_file), "--uri", uri, "--no-wait")
        assert again.returncode == 0, again.stderr[-3000:]
        assert len(vxlan.devices(sb.host_netns)) == 3
        forwarding.stop_proxy(state.lab_dir(target, NAME))
        shutil.rmtree(state.lab_dir(target, NAME))
        collected = _vnet_on(sb, "gc", "--uri", uri)
        assert collected.returncode == 0, collected.stderr[-3000:]
        assert LibvirtDriver(target).labs().get(NAME) is None
        assert vxlan.devices(sb.host_netns) == []
        assert _left_on_hv2(sb, NAME, owner) == NOTHING
        assert remotehosts.remembered(target) == []
    finally:       # a failure above must not leave the lab's record (or this URI's directory)
        if state.read(target, NAME) is not None:
            _vnet_on(sb, "destroy", NAME, "--uri", uri)
