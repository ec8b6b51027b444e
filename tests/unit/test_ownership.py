"""Ownership (issue 10, point 8): two state roots on one hypervisor never touch each other's labs.

libvirt: a fake connection holds domains and networks of two owners and of an older vnet (tag
without owner); `gc`, `list` and `destroy` of each state root see only their own. VirtualBox:
the stand-in VBoxManage (tests/fakes/VBoxManage) keeps the vnet/owner extradata."""
from __future__ import annotations

import re

import pytest

from provisioner import lifecycle, owner, state
from provisioner.drivers import libvirt as libvirt_driver
from provisioner.drivers import vbox_exec
from provisioner.drivers.libvirt_render import XMLNS
from provisioner.errors import HypervisorError, VnetError
from provisioner.state import Target
from tests.unit.test_vbox_exec import StandIn, lab as vbox_lab

TARGET = Target(uri="qemu:///system")


# --- the owner id -------------------------------------------------------------------------------

def test_owner_id_is_created_once_per_state_root(tmp_path, monkeypatch):
    monkeypatch.setenv("VNET_STATE_DIR", str(tmp_path / "a"))
    first = owner.owner_id()
    assert re.fullmatch(r"[0-9a-f]{16}", first)
    assert owner.owner_id() == first == (tmp_path / "a" / "owner-id").read_text().strip()
    assert [p.name for p in (tmp_path / "a").iterdir()] == ["owner-id"]   # no temporary left
    monkeypatch.setenv("VNET_STATE_DIR", str(tmp_path / "b"))
    assert owner.owner_id() != first


def test_a_corrupt_owner_id_is_refused_not_replaced(tmp_path, monkeypatch):
    monkeypatch.setenv("VNET_STATE_DIR", str(tmp_path))
    (tmp_path / "owner-id").write_text("garbage\n")
    with pytest.raises(VnetError, match="does not hold an owner id"):
        owner.owner_id()
    assert (tmp_path / "owner-id").read_text() == "garbage\n"


# --- libvirt: a fake connection with objects of two owners ---------------------------------------

class FakeObject:
    def __init__(self, conn, kind: str, name: str, tag: dict | None):
        self.conn, self.kind, self._name = conn, kind, name
        attrs = "".join(f' {k}="{v}"' for k, v in (tag or {}).items())
        meta = f'<metadata><vnet:lab xmlns:vnet="{XMLNS}"{attrs}/></metadata>' if tag else ""
        self.xml = f"<{kind}><name>{name}</name>{meta}</{kind}>"

    def name(self):
        return self._name

    def XMLDesc(self, flags):
        return self.xml

    def isActive(self):
        return True

    def destroy(self):
        pass

    def undefine(self):
        self.conn.objects.remove(self)


class FakeConn:
    def __init__(self):
        self.objects: list[FakeObject] = []

    def add(self, kind: str, object_name: str, **tag) -> None:
        self.objects.append(FakeObject(self, kind, object_name, tag or None))

    def listAllDomains(self, flags):
        return [o for o in self.objects if o.kind == "domain"]

    def listAllNetworks(self, flags):
        return [o for o in self.objects if o.kind == "network"]

    def names(self) -> list[str]:
        return sorted(o.name() for o in self.objects)


@pytest.fixture
def two_roots(tmp_path, monkeypatch):
    """One libvirt URI, state roots A and B, and an older vnet's lab; the test runs as A."""
    ids = {}
    for root in ("a", "b"):
        monkeypatch.setenv("VNET_STATE_DIR", str(tmp_path / root))
        ids[root] = owner.owner_id()
    conn = FakeConn()
    for root, lab in (("a", "web"), ("b", "web2"), ("b", "db")):
        conn.add("domain", f"vnet-{lab}-vm1", name=lab, owner=ids[root], vm="vm1")
        conn.add("network", f"vnet-{lab}-mgmt", name=lab, owner=ids[root], network="mgmt")
    conn.add("domain", "vnet-old-vm1", name="old", vm="vm1")          # an older vnet: no owner
    conn.add("domain", "someone-elses-vm")                           # not vnet's at all
    monkeypatch.setattr(libvirt_driver.LibvirtDriver, "conn", property(lambda self: conn))
    monkeypatch.setenv("VNET_STATE_DIR", str(tmp_path / "a"))
    monkeypatch.setattr(lifecycle.forwarding, "stop_proxy", lambda lab_dir, progress=None: None)
    return conn, ids, tmp_path


