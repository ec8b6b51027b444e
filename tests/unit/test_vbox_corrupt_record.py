"""A corrupt or incomplete lab record does not stop a VirtualBox destroy (issue 10, point 6):
the VMs tagged with the lab and this state root's owner id are still removed."""
from __future__ import annotations

import json

from provisioner import state
from provisioner.drivers import vbox_exec
from tests.unit.test_vbox_exec import StandIn, lab


def _record_path():
    return state.lab_dir(vbox_exec.TARGET, "internal") / "lab.json"


def test_destroy_with_a_corrupt_record_still_removes_the_tagged_vms(tmp_path, monkeypatch):
    vbox = StandIn(tmp_path, monkeypatch)
    vbox_exec.up(lab("internal"), vbox.say, wait=False)
    assert sorted(vbox.vms()) == ["vnet-internal-vm1", "vnet-internal-vm2"]
    _record_path().write_text('{"torn": ')
    vbox_exec.destroy("internal", vbox.say)
    assert vbox.vms() == {}
    assert any("corrupt" in line and line.startswith("warning:") for line in vbox.progress)
    assert not _record_path().parent.exists()


def test_destroy_with_a_record_without_teardown_still_removes_the_tagged_vms(tmp_path,
                                                                               monkeypatch):
    vbox = StandIn(tmp_path, monkeypatch)
    vbox_exec.up(lab("internal"), vbox.say, wait=False)
    record = json.loads(_record_path().read_text())
    del record["teardown"]
    _record_path().write_text(json.dumps(record))
    vbox_exec.destroy("internal", vbox.say)
    assert vbox.vms() == {}
