"""Tunnels in the lab file (issue 17): the shipped example resolves into Tunnel records with
each end's underlay, and every bad combination is one line naming the field (exit 2)."""
import copy
import os
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from provisioner.cli import main
from provisioner.errors import LabFileError
from provisioner.host import tunnelkeys
from provisioner.lab import loader, tunnels
from provisioner.lab.model import TunnelEnd

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "tunnels.yaml"


def example():
    return yaml.safe_load(EXAMPLE.read_text())


def test_the_example_resolves_each_tunnel_with_both_underlay_sides():
    lab = loader.resolve(example())
    assert [(t.name, t.type, t.id) for t in lab.tunnels] == [
        ("l2x", "vxlan", 4242), ("nv", "nvgre", 5001), ("gr", "gre", 7), ("gt", "gretap", 8),
        ("sec", "ipsec", None), ("wg", "wireguard", None)]
    l2x = lab.tunnels[0]
    assert l2x.subnet == IPv4Network("10.99.0.0/24")
    # routed: each end names the network on its own side of router r
    assert l2x.endpoints == (
        TunnelEnd("a", IPv4Interface("10.99.0.1/24"), IPv4Address("10.71.1.10"), "site-a"),
        TunnelEnd("b", IPv4Interface("10.99.0.2/24"), IPv4Address("10.71.2.10"), "site-b"))
    assert lab.tunnels[3].endpoints[1].overlay_ip == IPv4Interface("10.99.3.20/24")
    assert tunnels.gre_key(lab.tunnels[1]) == 5001 << 8      # NVGRE: VSID << 8 | FlowID 0
    assert tunnels.gre_key(lab.tunnels[2]) == 7 and tunnels.gre_key(lab.tunnels[0]) is None


def test_a_gre_key_may_repeat_between_another_pair_on_the_same_underlay():
    data = example()
    data["tunnels"].append({"name": "g2", "type": "gre", "id": 7, "subnet": "10.98.0.0/24",
                            "endpoints": ["r", "b"]})      # gr (a-b, key 7) is on site-b too
    assert loader.resolve(data).tunnels[-1].endpoints[0].network == "site-b"


def test_endpoints_on_one_network_use_it_for_both_ends():
    data = example()
    data["vms"][2]["nics"].append({"network": "site-a", "ip": "10.71.1.20"})
    end_a, end_b = loader.resolve(data).tunnels[0].endpoints
    assert (end_a.network, end_b.network, end_b.underlay_ip) == \
        ("site-a", "site-a", IPv4Address("10.71.1.20"))


def tunnel(d, k=0):
    return d["tunnels"][k]


