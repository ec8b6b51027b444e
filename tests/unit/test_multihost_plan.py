"""What a multi-host lab becomes on each host, without a host: the VXLAN segments (host/vxlan.py)
and each host's libvirt part (drivers/libvirt/placement.py through the renderer)."""
import copy
from ipaddress import IPv4Address

import pytest

from provisioner.drivers.libvirt import multihost
from provisioner.drivers.libvirt.render import Context, LibvirtRenderer
from provisioner.errors import Unsupported
from provisioner.host import vxlan
from provisioner.host.state import Target
from provisioner.lab import loader as labfile

from .test_hosts_labfile import ISSUE_LAB


def _lab(change=None):
    data = copy.deepcopy(ISSUE_LAB)
    data["hosts"].append({"name": "hv3", "uri": "qemu+ssh://root@hv3.example/system",
                          "underlay_ip": "198.51.100.4"})
    data["vms"].append({"name": "c", "host": "hv2", "nics": [{"network": "solo"}]})
    data["networks"].append({"name": "solo", "mode": "hostonly"})
    if change:
        change(data)
    return labfile.resolve(data)


def test_segments_cover_networks_on_two_hosts_or_more():
    plan = vxlan.segments(_lab())
    assert plan["hv3"] == []                       # no VM there: nothing to stretch to it
    by_net = {s.network: s for s in plan["hv2"]}
    assert set(by_net) == {"lan", "back", "mgmt"}  # solo lives on hv2 alone
    lan = by_net["lan"]
    assert lan.remotes == (IPv4Address("198.51.100.2"),) and lan.local == IPv4Address("198.51.100.3")
    assert lan.vni == vxlan.vni_for("two", "lan") and 0 < lan.vni < 2**24
    assert lan.mtu == 1450 and lan.port == 4789 and by_net["mgmt"].port == vxlan.MGMT_PORT
    assert len(lan.device) <= 15 and lan.tag == "vnet:OWNER:two:lan"
    assert [s.vni for s in plan["hv1"]] == [s.vni for s in plan["hv2"]]


def test_three_hosts_replicate_to_every_other_host():
    lab = _lab(lambda d: d["vms"].append({"name": "z", "host": "hv3",
                                          "nics": [{"network": "lan"}]}))
    (lan,) = [s for s in vxlan.segments(lab)["hv1"] if s.network == "lan"]
    assert lan.remotes == (IPv4Address("198.51.100.3"), IPv4Address("198.51.100.4"))
    cmds = vxlan.commands(lan)
    assert cmds[0][:8] == ["ip", "link", "add", lan.device, "type", "vxlan", "id", str(lan.vni)]
    assert ["dstport", "4789"] == cmds[0][cmds[0].index("dstport"):][:2]
    fdb = [c for c in cmds if c[0] == "bridge"]
    assert [c[-1] for c in fdb] == ["198.51.100.3", "198.51.100.4"]
    assert ["ip", "link", "set", lan.device, "master", lan.bridge] in cmds


def _networks(xml_docs):
    return {d.name: d.text for d in xml_docs if d.kind == "network"}


def test_each_host_renders_its_part():
    lab = _lab()
    hv1 = LibvirtRenderer(Context(host="hv1")).plan(lab)
    hv2 = LibvirtRenderer(Context(host="hv2")).plan(lab)
    assert [d.name for d in hv1.documents if d.kind == "domain"] == ["vnet-two-a"]
    assert [d.name for d in hv2.documents if d.kind == "domain"] == ["vnet-two-b", "vnet-two-c"]
    n1, n2 = _networks(hv1.documents), _networks(hv2.documents)
    assert "vnet-two-solo" not in n1 and "vnet-two-solo" in n2
    # home host: NAT, the address and DHCP reservations for the VMs on every host
    assert '<forward mode="nat"/>' in n1["vnet-two-lan"] and 'ip="10.73.0.11"' in n1["vnet-two-lan"]
    assert '<mtu size="1450"/>' in n1["vnet-two-lan"]
    # elsewhere: a plain bridge, no forward, no address
    assert "<forward" not in n2["vnet-two-lan"] and "<ip" not in n2["vnet-two-lan"]
    assert '<mtu size="1450"/>' in n2["vnet-two-lan"]
    # management: the address on the first host only
    assert "<ip" in n1["vnet-two-mgmt"] and "<ip" not in n2["vnet-two-mgmt"]
    # mgmt addresses stay unique across hosts (indexes from the whole lab)
    assert set(hv1.extra["mgmt"].values()).isdisjoint(hv2.extra["mgmt"].values())


