"""The verify result is built in one place (provisioner/verify/result.py) for verify, the
unbooted labs of a matrix and a matrix's labs that never ran; the JSON keys keep their order."""
from __future__ import annotations

from provisioner.lab.model import Backend
from provisioner.verify.result import build


def test_a_verified_lab_has_the_reports_keys_in_order():
    got = build("web", Backend.VIRTUALBOX, True, [], {"verify": 1.0}, [], inventory="vnet",
                topology={})
    assert list(got) == ["lab", "backend", "inventory", "ok", "checks", "timings", "notes",
                         "topology"]
    assert got["backend"] == "virtualbox"


def test_a_lab_that_never_ran_says_so_and_keeps_its_reason_last():
    got = build("web", "libvirt", False, [], {}, [], booted=False, error="boom")
    assert list(got) == ["lab", "backend", "ok", "booted", "checks", "timings", "notes", "error"]
    assert got["booted"] is False and got["error"] == "boom"