BAD = [  # (what changes, field path, words in the message)
    (lambda d: tunnel(d).__setitem__("type", "l2tp"), "tunnels.l2x.type",
     "unknown tunnel type 'l2tp'; valid types: vxlan, nvgre, gretap, gre, ipsec, wireguard"),
    (lambda d: tunnel(d).__setitem__("id", 2**24), "tunnels.l2x.id",
     "is not a valid vxlan VNI: use an integer 1..16777215"),
    (lambda d: tunnel(d).__setitem__("id", 0), "tunnels.l2x.id", "1..16777215"),
    (lambda d: tunnel(d).pop("id"), "tunnels.l2x.id", "is required: the vxlan VNI"),
    (lambda d: tunnel(d, 1).__setitem__("id", 2**24), "tunnels.nv.id",
     "not a valid nvgre VSID: use an integer 4096..16777214"),
    (lambda d: tunnel(d, 2).__setitem__("id", 2**32), "tunnels.gr.id",
     "not a valid gre key: use an integer 0..4294967295"),
    (lambda d: tunnel(d, 4).__setitem__("id", 1), "tunnels.sec.id",
     "ipsec tunnels take no id (vnet generates their keys)"),
    (lambda d: tunnel(d, 5).__setitem__("id", 1), "tunnels.wg.id", "wireguard tunnels take no id"),
    (lambda d: tunnel(d).__setitem__("endpoints", ["a", "x"]), "tunnels.l2x.endpoints[1]",
     "no VM named 'x'; VMs in this lab: a, r, b"),
    (lambda d: tunnel(d).__setitem__("endpoints", ["a", "r", "b"]), "tunnels.l2x.endpoints",
     "must list exactly 2 endpoints (vnet's tunnels are point to point)"),
    (lambda d: tunnel(d).__setitem__("endpoints", ["a", "a"]), "tunnels.l2x.endpoints",
     "both endpoints are a"),
    (lambda d: tunnel(d).__setitem__("endpoints", ["a", {"vm": "b", "ip": "10.98.0.1"}]),
     "tunnels.l2x.endpoints[1].ip", "is not a host address of the overlay 10.99.0.0/24"),
    (lambda d: d["vms"][1].__setitem__("router", False), "tunnels.l2x.endpoints",
     "no route reaches from a to b"),
    (lambda d: tunnel(d).__setitem__("subnet", "10.71.2.0/25"), "tunnels.l2x.subnet",
     "overlaps 10.71.2.0/24 of network site-b"),
    (lambda d: tunnel(d, 1).__setitem__("subnet", "10.99.0.0/16"), "tunnels.nv.subnet",
     "overlaps 10.99.0.0/24 of tunnel l2x"),
    (lambda d: d["tunnels"].append({"name": "again", "type": "vxlan", "id": 4242,
                                    "subnet": "10.98.0.0/24", "endpoints": ["b", "a"]}),
     "tunnels.again.id", "vxlan VNI 4242 is already used by tunnel l2x on underlay network "
                         "site-a"),
    (lambda d: (d["vms"].append({"name": "c", "nics": [{"network": "site-b"}]}),
                d["tunnels"].append({"name": "again", "type": "nvgre", "id": 5001,
                                     "subnet": "10.98.0.0/24", "endpoints": ["c", "r"]})),
     "tunnels.again.id", "nvgre VSID 5001 is already used by tunnel nv on underlay network "
                         "site-b"),
    (lambda d: d["tunnels"].append({"name": "again", "type": "gre", "id": 7,
                                    "subnet": "10.98.0.0/24", "endpoints": ["b", "a"]}),
     "tunnels.again.id", "GRE key 7 is already used by tunnel gr between a and b"),
    (lambda d: d["tunnels"].append({"name": "again", "type": "gretap", "id": 5001 << 8,
                                    "subnet": "10.98.0.0/24", "endpoints": ["a", "b"]}),
     "tunnels.again.id", "GRE key 1280256 is already used by tunnel nv"),
    (lambda d: tunnel(d).__setitem__("name", "eth0"), "tunnels.eth0.name",
     "cannot name a guest interface"),
    (lambda d: tunnel(d, 1).__setitem__("name", "l2x"), "tunnels.l2x.name",
     "duplicate tunnel name 'l2x'"),
    (lambda d: tunnel(d).__setitem__("key", "secret"), "tunnels[0].key",
     "unknown field; valid fields: endpoints, id, name, subnet, type"),
    # the kernel's own fallback devices: vnet_tunnel would keep them and never build the tunnel
    *[(lambda d, n=name: tunnel(d).__setitem__("name", n), f"tunnels.{name}.name",
       "is a device the kernel makes itself when it loads a tunnel module")
      for name in ("gre0", "gretap0", "erspan0", "tunl0", "sit0", "ip6tnl0", "ip6gre0")],
    # (ip_vti0, ip6_vti0: no lab name may hold "_" at all)
    (lambda d: tunnel(d).__setitem__("name", "ip_vti0"), "tunnels[0].name", "ip_vti0"),
    # no overlay in loopback, link-local, multicast or the sandbox's Internet and LAN
    *[(lambda d, n=net: tunnel(d).__setitem__("subnet", n), "tunnels.l2x.subnet", words)
      for net, words in (("127.0.0.0/24", "overlaps 127.0.0.0/8 (loopback)"),
                         ("169.254.10.0/24", "overlaps 169.254.0.0/16 (link-local)"),
                         ("239.1.0.0/24", "overlaps 224.0.0.0/4 (multicast)"),
                         ("203.0.113.0/24", "overlaps 203.0.113.0/24 (the sandbox's simulated "
                                            "Internet)"),
                         ("198.51.100.128/25", "overlaps 198.51.100.0/24 (the sandbox's LAN)"))],
]


