"""`gc` never destroys a lab that has a record under any target key (issue 10, point 8).

Records are kept per target key (a hash of the URI as typed, or the sandbox name) while the
libvirt tags carry only lab name and owner: `qemu:///system` and `qemu+unix:///system` reach
one libvirtd under two keys. Uses the fake libvirt connection of test_ownership.py."""
from __future__ import annotations

import pytest

from provisioner import lifecycle, state
from provisioner.errors import VnetError
from provisioner.state import Target
from tests.unit.test_ownership import two_roots  # noqa: F401 - the fake connection fixture

SPELLED_A = Target(uri="qemu:///system")
SPELLED_B = Target(uri="qemu+unix:///system")


def test_gc_leaves_a_lab_recorded_under_another_spelling_of_the_uri(two_roots):  # noqa: F811
    conn, _, _ = two_roots
    assert SPELLED_A.key != SPELLED_B.key
    state.save(SPELLED_A, "web", {"lab": "web"})
    said = []
    assert lifecycle.gc(SPELLED_B, said.append) == []
    assert "vnet-web-vm1" in conn.names() and "vnet-web-mgmt" in conn.names()
    assert state.read(SPELLED_A, "web") == {"lab": "web"}
    assert any(f"lab web has a record under {SPELLED_A.key}" in line for line in said)


def test_gc_still_removes_a_lab_recorded_nowhere(two_roots):  # noqa: F811
    conn, _, _ = two_roots
    state.save(SPELLED_A, "other", {"lab": "other"})
    assert sorted(lifecycle.gc(SPELLED_B, lambda m: None)) == \
        ["domain vnet-web-vm1", "network vnet-web-mgmt"]


def test_targets_recording_checks_the_name():
    with pytest.raises(VnetError):
        state.targets_recording("../x")
