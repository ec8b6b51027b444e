"""The lab record's schema (provisioner/host/state.py): save writes it, read checks it; a record
from before the field reads as schema 1, one from a newer vnet is refused clearly."""
from __future__ import annotations

import json

import pytest

from provisioner.host import state
from provisioner.host.state import Target

TARGET = Target(uri="test:///default")


@pytest.fixture(autouse=True)
def state_root(tmp_path, monkeypatch):
    monkeypatch.setenv("VNET_STATE_DIR", str(tmp_path / "state"))


def test_save_writes_the_schema_and_read_returns_the_record_as_saved():
    path = state.save(TARGET, "web", {"lab": "web", "backend": "libvirt"})
    assert json.loads((path / state.RECORD).read_text())["schema"] == state.SCHEMA
    assert state.read(TARGET, "web") == {"lab": "web", "backend": "libvirt"}


def test_a_record_without_schema_is_read_as_schema_1():
    path = state.save(TARGET, "old", {"lab": "old"})
    (path / state.RECORD).write_text(json.dumps({"lab": "old", "backend": "libvirt"}))
    assert state.read(TARGET, "old") == {"lab": "old", "backend": "libvirt"}


def test_a_record_from_a_newer_vnet_is_refused_naming_both_schemas():
    path = state.save(TARGET, "new", {"lab": "new"})
    (path / state.RECORD).write_text(json.dumps({"schema": state.SCHEMA + 1, "lab": "new"}))
    with pytest.raises(state.CorruptState, match=f"schema {state.SCHEMA + 1}.*reads schema "
                                                 f"{state.SCHEMA}"):
        state.read(TARGET, "new")