@pytest.mark.parametrize("mutate,path,words", BAD, ids=[b[1] + ":" + b[2][:24] for b in BAD])
def test_bad_tunnels_name_the_field(mutate, path, words):
    data = example()
    mutate(data)
    with pytest.raises(LabFileError) as exc:
        loader.resolve(data)
    assert exc.value.path == path
    assert words in exc.value.message
    assert "\n" not in exc.value.message


def test_a_bad_tunnel_exits_2_with_one_line_and_renders_nothing(tmp_path):
    data = example()
    tunnel(data)["id"] = 2**24
    lab_file = tmp_path / "lab.yaml"
    lab_file.write_text(yaml.safe_dump(data))
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["render", str(lab_file), "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert "tunnels.l2x.id: 16777216 is not a valid vxlan VNI" in result.output
    assert not out.exists()


def test_a_kernel_fallback_name_exits_2_with_one_line_naming_a_good_name(tmp_path):
    data = example()
    tunnel(data, 2)["name"] = "gre0"
    lab_file = tmp_path / "lab.yaml"
    lab_file.write_text(yaml.safe_dump(data))
    result = CliRunner().invoke(main, ["render", str(lab_file), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    line = [x for x in result.output.splitlines() if "tunnels.gre0.name" in x]
    assert len(line) == 1 and "e.g. gre1" in line[0] and not (tmp_path / "out").exists()


def test_names_the_guest_kernel_does_not_make_are_fine():
    """bond0 is free (bonding is loaded with max_bonds=0), and WireGuard makes no fallback."""
    data = example()
    tunnel(data)["name"], tunnel(data, 5)["name"], tunnel(data, 2)["name"] = "bond0", "wg0", "gre1"
    assert [t.name for t in loader.resolve(data).tunnels][:6:5] == ["bond0", "wg0"]


def test_a_wide_overlay_takes_its_addresses_without_listing_its_hosts(monkeypatch):
    """A /8 listed host by host costs about 1 GB; the default ends are .1 and .2 by arithmetic."""
    monkeypatch.setattr(IPv4Network, "hosts", lambda self: pytest.fail(f"listed {self}"))
    data = example()
    tunnel(data, 5)["subnet"] = "11.0.0.0/8"
    wg = loader.resolve(data).tunnels[5]
    assert [e.overlay_ip for e in wg.endpoints] == [IPv4Interface("11.0.0.1/8"),
                                                    IPv4Interface("11.0.0.2/8")]


def test_the_refused_sandbox_ranges_are_the_sandboxs_own():
    from provisioner.host import sandbox

    refused = {what: net for net, what in tunnels.RESERVED_SUBNETS}
    assert IPv4Address(sandbox.INTERNET_IP) in refused["the sandbox's simulated Internet"]
    assert IPv4Address(sandbox.HOST_UPLINK_IP) in refused["the sandbox's simulated Internet"]
    assert refused["the sandbox's LAN"] == IPv4Network(sandbox.LAN_SUBNET)


def test_create_tunnel_gre_takes_no_kernel_name():
    assert tunnels.default_tunnel("gre", ["vm1", "vm2"])["name"] == "gre1"
    assert tunnels.default_tunnel("gretap", ["vm1", "vm2"])["name"] == "gretap1"
    assert tunnels.default_tunnel("vxlan", ["vm1", "vm2"])["name"] == "vxlan0"


def test_a_cloud_image_vm_cannot_end_a_tunnel():
    data = copy.deepcopy(example())
    data["vms"][2]["image"] = {"url": "https://example.invalid/x.qcow2", "sha256": "a" * 64}
    with pytest.raises(LabFileError) as exc:
        loader.resolve(data)
    assert exc.value.path == "tunnels.l2x.endpoints[1]" and "valid images" in exc.value.message


def test_x25519_matches_rfc7748_and_wireguard_keys_are_a_pair():
    alice = bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
    bob_pub = bytes.fromhex("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
    nine = (9).to_bytes(32, "little")
    assert tunnelkeys.x25519(alice, nine).hex() == \
        "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
    assert tunnelkeys.x25519(alice, bob_pub).hex() == \
        "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742"   # RFC 7748 6.1


def test_keys_are_made_once_per_lab_0600_and_never_in_the_lab_file(tmp_path):
    lab = loader.resolve(example())
    made = tunnelkeys.ensure_secrets(tmp_path, lab.tunnels)
    assert set(made) == {"sec", "wg"}
    assert os.stat(tmp_path / tunnelkeys.FILE).st_mode & 0o777 == 0o600
    assert tunnelkeys.tunnel_secrets(tmp_path) == made
    assert tunnelkeys.ensure_secrets(tmp_path, lab.tunnels) == made     # kept, not remade
    sec, wg = made["sec"], made["wg"]
    assert len(set(sec["spi"])) == 2 and all(s >= 0x1000 for s in sec["spi"])
    assert [len(k) for k in sec["enc"] + sec["auth"]] == [32, 32, 64, 64]
    assert wg["port"] == tunnelkeys.WIREGUARD_PORT and len(wg["public"]) == 2
    import base64
    priv = base64.b64decode(wg["private"][0])
    assert base64.b64encode(tunnelkeys.x25519(priv, (9).to_bytes(32, "little"))).decode() \
        == wg["public"][0]
    other = tmp_path / "other"
    assert tunnelkeys.ensure_secrets(other, lab.tunnels)["sec"]["enc"] != sec["enc"]


def test_create_tunnel_adds_one_tunnel_between_the_first_two_vms_and_the_plan_says_so():
    for kind, ident in (("vxlan", "VNI 4242"), ("ipsec", ""), ("wireguard", "")):
        result = CliRunner().invoke(main, ["create", "--mode", "natnetwork", "--tunnel", kind,
                                           "--dry-run"])
        assert result.exit_code == 0, result.output
        line = [x for x in result.output.splitlines() if x.startswith(f"<!-- tunnel {kind}0:")]
        assert len(line) == 1 and f"{kind}{' ' + ident if ident else ''}, vm1 " in line[0]
        assert "overlay 10.99.0.0/24 (built in the guests)" in line[0]


def test_the_drivers_render_the_same_with_and_without_tunnels():
    """The guests build the tunnels: libvirt's XML and VirtualBox's commands do not change,
    but for `vnet.tunnel=1` on the kernel line of each VM that ends one (its initramfs loads
    the tunnel modules only then: guest/modneeds.py)."""
    from provisioner.ops.plans import plan_for
    from provisioner.lab.model import Backend

    data = example()
    data["networks"][0]["subnet"] = "192.168.56.0/24"     # inside VirtualBox's host-only ranges
    data["vms"][0]["nics"][0]["ip"] = "192.168.56.10"
    data["vms"][1]["nics"][0]["ip"] = "192.168.56.254"
    with_tunnels = loader.resolve(data)
    without = loader.resolve({k: v for k, v in data.items() if k != "tunnels"})
    assert with_tunnels.tunnels and not without.tunnels
    for backend in Backend:
        a, b = plan_for(with_tunnels, backend), plan_for(without, backend)
        flag = " vnet.tunnel=1"
        assert [d.text.replace(flag, "") for d in a.documents] == [d.text for d in b.documents]
        assert a.commands == b.commands
        if backend is Backend.LIBVIRT:
            assert sum(d.text.count(flag) for d in a.documents) == 2     # vm1 and vm2


@pytest.mark.parametrize("argv,words", [
    (["--mode", "nat"], "--tunnel: under --mode nat each VM has a NAT of its own"),
    (["--mode", "hostonly", "--vms", "1"], "--tunnel: a tunnel joins two VMs"),
])
def test_create_tunnel_refuses_labs_it_cannot_join(argv, words):
    result = CliRunner().invoke(main, ["create", *argv, "--tunnel", "vxlan", "--dry-run"])
    assert result.exit_code == 2 and words in result.output, result.output
