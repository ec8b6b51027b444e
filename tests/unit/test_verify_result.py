"""The verify result is built in one place (provisioner/verify/result.py) for verify, the
unbooted labs of a matrix and a matrix's labs that never ran; the JSON keys keep their order."""
from __future__ import annotations

from datetime import datetime

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


def test_the_verify_breakdown_reads_the_ansible_run_from_its_events():
    from provisioner.verify.ansible import PROBE_TASK, run_timings

    def event(name, at, host=None, task=PROBE_TASK):
        return {"event": name, "created": f"2026-11-30T09:00:{at:06.3f}+00:00",
                "event_data": {"host": host, "task": task} if host else {}}
    began = datetime.fromisoformat("2026-11-30T09:00:00+00:00").timestamp()
    events = iter([event("playbook_on_start", 1.0), event("playbook_on_task_start", 1.5),
                   event("runner_on_start", 1.5, "vm1", "Build this guest's tunnel ends"),
                   event("runner_on_start", 2.0, "vm1"), event("runner_on_start", 2.1, "vm2"),
                   event("runner_on_ok", 4.0, "vm1"), event("runner_on_ok", 5.1, "vm2")])
    found = run_timings(events, began, began + 5.6)      # a generator, as ansible-runner's
    assert found == {"vm1": {"probe_task_s": 2.0, "controller_start_s": 1.5, "wrapup_s": 0.5},
                     "vm2": {"probe_task_s": 3.0, "controller_start_s": 1.5, "wrapup_s": 0.5}}


def test_the_verify_breakdown_spans_the_moments_verify_marked():
    from provisioner.verify.run import breakdown
    found = breakdown(10.0, {"prepared": 10.5, "guests": 10.6, "guests_done": 14.6,
                             "side:host": 3.9, "per_guest": {"vm1": {"probe_task_s": 3.0}}}, 15.0)
    assert found == {"prepare_s": 0.5, "guests_s": 4.0, "host_side_s": {"host": 3.9},
                     "finish_s": 0.4, "per_guest": {"vm1": {"probe_task_s": 3.0}}}
