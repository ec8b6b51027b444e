"""Concurrent runs (issue 10, point 7): the sandbox and lab locks, and state files written through
unique temporary names. Pairs run at once in threads or processes; no timing assertions: the
tests wait for the waiting run to say that it waits."""
from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from provisioner.drivers.libvirt import lifecycle
from provisioner.host import locks, sandbox, state
from provisioner.errors import VnetError
from provisioner.host.state import Target

TARGET = Target(uri="qemu:///system", sandbox="h3t")
DEADLINE = 60.0            # generous: a stuck test fails instead of hanging


@pytest.fixture(autouse=True)
def root(tmp_path, monkeypatch):
    monkeypatch.setenv("VNET_STATE_DIR", str(tmp_path))
    monkeypatch.setattr(locks, "FIRST_NOTE_SECONDS", 0.0)    # say "waiting" at once
    monkeypatch.setattr(locks, "POLL_SECONDS", 0.01)
    return tmp_path


def wait_for(condition, what: str) -> None:
    end = time.monotonic() + DEADLINE
    while not condition():
        assert time.monotonic() < end, f"never happened: {what}"
        time.sleep(0.01)


def test_a_second_holder_waits_says_for_whom_and_runs_after_the_first():
    events, said = [], []
    release = threading.Event()

    def first():
        with locks.held("lab", "x"):
            events.append("first in")
            release.wait(DEADLINE)
            events.append("first out")

    def second():
        with locks.held("lab", "x", said.append):
            events.append("second in")

    a = threading.Thread(target=first)
    a.start()
    wait_for(lambda: events == ["first in"], "the first run holds the lock")
    b = threading.Thread(target=second)
    b.start()
    wait_for(lambda: said, "the second run says that it waits")
    assert events == ["first in"]                        # the second is still outside
    assert said[0].startswith(f"waiting for lab x's lock held by pid {os.getpid()}")
    release.set()
    a.join()
    b.join()
    assert events == ["first in", "first out", "second in"]


def test_different_names_do_not_wait_for_each_other():
    with locks.held("lab", "x"):
        with locks.held("lab", "y"):
            with locks.held("sandbox", "x"):
                pass


def _hold_forever(path_env: str, ready) -> None:
    os.environ["VNET_STATE_DIR"] = path_env
    with locks.held("sandbox", "killed"):
        ready.set()
        time.sleep(DEADLINE)


def test_a_lock_of_a_killed_holder_is_free_at_once(root):
    ctx = multiprocessing.get_context("fork")
    ready = ctx.Event()
    holder = ctx.Process(target=_hold_forever, args=(str(root), ready))
    holder.start()
    assert ready.wait(DEADLINE)
    os.kill(holder.pid, signal.SIGKILL)      # SIGKILL: no cleanup code runs in the holder
    holder.join()
    def take():
        with locks.held("sandbox", "killed"):
            pass
    taker = threading.Thread(target=take)
    taker.start()
    taker.join(DEADLINE)
    assert not taker.is_alive(), "the lock of a killed process was never released"
    assert (root / "locks" / "sandbox-killed.lock").read_text().strip() == str(os.getpid())


@pytest.mark.parametrize("name", ["../x", "a/b", "", "X", "a\n", ".."])
def test_lock_names_stay_in_the_lock_dir(root, name):
    with pytest.raises(VnetError, match="cannot name a lock"):
        with locks.held("lab", name):
            pass
    assert not (root / "locks").exists()


# --- unique temporary names ----------------------------------------------------------------------

def _save_many(root: str, who: int, rounds: int) -> None:
    os.environ["VNET_STATE_DIR"] = root
    for i in range(rounds):
        state.save(TARGET, "race", {"writer": who, "round": i, "pad": "x" * 4096})


def test_concurrent_saves_never_fail_or_leave_a_torn_file(root):
    """Two processes save one lab's record at once. A fixed temporary name (the old
    lab.json.tmp) lets one writer rename the other's half-written file, or find it gone."""
    ctx = multiprocessing.get_context("fork")
    writers = [ctx.Process(target=_save_many, args=(str(root), who, 300)) for who in (1, 2)]
    for w in writers:
        w.start()
    for w in writers:
        w.join()
    assert [w.exitcode for w in writers] == [0, 0]
    record = json.loads((state.lab_dir(TARGET, "race") / "lab.json").read_text())
    assert record["round"] == 299
    assert sorted(p.name for p in state.lab_dir(TARGET, "race").iterdir()) == [".vnet-lab", "lab.json"]


def test_write_atomic_keeps_the_old_file_when_writing_fails(root, monkeypatch):
    target = root / "f.json"
    locks.write_atomic(target, "old\n")
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        locks.write_atomic(target, "new\n")
    assert target.read_text() == "old\n" and [p.name for p in root.iterdir()] == ["f.json"]


