"""A lab's host-side processes end with the lab, by their records, even when the vnet that
started them was killed first (a review found a `vnet verify` killed mid-capture left tcpdump
running, and neither destroy nor gc stopped it). Real sleeping children stand in for tcpdump
and ansible-playbook; their argv names what the record's marker names, as the real ones do."""
from __future__ import annotations

import subprocess
import sys
import time
import uuid

import pytest

from provisioner.host import labhelpers, procs, sandbox, state


def recorded_child(record, marker: str) -> subprocess.Popen:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", marker])
    while not procs.mentions(procs.proc_argv(child.pid) or [], marker):
        time.sleep(0.01)                 # until the child has exec'd (its own argv)
    record.parent.mkdir(parents=True, exist_ok=True)
    procs.write(record, procs.Record(child.pid, procs.start_time(child.pid), marker))
    return child


@pytest.fixture
def lab_dir(tmp_path):
    d = tmp_path / "lab"
    d.mkdir()
    return d


def test_stop_all_ends_a_capture_and_an_early_run_by_their_records(lab_dir):
    capture = recorded_child(lab_dir / "capture-4242-0.pid", str(lab_dir / "capture-4242-0.bpf"))
    early = recorded_child(lab_dir / labhelpers.EARLY_RUN_RECORD, str(lab_dir / "ansible"))
    labhelpers.stop_all(lab_dir, lambda m: None)
    assert capture.wait(timeout=10) is not None and early.wait(timeout=10) is not None
    assert not list(lab_dir.glob("capture-*.pid"))
    assert not (lab_dir / labhelpers.EARLY_RUN_RECORD).exists()


def test_a_record_whose_process_is_another_one_now_is_not_killed(lab_dir):
    """PID reuse: the record's marker is not in that process's argv, so it is left alone."""
    stranger = recorded_child(lab_dir / "capture-1-0.pid", "someone-elses-process")
    procs.write(lab_dir / "capture-1-0.pid", procs.Record(
        stranger.pid, procs.start_time(stranger.pid), str(lab_dir / "capture-1-0.bpf")))
    labhelpers.stop_all(lab_dir, lambda m: None)
    assert stranger.poll() is None
    stranger.kill()
    stranger.wait()


def test_sandbox_down_stops_the_captures_its_labs_left(tmp_path, monkeypatch):
    monkeypatch.setenv("VNET_STATE_DIR", str(tmp_path))
    gone = f"ut{uuid.uuid4().hex[:6]}"
    lab = tmp_path / "labs" / f"sandbox-{gone}" / "tunnels"
    lab.mkdir(parents=True)
    (lab / state.MARKER).touch()
    capture = recorded_child(lab / "capture-4242-0.pid", str(lab / "capture-4242-0.bpf"))
    sandbox.down(gone, progress=lambda m: None)
    assert capture.wait(timeout=10) is not None and not lab.exists()


def test_terminate_signals_through_a_pidfd_never_by_a_pid_number(monkeypatch):
    """Between SIGTERM and SIGKILL a process may end and its PID go to another process: a kill
    by number would hit that one. Every signal goes through the pidfd taken at the start."""
    stubborn = subprocess.Popen([sys.executable, "-c", "import signal, time; "
                                 "signal.signal(signal.SIGTERM, signal.SIG_IGN); print(1, flush=True); "
                                 "time.sleep(60)"], stdout=subprocess.PIPE)
    assert stubborn.stdout.readline().strip() == b"1"      # its SIGTERM handler is in place
    quick = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])

    def no_kill_by_number(pid, sig):
        raise AssertionError(f"os.kill({pid}, {sig}) by PID number")
    monkeypatch.setattr(procs.os, "kill", no_kill_by_number)
    procs.terminate([stubborn.pid, quick.pid], timeout=0.5)
    # (terminate reaps its own children, so their exit status is gone: ending is the proof;
    # the stubborn one ignores SIGTERM, so only the SIGKILL ended it)
    assert stubborn.wait(timeout=10) is not None and quick.wait(timeout=10) is not None


def test_a_ctrl_c_while_a_helper_starts_waits_until_it_is_recorded(tmp_path, monkeypatch):
    """The helper runs in its own session (a Ctrl-C does not reach it): interrupted between
    its start and its record, it would run on unrecorded. The Ctrl-C takes its course once the
    record is written, and the helper can be stopped by it."""
    import os
    import signal

    from provisioner.host import runner

    real_spawn = runner.spawn

    def interrupted_spawn(*args, **kw):
        proc = real_spawn(*args, **kw)
        os.kill(os.getpid(), signal.SIGINT)     # the Ctrl-C lands right after the start
        time.sleep(0.1)                        # (a Python handler would run by now)
        return proc
    monkeypatch.setattr(runner, "spawn", interrupted_spawn)
    record, marker = tmp_path / "helper.pid", str(tmp_path / "helper-marker")
    with pytest.raises(KeyboardInterrupt):
        procs.spawn([sys.executable, "-c", "import time; time.sleep(60)", marker], record, marker,
                    log_path=str(tmp_path / "helper.log"))
    assert procs.read(record) is not None
    assert procs.stop(record) is not None