def test_gc_removes_only_this_owners_orphans_and_reports_unowned(two_roots):
    conn, ids, _ = two_roots
    said = []
    removed = lifecycle.gc(TARGET, said.append)
    assert sorted(removed) == ["domain vnet-web-vm1", "network vnet-web-mgmt"]
    assert conn.names() == ["someone-elses-vm", "vnet-db-mgmt", "vnet-db-vm1", "vnet-old-vm1",
                            "vnet-web2-mgmt", "vnet-web2-vm1"]
    assert any("left alone: vnet-old-vm1 (lab old, tagged without an owner id" in m for m in said)


def test_list_shows_this_owners_labs_and_marks_unowned_ones(two_roots):
    labs = {l["lab"]: l["state"] for l in lifecycle.list_labs(TARGET)}
    assert labs == {"web": "orphaned (vnet gc)",
                    "old": "no owner id (older vnet; gc leaves it alone)"}


def test_destroy_of_another_owners_lab_touches_nothing(two_roots):
    conn, ids, _ = two_roots
    before = conn.names()
    with pytest.raises(VnetError, match="no lab named 'db'"):
        lifecycle.destroy("db", TARGET, lambda m: None)
    said = []
    with pytest.raises(VnetError, match="no lab named 'old'"):
        lifecycle.destroy("old", TARGET, said.append)
    assert conn.names() == before
    assert any("left alone: vnet-old-vm1" in m for m in said)


def test_destroy_removes_this_owners_lab(two_roots):
    conn, ids, _ = two_roots
    assert sorted(lifecycle.destroy("web", TARGET, lambda m: None)) == \
        ["domain vnet-web-vm1", "network vnet-web-mgmt"]
    assert "vnet-web-vm1" not in conn.names() and "vnet-db-vm1" in conn.names()


def test_up_refuses_an_object_of_the_same_name_of_another_owner(two_roots):
    conn, ids, _ = two_roots
    driver = libvirt_driver.LibvirtDriver(TARGET)
    xml = conn.objects[2].xml                              # vnet-web2-vm1, owner B
    with pytest.raises(HypervisorError, match=f"belongs to lab 'web2' of owner {ids['b']}"):
        driver._check_owner("vnet-web2-vm1", xml, "web2")
    with pytest.raises(HypervisorError, match="older vnet"):
        driver._check_owner("vnet-old-vm1", conn.objects[-2].xml, "old")
    driver._check_owner("vnet-web-vm1", conn.objects[0].xml, "web")      # ours: fine


# --- VirtualBox: vnet/owner extradata on the stand-in ---------------------------------------------

def test_virtualbox_destroy_and_up_leave_another_state_roots_vms_alone(tmp_path, monkeypatch):
    vbox = StandIn(tmp_path, monkeypatch)
    monkeypatch.setenv("VNET_STATE_DIR", str(tmp_path / "a"))
    vbox_exec.up(vbox_lab("internal"), vbox.say, wait=False)
    mine = owner.owner_id()
    assert {vm["extradata"]["vnet/owner"] for vm in vbox.vms().values()} == {mine}
    # an older vnet's VM: tagged with a lab, no owner
    for argv in (("createvm", "--name", "vnet-old-vm1", "--register"),
                 ("setextradata", "vnet-old-vm1", "vnet/lab", "old")):
        assert vbox.vbm(*argv).returncode == 0

    monkeypatch.setenv("VNET_STATE_DIR", str(tmp_path / "b"))       # another state root
    vbox.progress.clear()
    vbox_exec.destroy("internal", vbox.say)
    assert sorted(vbox.vms()) == ["vnet-internal-vm1", "vnet-internal-vm2", "vnet-old-vm1"]
    assert any(f"its vnet/owner is {mine}, not {owner.owner_id()}; left alone" in line
               for line in vbox.progress)
    with pytest.raises(VnetError, match="of this state root did not create"):
        vbox_exec.up(vbox_lab("internal"), vbox.say, wait=False)
    vbox_exec.destroy("old", vbox.say)
    assert "vnet-old-vm1" in vbox.vms()
    assert any("missing (an older vnet)" in line for line in vbox.progress)

    monkeypatch.setenv("VNET_STATE_DIR", str(tmp_path / "a"))       # the owner removes its lab
    vbox_exec.destroy("internal", vbox.say)
    assert sorted(vbox.vms()) == ["vnet-old-vm1"]


def test_destroy_keeps_the_record_of_a_lab_whose_objects_have_no_owner(two_roots):
    """A lab of this state root from before owner ids: its objects are left alone, and so is
    its record, so the lab is not lost from sight."""
    conn, ids, _ = two_roots
    state.save(TARGET, "old", {"lab": "old"})
    with pytest.raises(HypervisorError, match="vnet-old-vm1 carry no owner id") as exc:
        lifecycle.destroy("old", TARGET, lambda m: None)
    assert "virsh undefine" in exc.value.hint
    assert "vnet-old-vm1" in conn.names() and state.read(TARGET, "old") == {"lab": "old"}