def test_write_atomic_never_changes_the_mode_of_a_file_a_symlink_leads_to(root, monkeypatch):
    """A report's --out directory may be writable by someone else, who swaps the temporary
    file's name for a symlink while vnet (root) writes it: the mode is set through the open
    descriptor, so the symlink's target keeps its own."""
    victim = root / "shadow"
    victim.write_text("secret\n")
    victim.chmod(0o600)
    real_fsync = os.fsync

    def swap(fd):
        real_fsync(fd)
        (tmp,) = root.glob(".report.json.*.tmp")
        tmp.unlink()
        tmp.symlink_to(victim)
    monkeypatch.setattr(os, "fsync", swap)
    locks.write_atomic(root / "report.json", "{}\n", mode=0o644)
    assert victim.stat().st_mode & 0o777 == 0o600 and victim.read_text() == "secret\n"


# --- the locks in lifecycle and sandbox ----------------------------------------------------------

def test_up_and_destroy_of_one_lab_never_interleave(monkeypatch):
    """destroy, started while up runs, waits for up to finish, then removes the lab."""
    events, said = [], []
    inside_up = threading.Event()
    finish_up = threading.Event()

    def fake_up(lab, target, driver, progress, wait):
        events.append("up start")
        inside_up.set()
        finish_up.wait(DEADLINE)
        events.append("up end")
        return {}

    monkeypatch.setattr(lifecycle.LibvirtDriver, "conn", property(lambda self: object()))
    from provisioner import doctor
    monkeypatch.setattr(doctor, "preflight", lambda lab, target: None)

    class Lab:
        name = "web"

    up = threading.Thread(target=lifecycle.up, args=(Lab(), TARGET, lambda m: None),
                          kwargs={"bring_up": fake_up})
    up.start()
    assert inside_up.wait(DEADLINE)
    destroy = threading.Thread(target=lifecycle.destroy, args=("web", TARGET, said.append),
                               kwargs={"tear_down": lambda *a: events.append("destroy") or []})
    destroy.start()
    wait_for(lambda: said, "destroy says that it waits for the lab's lock")
    assert "waiting for lab sandbox-h3t-web's lock" in said[0]
    finish_up.set()
    up.join()
    destroy.join()
    assert events == ["up start", "up end", "destroy"]


def test_sandbox_up_and_down_hold_the_sandbox_lock(monkeypatch):
    """A second `sandbox up` waits for the first and then finds the sandbox up; `down` waits
    too (the real pair runs in tests/integration/test_sandbox.py)."""
    events, said = [], []
    inside = threading.Event()
    release = threading.Event()
    ups = []

    def fake_up(sb, progress, *_hosts):
        if not ups:
            ups.append(sb.name)
            inside.set()
            release.wait(DEADLINE)
            events.append("created")
        else:
            events.append("already up")
        return sb

    fakes = {"check": lambda sb: None, "create": fake_up}
    first = threading.Thread(target=sandbox.up, args=("h3t", lambda m: None), kwargs=fakes)
    first.start()
    assert inside.wait(DEADLINE)
    second = threading.Thread(target=sandbox.up, args=("h3t", said.append), kwargs=fakes)
    down = threading.Thread(target=sandbox.down, args=("h3t", said.append),
                            kwargs={"remove": lambda sb, progress: events.append("down")})
    second.start()
    wait_for(lambda: said, "the second up waits")
    down.start()
    wait_for(lambda: len(said) >= 2, "down waits")
    assert events == []
    release.set()
    for t in (first, second, down):
        t.join()
    assert events[0] == "created" and sorted(events[1:]) == ["already up", "down"]
    assert all("waiting for sandbox h3t's lock held by pid" in m for m in said)


def test_the_lock_holder_pid_is_shown_across_processes(root):
    """A run in another process holds the lab lock; this one names that process's pid."""
    code = ("import os, sys, time; from provisioner.host import locks\n"
            "with locks.held('lab', 'other'):\n"
            "    print('held', flush=True); sys.stdin.read()\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": os.getcwd()})
    try:
        assert proc.stdout.readline().strip() == "held"
        said = []

        def wait_then_release():
            with locks.held("lab", "other", said.append):
                pass
        waiter = threading.Thread(target=wait_then_release)
        waiter.start()
        wait_for(lambda: said, "the waiting message")
        assert f"held by pid {proc.pid}" in said[0]
    finally:
        proc.stdin.close()
        proc.wait()
    waiter.join()


def test_sandbox_down_waits_for_a_lab_up_in_that_sandbox(monkeypatch):
    """Labs hold their sandbox's lock shared: two labs run at once, `sandbox down` waits."""
    events, said = [], []
    inside = threading.Event()
    finish = threading.Event()

    def fake_up(lab, target, driver, progress, wait):
        events.append(f"up {lab.name}")
        inside.set()
        finish.wait(DEADLINE)
        events.append(f"up {lab.name} end")
        return {}

    monkeypatch.setattr(lifecycle.LibvirtDriver, "conn", property(lambda self: object()))
    from provisioner import doctor
    monkeypatch.setattr(doctor, "preflight", lambda lab, target: None)

    class Lab:
        name = "web"

    up = threading.Thread(target=lifecycle.up, args=(Lab(), TARGET, lambda m: None),
                          kwargs={"bring_up": fake_up})
    up.start()
    assert inside.wait(DEADLINE)
    lifecycle.destroy("other", TARGET, lambda m: None,      # another lab: no wait
                      tear_down=lambda name, *a: events.append(f"destroy {name}"))
    down = threading.Thread(target=sandbox.down, args=("h3t", said.append),
                            kwargs={"remove": lambda sb, progress: events.append("sandbox down")})
    down.start()
    wait_for(lambda: said, "sandbox down says that it waits")
    assert f"waiting for sandbox h3t's lock held by pid {os.getpid()}" in said[0]
    assert events == ["up web", "destroy other"]
    finish.set()
    up.join()
    down.join()
    assert events == ["up web", "destroy other", "up web end", "sandbox down"]


