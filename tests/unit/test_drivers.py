"""The driver contract (provisioner/drivers/base.py) and the backend-neutral ops layer
(provisioner/ops/labs.py): every backend is found through the registry, and a lab's record says
which backend it is on, so `status`, `verify` and `destroy` need no --backend and `list`/`gc`
cover VirtualBox too (through the VBoxManage stand-in, tests/fakes/VBoxManage)."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from provisioner.cli import main
from provisioner.drivers.base import Driver, driver_class, renderer
from provisioner.drivers.libvirt import lifecycle
from provisioner.drivers.virtualbox import lifecycle as vbox_lifecycle
from provisioner.errors import Unsupported
from provisioner.host import state
from provisioner.host.state import Target
from provisioner.lab.model import Backend
from tests.unit.test_vbox_exec import StandIn, guest

# libvirt's own in-process test hypervisor: no daemon, nothing of this machine is touched.
TEST_URI = "test:///default"


@pytest.mark.parametrize("backend", list(Backend))
def test_every_backend_has_a_driver_and_a_renderer_in_the_registry(backend):
    cls = driver_class(backend.value)
    assert issubclass(cls, Driver) and cls.backend is backend
    assert renderer(backend).__name__.endswith("Renderer")
    assert isinstance(cls.target_for(None, None), Target)


def test_an_unknown_backend_names_the_valid_ones():
    with pytest.raises(Unsupported, match="valid backends: libvirt, virtualbox"):
        driver_class("xen")


def test_set_link_is_part_of_the_contract_and_says_where_it_is_missing():
    class Bare(Driver):        # a backend that has not implemented it
        backend = Backend.LIBVIRT
        target_for = up = status = destroy = labs = gc = None    # type: ignore[assignment]

    with pytest.raises(Unsupported, match="libvirt"):
        Bare(Target(uri="test:///default")).set_link("lab", "vm1", 0, up=False)


@pytest.mark.parametrize("backend", list(Backend))
def test_set_link_of_a_nic_that_is_not_there_names_it(backend, tmp_path, monkeypatch):
    from provisioner.errors import LabFileError

    monkeypatch.setenv("VNET_STATE_DIR", str(tmp_path / "state"))
    cls = driver_class(backend)
    with pytest.raises(LabFileError, match=r"vms.vm1.nics\[0\]: lab nolab has no such NIC"):
        cls(cls.target_for(None, None)).set_link("nolab", "vm1", 0, up=False)


def test_virtualbox_set_link_pulls_the_nics_cable(vbox, libvirt_test_uri):
    _create(vbox)
    driver = driver_class(Backend.VIRTUALBOX)(vbox_lifecycle.TARGET)
    record = state.read(vbox_lifecycle.TARGET, "natnetwork")

    def cable():
        vm = next(v for v in vbox.state()["vms"].values() if v["name"] == record["vms"]["vm1"])
        return vm["nics"]["1"]["cable"]
    driver.set_link("natnetwork", "vm1", 0, up=False)
    assert cable() is False
    driver.set_link("natnetwork", "vm1", 0, up=True)
    assert cable() is True


@pytest.fixture
def vbox(tmp_path, monkeypatch):
    return StandIn(tmp_path, monkeypatch)


@pytest.fixture
def libvirt_test_uri(monkeypatch):
    monkeypatch.setattr(lifecycle, "target_for", lambda name, uri: Target(uri=uri or TEST_URI,
                                                                            sandbox=name))


def _create(vbox_stand_in):
    with guest(vbox_stand_in, addresses=lambda vm, mac: None):
        result = CliRunner().invoke(main, ["create", "--mode", "natnetwork", "--backend",
                                           "virtualbox", "--no-verify"])
    assert result.exit_code == 0, result.output


def test_a_virtualbox_lab_is_found_by_its_record_without_backend(vbox, libvirt_test_uri):
    _create(vbox)
    status = CliRunner().invoke(main, ["status", "natnetwork", "--format", "json"])
    assert status.exit_code == 0, status.output
    data = json.loads(status.output)
    assert data["lab"] == "natnetwork"
    assert [(vm["name"], vm["state"]) for vm in data["vms"]] == [("vm1", "running"),
                                                                 ("vm2", "running")]
    listed = CliRunner().invoke(main, ["list", "--format", "json"])
    assert listed.exit_code == 0, listed.output
    assert {"lab": "natnetwork", "domains": 2, "networks": 2, "state": "ok"} in \
        json.loads(listed.output)
    gone = CliRunner().invoke(main, ["destroy", "natnetwork"])       # no --backend
    assert gone.exit_code == 0, gone.output
    assert vbox.empty(), vbox.state()
    assert state.read(vbox_lifecycle.TARGET, "natnetwork") is None


def test_a_virtualbox_lab_with_a_corrupt_record_is_still_destroyed_without_backend(
        vbox, libvirt_test_uri):
    _create(vbox)
    (state.lab_dir(vbox_lifecycle.TARGET, "natnetwork") / state.RECORD).write_text("{not json")
    gone = CliRunner().invoke(main, ["destroy", "natnetwork"])
    assert gone.exit_code == 0, gone.output
    assert not vbox.vms(), vbox.state()


def test_gc_removes_a_virtualbox_lab_whose_record_is_gone(vbox, libvirt_test_uri):
    _create(vbox)
    state.remove(vbox_lifecycle.TARGET, "natnetwork")                # a lost state dir
    listed = CliRunner().invoke(main, ["list", "--format", "json"])
    assert {"lab": "natnetwork", "domains": 2, "networks": 0, "state": "orphaned (vnet gc)"} in \
        json.loads(listed.output)
    result = CliRunner().invoke(main, ["gc"])
    assert result.exit_code == 0, result.output
    assert not vbox.vms(), vbox.state()


def test_every_mode_says_how_each_backend_realizes_it():
    from provisioner.lab import modes

    for mode in modes.MODES.values():
        assert mode.vbox_adapter in ("nat", "natnetwork", "hostonly", "intnet", "bridged"), mode
        assert mode.libvirt_interface in ("user", "bridge", "network"), mode
        assert mode.host_forwards in (None, "hostfwd", "proxy"), mode
        assert (mode.host_forwards is not None) == mode.port_forwards, mode


def test_a_mode_added_as_data_renders_on_virtualbox_without_touching_the_renderer(monkeypatch):
    """Adding a mode is one file in lab/modes/: the renderer reads the mode's data."""
    import dataclasses

    from provisioner.drivers.virtualbox.render import VirtualBoxRenderer
    from provisioner.lab import loader, modes

    isolated = dataclasses.replace(modes.MODES["internal"], name="isolated", rank=99)
    monkeypatch.setitem(modes.MODES, "isolated", isolated)
    lab = loader.resolve({"name": "x", "networks": [{"name": "n", "mode": "isolated"}],
                          "vms": [{"name": "a", "nics": [{"network": "n"}]}]}, source="test")
    createvm = [c for c in VirtualBoxRenderer().plan(lab).commands if "--nic1" in c]
    assert createvm and createvm[0][createvm[0].index("--nic1") + 1:][:3] == \
        ("intnet", "--intnet1", "vnet-x-n")


