"""A process vnet started (provisioner/host/procs.py): recorded at spawn, recognised by start time
and command line before any signal, so a reused PID is never hit; corrupt records are reported
and cleaning up goes on. Real short-lived `sleep` processes, no root needed."""
import json
import subprocess
import sys
import time

import pytest

from provisioner.host import procs


SLEEP = [sys.executable, "-I", "-c", "import time; time.sleep(300)"]    # argv[-1]: the marker


@pytest.fixture
def sleeper(tmp_path):
    """A real `sleep` that vnet spawned and recorded; killed at the end whatever happens."""
    marker = str(tmp_path)
    proc = procs.spawn(SLEEP + [marker + "/x"], tmp_path / "sleep.pid", marker,
                       log_path=str(tmp_path / "sleep.log"))
    while not procs.proc_argv(proc.pid):     # /proc/PID/cmdline is empty for a moment after exec
        time.sleep(0.01)
    yield proc
    proc.kill()
    proc.wait()


def test_spawn_records_pid_and_start_time_at_once(sleeper, tmp_path):
    data = json.loads((tmp_path / "sleep.pid").read_text())
    assert data == {"pid": sleeper.pid, "start_time": procs.start_time(sleeper.pid),
                    "marker": str(tmp_path)}
    assert procs.running(tmp_path / "sleep.pid") == sleeper.pid


def test_a_pid_with_another_start_time_is_never_signalled(sleeper, tmp_path):
    """What a reused PID looks like: same number, another process start."""
    rec = procs.read(tmp_path / "sleep.pid")
    procs.write(tmp_path / "sleep.pid", procs.Record(rec.pid, rec.start_time + 1, rec.marker))
    assert procs.running(tmp_path / "sleep.pid") is None
    assert procs.stop(tmp_path / "sleep.pid", timeout=0.5) is None
    assert procs.pid_alive(sleeper.pid)
    assert not (tmp_path / "sleep.pid").exists()      # the stale record is gone


def test_a_pid_whose_command_line_lacks_the_marker_is_never_signalled(sleeper, tmp_path):
    rec = procs.read(tmp_path / "sleep.pid")
    procs.write(tmp_path / "sleep.pid", procs.Record(rec.pid, rec.start_time, "/elsewhere"))
    assert procs.stop(tmp_path / "sleep.pid", timeout=0.5) is None
    assert procs.pid_alive(sleeper.pid)
    # "/a" must not match an argv that names "/ab/...": a sibling sandbox or lab
    assert not procs.mentions(["sleep", str(tmp_path) + "b/x"], str(tmp_path))


def test_terminate_recognises_each_process_again_once_its_pidfd_is_held(sleeper, monkeypatch):
    """Between a caller's check and the pidfd, the PID may pass to another process: terminate
    asks `still` after opening every pidfd, and a process it no longer recognises is never
    signalled (stop() and sandbox down pass their own check)."""
    import os

    order = []
    opened = os.pidfd_open

    def pidfd_open(pid, *flags):
        order.append(("pidfd_open", pid))
        return opened(pid, *flags)
    monkeypatch.setattr(os, "pidfd_open", pidfd_open)
    procs.terminate([sleeper.pid], 0.5, still=lambda pid: order.append(("still", pid)) or False)
    assert order == [("pidfd_open", sleeper.pid), ("still", sleeper.pid)]   # held, then asked
    assert procs.pid_alive(sleeper.pid)
    procs.terminate([sleeper.pid], 5, still=lambda pid: True)
    assert not procs.pid_alive(sleeper.pid)


def test_stop_ends_the_recorded_process_and_removes_its_record(sleeper, tmp_path):
    assert procs.stop(tmp_path / "sleep.pid") == sleeper.pid
    assert not procs.pid_alive(sleeper.pid)
    assert not (tmp_path / "sleep.pid").exists()


@pytest.mark.parametrize("junk", ["", "garbage\n", "12x\n", '{"pid": "x"}', "[1, 2]",
                                  '{"pid": 1, "start_time": 5, "marker": "/"}', "\xff\xfe",
                                  # no start time: it would vouch for any process of that PID
                                  # whose command line has the marker ("-I": any python -I)
                                  '{"pid": 4242, "start_time": null, "marker": "-I"}'])
def test_a_corrupt_pid_file_is_reported_and_cleanup_goes_on(tmp_path, junk):
    path = tmp_path / "portproxy.pid"
    path.write_text(junk)
    with pytest.raises(procs.CorruptRecord, match="is corrupt"):
        procs.read(path)
    warnings = []
    assert procs.stop(path, warnings.append) is None
    assert len(warnings) == 1 and str(path) in warnings[0] and "no process was signalled" \
        in warnings[0]
    assert not path.exists()


def test_a_bare_pid_is_recognised_by_its_command_line_only(sleeper, tmp_path):
    """A program's own pid file (libvirtd writes one) holds only the PID."""
    path = tmp_path / "bare.pid"
    path.write_text(f"{sleeper.pid}\n")
    assert procs.running(path, str(tmp_path), "python") == sleeper.pid
    assert procs.running(path, str(tmp_path), "libvirtd") is None
    assert procs.running(path, "/not/ours") is None


def test_a_process_whose_record_cannot_be_written_is_killed(tmp_path):
    with pytest.raises(OSError):
        procs.spawn(SLEEP + [str(tmp_path)], tmp_path / "missing-dir" / "x.pid",
                    str(tmp_path), log_path=str(tmp_path / "log"))
    out = subprocess.run(["pgrep", "-f", f"time.sleep.300. {tmp_path}"], capture_output=True,
                         text=True)
    assert out.stdout.strip() == "", "the unrecorded process was left running"


def test_stop_hands_terminate_its_record_to_recognise_the_process_again(sleeper, tmp_path,
                                                                         monkeypatch):
    asked = {}
    monkeypatch.setattr(procs, "terminate",
                        lambda pids, timeout, still=None: asked.update(pids=pids, still=still))
    procs.stop(tmp_path / "sleep.pid")
    assert asked["pids"] == [sleeper.pid] and asked["still"](sleeper.pid)
    assert not asked["still"](sleeper.pid + 1)