def test_a_forked_child_does_not_keep_a_lock_its_parent_released(root):
    """vnet matrix --jobs: one lab's thread forks (run_in_netns) while another lab holds its
    lock; once that lab releases it, the lock is free although the child still runs."""
    import fcntl

    from provisioner.host.netns import _call_in_child

    go = root / "child-may-end"
    done = []

    def child_that_lingers():
        end = time.monotonic() + DEADLINE
        while not go.exists() and time.monotonic() < end:
            time.sleep(0.01)
        return "child done"
    with locks.held("lab", "forked"):
        worker = threading.Thread(target=lambda: done.append(
            _call_in_child(None, child_that_lingers, (), {})))
        worker.start()
        time.sleep(0.5)                       # the child is forked and waiting
    fd = os.open(locks.lock_path("lab", "forked"), os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)    # BlockingIOError: the child holds it
    finally:
        os.close(fd)
        go.touch()
        worker.join()
    assert done == ["child done"]


# --- lock files that outlive their labs (found on a CI machine: 1816 files in one day) --------

def test_sweep_removes_the_lock_files_nobody_holds_and_keeps_the_held_ones(root):
    for name in ("gone1", "gone2"):
        with locks.held("lab", name):
            pass
    with locks.held("sandbox", "s1", shared=True), locks.held("lab", "busy"):
        assert locks.sweep() == 2
        assert sorted(p.name for p in locks.lock_dir().iterdir()) == \
            ["lab-busy.lock", "sandbox-s1.lock"]
    assert locks.sweep() == 2 and not any(locks.lock_dir().iterdir())


def test_sweep_leaves_what_is_not_a_lock_file_alone(root):
    locks.lock_dir().mkdir(parents=True)
    (root / "elsewhere").write_text("mine")
    (locks.lock_dir() / "link.lock").symlink_to(root / "elsewhere")
    (locks.lock_dir() / "notes.txt").write_text("mine")
    assert locks.sweep() == 0
    assert (root / "elsewhere").read_text() == "mine"
    assert (locks.lock_dir() / "notes.txt").exists() and (locks.lock_dir() / "link.lock").exists()


def test_a_run_waiting_on_a_lock_file_a_sweep_then_removed_waits_for_the_new_holder():
    """B waits on A's lock file. The file is removed while A holds it (what a sweep does: it
    unlinks only a file it holds), and C locks a new file of that name. When A ends, B must not
    take the old, nameless file's lock and run beside C: it waits for C."""
    inside, seen, said = [], [], []
    a_in, a_release, c_in, c_release = (threading.Event() for _ in range(4))

    def holder(name, entered, release):
        with locks.held("lab", "x"):
            inside.append(name)
            entered.set()
            release.wait(DEADLINE)
            inside.remove(name)

    def b():
        with locks.held("lab", "x", said.append):
            seen.append(list(inside))

    threading.Thread(target=holder, args=("a", a_in, a_release)).start()
    assert a_in.wait(DEADLINE)
    runner = threading.Thread(target=b)
    runner.start()
    wait_for(lambda: said, "B waits for A")
    locks.lock_path("lab", "x").unlink()         # the sweep's step, while the lock is held
    threading.Thread(target=holder, args=("c", c_in, c_release)).start()
    assert c_in.wait(DEADLINE)
    a_release.set()
    wait_for(lambda: len(said) > 1 or seen, "B waits again, or runs")
    assert seen == [], "B ran while C held the lock"
    c_release.set()
    runner.join(DEADLINE)
    assert seen == [[]]


def test_a_symlink_under_a_locks_name_is_refused_not_spun_on(root):
    """held() re-checks that the path names the file it locked: with a link there (followed by
    open, not by the check) it would retry forever; it refuses at once instead."""
    locks.lock_dir().mkdir(parents=True)
    (locks.lock_dir() / "other.lock").touch()
    (locks.lock_dir() / "lab-x.lock").symlink_to(locks.lock_dir() / "other.lock")
    outcome = []

    def take():
        try:
            with locks.held("lab", "x"):
                outcome.append("held")
        except VnetError as exc:
            outcome.append(exc.message)
    taker = threading.Thread(target=take, daemon=True)     # (a spinning one must not hang CI)
    taker.start()
    taker.join(DEADLINE)
    assert len(outcome) == 1 and outcome[0].startswith("cannot open the lock file"), outcome
