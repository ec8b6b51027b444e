"""A listener notes its parent before it says "ready" (issue 10, point 6): vnet may be killed
the moment it has read that line, and a listener that read getppid() only afterwards would
take its new parent (init) for vnet and serve forever. Runs the probe's serve() in this
process on a loopback port; os.getppid is replaced by a fake whose answer changes, as a
reparenting would, once "ready" is printed."""
from __future__ import annotations

import builtins

from provisioner.verify import probe_module

VNET, INIT = 4242, 1


def test_the_parent_is_read_before_ready(monkeypatch):
    probe = probe_module()
    ready, after_ready = [], []

    def fake_print(*args, **kwargs):
        ready.extend(a for a in args if "ready" in str(a))

    def fake_getppid():
        if not ready:
            return VNET
        after_ready.append(1)               # vnet was killed right after reading "ready"
        return INIT if len(after_ready) < 3 else 99     # 99 ends the old loop too
    monkeypatch.setattr(probe.os, "getppid", fake_getppid)
    monkeypatch.setattr(builtins, "print", fake_print)
    monkeypatch.setattr(probe, "PARENT_CHECK_SECONDS", 0.01)
    probe.serve(0, "parent-test", host="127.0.0.1")
    assert ready
    assert len(after_ready) == 1, "the listener took init for the vnet that started it"
