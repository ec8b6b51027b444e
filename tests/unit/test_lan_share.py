"""Two labs on one sandbox LAN: `vnet create` refuses a second lab whose guests would take
addresses the first one holds (each lab's cells would judge the other's guests), and `vnet
matrix`, which runs labs at once, gives each bridged lab its own block of the LAN."""
import pytest

from provisioner.drivers import base as drivers
from provisioner.errors import LabFileError
from provisioner.host import sandbox, state
from provisioner.lab import lanshare, loader
from provisioner.lab.defaults import default_lab
from provisioner.ops import labs as ops, matrix

from .test_matrix import Fake


def bridged(name, **nic_ips):
    data = default_lab("bridged", "virtio", 2, name)
    for vm in data["vms"]:
        if vm["name"] in nic_ips:
            vm["nics"][0]["ip"] = nic_ips[vm["name"]]
    return data, loader.resolve(data, sandbox.lab_defaults("sb1"))


def test_two_default_bridged_labs_would_share_addresses_and_are_refused():
    _, first = bridged("one")
    _, second = bridged("two")
    with pytest.raises(LabFileError) as caught:
        lanshare.conflicts(second, {"one": first})
    assert "already used by lab one" in caught.value.message
    assert caught.value.path.startswith("vms.") and caught.value.path.endswith(".ip")


def test_labs_with_their_own_addresses_and_labs_off_the_lan_pass():
    _, first = bridged("one")
    vms = [vm.name for vm in first.vms]
    _, second = bridged("two", **{vms[0]: "198.51.100.60", vms[1]: "198.51.100.61"})
    lanshare.conflicts(second, {"one": first})
    internal = loader.resolve(default_lab("internal", "virtio", 2, "three"),
                              sandbox.lab_defaults("sb1"))
    lanshare.conflicts(internal, {"one": first, "three": internal})
    lanshare.conflicts(first, {"one": first})         # a lab does not conflict with itself


def test_blocks_are_disjoint_and_a_full_lan_is_an_error():
    subnet = sandbox.lab_defaults("sb1").bridged_subnet
    blocks = [set(lanshare.block_ips(subnet, loader.FIRST_HOST, i, 2)) for i in range(1, 11)]
    assert all(a.isdisjoint(b) for i, a in enumerate(blocks) for b in blocks[i + 1:])
    with pytest.raises(LabFileError):
        lanshare.block_ips(subnet, loader.FIRST_HOST, 40, 2)


def test_create_refuses_a_lab_on_addresses_a_recorded_lab_holds(monkeypatch, tmp_path):
    monkeypatch.setenv("VNET_STATE_DIR", str(tmp_path))
    fake = Fake(monkeypatch)
    monkeypatch.undo()                        # the real state module: records on disk
    monkeypatch.setenv("VNET_STATE_DIR", str(tmp_path))
    chosen = ops.driver("libvirt", "sb1", None)
    data, first = bridged("one")
    state.save(chosen.target, "one", {"lab": "one", "backend": "libvirt", "sandbox": "sb1",
                                      "lab_data": data})
    _, second = bridged("two")
    with pytest.raises(LabFileError):
        ops.up_on(chosen, second, lambda m: None)
    assert fake.calls == []                   # refused before the driver was asked
    vms = [vm.name for vm in second.vms]
    _, moved = bridged("two", **{vms[0]: "198.51.100.60", vms[1]: "198.51.100.61"})
    ops.up_on(chosen, moved, lambda m: None)
    assert fake.calls == [("up", "two")]


def test_the_matrix_gives_concurrent_bridged_labs_disjoint_addresses(monkeypatch, tmp_path):
    fake = Fake(monkeypatch)
    seen = []
    real_up = fake.up
    fake.up = lambda lab, target, say: (seen.append(lab), real_up(lab, target, say))[1]
    summary = matrix.run(["bridged"], ["virtio", "e1000"], tmp_path, progress=lambda m: None,
                         jobs=2)
    assert [lab["verdict"] for lab in summary["labs"]] == ["green", "green"]
    held = [set(lanshare.lan_addresses(lab)) for lab in seen]
    assert len(held) == 2 and all(held) and held[0].isdisjoint(held[1])
    default = set(lanshare.lan_addresses(bridged("mx-bridged-virtio")[1]))
    assert all(default.isdisjoint(h) for h in held)   # clear of a `vnet create` lab too
    assert drivers.driver_class("libvirt").__name__ == "FakeDriver"
