"""Bonds and routers in the lab file (issue 17): the contract's example resolves, vnet adds the
routes a router implies, and every bad combination is one line naming the field (exit 2)."""
import copy
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from provisioner.cli import main
from provisioner.errors import LabFileError
from provisioner.lab import loader

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "bonds-and-router.yaml"


def example():
    return yaml.safe_load(EXAMPLE.read_text())


def test_the_example_resolves_with_a_bond_and_the_routes_the_router_implies():
    lab = loader.resolve(example())
    a, r, b = lab.vms
    (bond,) = a.bonds
    assert (bond.name, bond.mode, bond.network) == ("bond0", "active-backup", "site-a")
    assert bond.ip == IPv4Interface("10.71.1.10/24")
    assert bond.members == tuple(n.mac for n in a.nics) and bond.mac == a.nics[0].mac
    assert all(n.bond == "bond0" and n.ip is None for n in a.nics)   # the bond has the address
    assert r.router and not r.routes
    assert [(x.destination, x.via, x.router) for x in a.routes] == \
        [(IPv4Network("10.71.2.0/24"), IPv4Address("10.71.1.254"), "r")]
    assert [(x.destination, x.via) for x in b.routes] == \
        [(IPv4Network("10.71.1.0/24"), IPv4Address("10.71.2.254"))]


def test_a_vm_on_both_networks_needs_no_route_and_a_bond_gets_an_automatic_address():
    data = example()
    data["vms"][2]["nics"].append({"network": "site-a"})
    del data["vms"][0]["bonds"][0]["ip"]
    lab = loader.resolve(data)
    assert lab.vms[2].routes == ()
    assert lab.vms[0].bonds[0].ip.ip in IPv4Network("10.71.1.0/24")


def change(path_value):
    data = example()
    path_value(data)
    return data


BAD = [  # (what changes, field path, words in the message)
    (lambda d: d["vms"][0]["nics"].__setitem__(1, {"network": "site-b", "bond": "bond0"}),
     "vms.a.bonds.bond0", "members are on different networks (site-a, site-b)"),
    (lambda d: d["vms"][0]["nics"][1].pop("bond"),
     "vms.a.bonds.bond0", "has 1 member NIC(s); a bond needs at least 2"),
    (lambda d: d["vms"][0]["bonds"][0].__setitem__("mode", "broadcast"),
     "vms.a.bonds[0].mode", "valid modes: active-backup, balance-rr, balance-xor, 802.3ad"),
    (lambda d: d["vms"][0]["nics"][1].__setitem__("bond", "bond1"),
     "vms.a.nics[1].bond", "no bond named 'bond1'; bonds of this VM: bond0"),
    (lambda d: d["vms"][1]["nics"].pop(),
     "vms.r.router", "give it NICs on at least 2 networks"),
    (lambda d: d["vms"][0]["nics"][0].__setitem__("ip", "10.71.1.20"),
     "vms.a.nics[0].ip", "has no address of its own"),
    (lambda d: d["vms"][0]["bonds"][0].__setitem__("name", "eth0"),
     "vms.a.bonds[0].name", "cannot name a guest interface"),
    (lambda d: d["vms"][1].__setitem__("router", "yes"), "vms.r.router", "must be true or false"),
    (lambda d: (d["networks"].append({"name": "own", "mode": "nat"}),
                [n.update(network="own") for n in d["vms"][0]["nics"]],
                d["vms"][0]["bonds"][0].pop("ip")),
     "vms.a.bonds.bond0", "valid modes for a bond's network: bridged, natnetwork"),
    (lambda d: d["vms"][0]["bonds"][0].__setitem__("ip", "10.71.1.254"),
     "vms.r.nics[0].ip", "10.71.1.254 is already used by vms.a.bonds.bond0"),
]


@pytest.mark.parametrize("mutate,path,words", BAD, ids=[b[1] + ":" + b[2][:24] for b in BAD])
def test_bad_bonds_and_routers_name_the_field(mutate, path, words):
    with pytest.raises(LabFileError) as exc:
        loader.resolve(change(mutate))
    assert exc.value.path == path
    assert words in exc.value.message
    assert "\n" not in exc.value.message


def test_bad_bond_exits_2_with_one_line_and_renders_nothing(tmp_path):
    data = change(lambda d: d["vms"][0]["bonds"][0].__setitem__("mode", "broadcast"))
    lab_file = tmp_path / "lab.yaml"
    lab_file.write_text(yaml.safe_dump(data))
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["render", str(lab_file), "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert "vms.a.bonds[0].mode: unknown bond mode 'broadcast'; valid modes:" in result.output
    assert not out.exists()


def test_bonds_and_routers_need_the_tiny_image():
    data = copy.deepcopy(example())
    data["vms"][1]["image"] = {"url": "https://example.invalid/x.qcow2", "sha256": "a" * 64}
    with pytest.raises(LabFileError) as exc:
        loader.resolve(data)
    assert exc.value.path == "vms.r.router" and "valid images for them: tiny" in exc.value.message