def test_a_nic_model_added_as_data_renders_on_both_backends_without_touching_them(monkeypatch):
    """Adding a NIC model is one file in lab/nics/: the renderers read the model's data."""
    import dataclasses

    from provisioner.drivers.libvirt.render import LibvirtRenderer
    from provisioner.drivers.virtualbox.render import VirtualBoxRenderer
    from provisioner.lab import loader, nics

    rtl = dataclasses.replace(nics.NIC_MODELS["e1000"], name="rtl8139", libvirt_model="rtl8139",
                              virtualbox_type="Am79C973", guest_driver="8139too")
    monkeypatch.setitem(nics.NIC_MODELS, "rtl8139", rtl)
    lab = loader.resolve({"name": "x", "networks": [{"name": "n", "mode": "internal"}],
                          "vms": [{"name": "a", "nics": [{"network": "n", "model": "rtl8139"}]}]},
                         source="test")
    domain = [d.text for d in LibvirtRenderer().plan(lab).documents if d.kind == "domain"][0]
    assert "<model type='rtl8139'/>" in domain or '<model type="rtl8139"/>' in domain
    argv = [c for c in VirtualBoxRenderer().plan(lab).commands if "--nictype1" in c][0]
    assert argv[argv.index("--nictype1") + 1] == "Am79C973"


def test_static_addressing_on_virtualbox_is_the_modes_data(monkeypatch):
    """Mode.vbox_static_addresses, not the mode's name, makes VirtualBox guests take their
    planned addresses statically (a DHCP server that cannot reserve them)."""
    import dataclasses

    from provisioner.drivers.virtualbox.render import VirtualBoxRenderer
    from provisioner.lab import loader, modes

    def boot_line(mode: str) -> str:
        lab = loader.resolve({"name": "x", "networks": [{"name": "n", "mode": mode}],
                              "vms": [{"name": "a", "nics": [{"network": "n"}]}]}, source="test")
        nic = lab.vm("a").nics[0]
        line = VirtualBoxRenderer().plan(lab).extra["boot"]["a"]["cmdline"]
        return next(arg for arg in line.split() if arg.startswith(f"vnet.if={nic.mac},"))

    assert ",dhcp" in boot_line("hostonly") and ",static," in boot_line("natnetwork")
    pinned = dataclasses.replace(modes.MODES["hostonly"], name="pinned", rank=98,
                                 vbox_static_addresses=True)
    monkeypatch.setitem(modes.MODES, "pinned", pinned)
    assert ",static," in boot_line("pinned")