def test_a_single_host_render_is_unchanged_by_the_hook():
    data = copy.deepcopy(ISSUE_LAB)
    data.pop("hosts")
    data["networks"][0].pop("home")
    for vm in data["vms"]:
        vm.pop("host")
    lab = labfile.resolve(data)
    plain = LibvirtRenderer(Context()).plan(lab)
    assert "<mtu" not in "".join(d.text for d in plain.documents)
    assert [d.text for d in plain.documents] == [d.text for d in
                                            LibvirtRenderer(Context(host="hv1")).plan(lab).documents]


def test_a_first_host_not_the_target_or_not_this_machine_is_refused_before_anything():
    lab = _lab()
    with pytest.raises(Unsupported, match="first host is where vnet reaches the guests"):
        multihost.host_targets(lab, Target(uri="qemu:///system"))
    # the first host is where vnet runs: a remote URI is not enough for it
    with pytest.raises(Unsupported, match="hosts.hv1: .* is not this machine's libvirtd; .* "
                                          "its URI must be qemu:///system"):
        multihost.host_targets(lab, Target(uri=lab.hosts[0].uri))


def test_cells_of_a_multi_host_lab_name_their_hosts_and_the_matrix_shows_them():
    from provisioner.verify import hostcells
    from provisioner.verify.presentation import matrix_text

    lab = _lab()
    cells = [{"kind": "vm_to_vm", "network": "lan", "source": "a", "target": "b (10.73.0.11)"},
             {"kind": "host_to_vm", "network": "lan", "source": "host", "target": "b (10.73.0.11)"},
             {"kind": "vm_to_internet", "network": "lan", "source": "b",
              "target": "internet (203.0.113.1)"}]
    hostcells.annotate(cells, lab)
    assert [c["hosts"] for c in cells] == ["hv1->hv2", "hv1->hv2", "hv2->-"]
    for c in cells:
        c.update(expected="pass", observed="pass", ok=True, detail="")
    text = matrix_text({"lab": "two", "backend": "libvirt", "checks": cells, "timings": {},
                        "ok": True})
    assert "hosts" in text.splitlines()[1] and "hv1->hv2" in text


def test_single_host_cells_are_left_as_they_were():
    from provisioner.verify import hostcells

    data = copy.deepcopy(ISSUE_LAB)
    data.pop("hosts")
    data["networks"][0].pop("home")
    for vm in data["vms"]:
        vm.pop("host")
    cells = [{"kind": "vm_to_vm", "network": "lan", "source": "a", "target": "b (10.73.0.11)"}]
    hostcells.annotate(cells, labfile.resolve(data))
    assert "hosts" not in cells[0]


def test_status_table_has_a_host_column_only_for_several_hosts():
    from provisioner.cli.labs import _status_table

    vm = {"name": "b", "state": "running",
          "nics": [{"network": "lan", "model": "virtio", "mac": "m", "addresses": []}]}
    assert " host " not in _status_table({"lab": "x", "vms": [vm]}).splitlines()[1] + " "
    text = _status_table({"lab": "x", "vms": [dict(vm, host="hv2")]})
    assert text.splitlines()[1].split()[:2] == ["vm", "host"] and "hv2" in text


def test_the_dry_run_of_a_multi_host_lab_shows_every_host_and_the_vxlan_commands(tmp_path):
    from provisioner.ops.plans import write_plan

    plan = LibvirtRenderer().plan(_lab())
    names = [d.name for d in plan.documents]
    assert "hv1/vnet-two-a" in names and "hv2/vnet-two-b" in names and "hv2/vnet-two-lan" in names
    assert not any(n.startswith("hv3/") and "domain" in n for n in names)
    assert any(line.startswith("hv2: ip link add vx") and "dstport 4789" in line
               for line in plan.extra["vxlan"])
    written = write_plan(plan, tmp_path)
    assert tmp_path / "domains" / "hv2" / "vnet-two-b.xml" in written


def test_ovs_networks_across_hosts_are_refused_with_the_reason_and_tunnels_are_not():
    """preflight refuses before it reaches any host (no libvirt is opened for this)."""
    lab = _lab(lambda d: d["networks"][1].update(switch="openvswitch", mode="internal"))
    targets = {h.name: Target(uri=h.uri, netns=f"ns-{h.name}") for h in lab.hosts}
    with pytest.raises(Unsupported, match=r"networks\.back\.switch: an Open vSwitch network is "
                                          r"not stretched across hosts"):
        multihost.preflight(lab, targets, "0123456789abcdef", recorded=False)
