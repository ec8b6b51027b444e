"""vnet matrix --jobs N: labs at once, with the lab lifecycle replaced by the fakes of
test_matrix. The summary keeps mode x model order, each lab forwards its own host ports, and
Ctrl-C still destroys every lab that started and removes the temporary sandbox."""
import signal
import sys
import threading
import time

import pytest
from click.testing import CliRunner

from provisioner import interrupts
from provisioner.cli import main
from provisioner.ops import matrix, matrixjobs

from .test_matrix import Fake

MODES = ["nat", "natnetwork", "hostonly"]


class Overlapping(Fake):
    """Every `up` waits until a second lab is up too: only concurrent labs get past it."""

    def __init__(self, monkeypatch, **kw):
        super().__init__(monkeypatch, **kw)
        self.barrier = threading.Barrier(2, timeout=10)
        self.ports, self.subnets = {}, {}

    def up(self, lab, target, say):
        self.ports[lab.name] = [f.host_port for n in lab.networks for f in n.port_forwards]
        self.subnets[lab.name] = [n.subnet for n in lab.networks if n.mode != "nat"]
        self.barrier.wait()
        return super().up(lab, target, say)


def test_labs_run_at_once_and_the_summary_keeps_matrix_order(monkeypatch, tmp_path):
    fake = Overlapping(monkeypatch)
    summary = matrix.run(["nat", "natnetwork"], ["virtio"], tmp_path, progress=lambda m: None,
                         jobs=2)
    assert [lab["lab"] for lab in summary["labs"]] == ["mx-nat-virtio", "mx-natnetwork-virtio"]
    assert [lab["verdict"] for lab in summary["labs"]] == ["green", "green"]
    assert summary["complete"] and summary["jobs"] == 2
    # two labs with port forwards at once: no host port is asked for twice
    ports = sum(fake.ports.values(), [])
    assert ports and len(ports) == len(set(ports))
    assert fake.calls[-1][0] == "sandbox down"


def test_one_job_runs_the_labs_one_after_another(monkeypatch, tmp_path):
    fake = Fake(monkeypatch)
    matrix.run(MODES, ["virtio"], tmp_path, progress=lambda m: None, jobs=1)
    order = [c for c in fake.calls if c[0] in ("up", "destroy")]
    assert order == [(kind, f"mx-{m}-virtio") for m in MODES for kind in ("up", "destroy")]


def test_ctrl_c_with_jobs_destroys_the_started_labs_and_the_sandbox(monkeypatch, tmp_path):
    fake = Fake(monkeypatch, interrupt=["mx-nat-virtio"])
    with pytest.raises(KeyboardInterrupt):
        matrix.run(MODES, ["virtio"], tmp_path, progress=lambda m: None, jobs=2)
    ups = [c[1] for c in fake.calls if c[0] == "up"]
    destroyed = [c[1] for c in fake.calls if c[0] == "destroy"]
    assert set(ups) <= set(destroyed) and "mx-nat-virtio" in destroyed
    assert fake.calls[-1][0] == "sandbox down"


def test_a_cancelled_run_stops_a_running_lab_at_its_next_progress_line():
    cancelled = threading.Event()
    say = matrixjobs._stoppable(lambda m: None, cancelled)
    say("before")
    cancelled.set()
    with pytest.raises(KeyboardInterrupt):
        say("creating")
    say("destroying")          # its cleanup goes on reporting


def main_thread_in(*names: str, absent: str = "", deadline: float = 90.0) -> None:
    """Wait until the main thread's stack holds every function in `names` (and not `absent`):
    a signal sent before it waits there would test another moment than the one meant."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        frame, seen = sys._current_frames().get(threading.main_thread().ident), set()
        while frame is not None:
            seen.add(frame.f_code.co_name)
            frame = frame.f_back
        if set(names) <= seen and absent not in seen:
            return
        time.sleep(0.005)
    raise AssertionError(f"the main thread never waited in {names}")


def ctrl_c() -> None:
    signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)


def cleanup_wait_begun() -> None:
    """The main thread waits in await_cleanup, with its own handlers in place."""
    main_thread_in("await_cleanup")
    end = time.monotonic() + 90
    while signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        assert time.monotonic() < end, "await_cleanup never took over SIGINT"
        time.sleep(0.005)


def said_once(said: list[str], text: str, unless=lambda: False, deadline: float = 60.0) -> None:
    """Wait until a progress line holds `text` (or `unless()` holds): the main thread has
    handled the signal sent before. No fixed window: a loaded machine must not decide a test."""
    end = time.monotonic() + deadline
    while time.monotonic() < end and not unless() and not any(text in m for m in said):
        time.sleep(0.01)


class CtrlCWhileDestroying(Fake):
    """mx-nat-virtio's destroy reports a step, then Ctrl-C reaches the main thread (waiting for
    the labs); once the run is cancelled (mx-nat-e1000, booting until then, was stopped at a
    progress line and destroyed) it reports its next step: the step that used to raise and
    leave the lab half destroyed."""

    def __init__(self, monkeypatch, **kw):
        super().__init__(monkeypatch, **kw)
        self.cancel_seen = threading.Event()

    def up(self, lab, target, say):
        if lab.name == "mx-nat-e1000":          # boots until the run is cancelled
            for _ in range(6000):
                say("booting")
                self.cancel_seen.wait(0.01)
        return super().up(lab, target, say)

    def destroy(self, lab_name, say):
        self.calls.append(("destroy", lab_name))
        if lab_name == "mx-nat-e1000":
            self.cancel_seen.set()
        if lab_name == "mx-nat-virtio":
            say("removing vm1")
            main_thread_in("run_concurrently", "wait", absent="await_cleanup")
            ctrl_c()
            assert self.cancel_seen.wait(timeout=90), "the run was never cancelled"
            self.after_cancel()
            say("removing vm2 and the network")
            self.calls.append(("destroyed", lab_name))
        return []

    def after_cancel(self) -> None:
        pass


def run_interrupted(fake, tmp_path, said=None):
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)   # Ctrl-C raises
    try:
        with pytest.raises(KeyboardInterrupt):
            matrix.run(["nat"], ["virtio", "e1000"], tmp_path,
                       progress=(said.append if said is not None else lambda m: None), jobs=2)
    finally:
        signal.signal(signal.SIGINT, previous)


def test_ctrl_c_while_a_worker_destroys_its_lab_lets_the_destroy_finish(monkeypatch, tmp_path):
    fake = CtrlCWhileDestroying(monkeypatch)
    run_interrupted(fake, tmp_path)
    assert ("destroyed", "mx-nat-virtio") in fake.calls
    assert ("up", "mx-nat-e1000") not in fake.calls      # stopped while booting
    assert fake.calls[-1][0] == "sandbox down"


class SecondCtrlCWhileDestroying(CtrlCWhileDestroying):
    """As above, and a second Ctrl-C reaches the main thread while it waits for that destroy;
    the destroy goes on until the main thread has answered that Ctrl-C, or the sandbox went
    down under it (the defect)."""

    def __init__(self, monkeypatch, said: list[str], **kw):
        super().__init__(monkeypatch, **kw)
        self.said = said

    def after_cancel(self) -> None:
        cleanup_wait_begun()
        ctrl_c()
        said_once(self.said, "Ctrl-C again", unless=lambda: ("sandbox down", self.sandbox)
                  in self.calls)

    @property
    def sandbox(self):
        return next(c[1] for c in self.calls if c[0] == "sandbox up")


def test_a_second_ctrl_c_does_not_end_the_wait_for_a_running_destroy(monkeypatch, tmp_path):
    """The sandbox goes down only after every worker is done: a worker that outlived it wrote
    a lab's key into a sandbox that no longer existed, and nothing removed it."""
    said: list[str] = []
    fake = SecondCtrlCWhileDestroying(monkeypatch, said)
    run_interrupted(fake, tmp_path, said)
    kinds = [c[0] for c in fake.calls]
    assert kinds.index("destroyed") < kinds.index("sandbox down")
    assert any("lab(s) to destroy what they made (Ctrl-C again" in m for m in said)


def test_a_ctrl_c_while_labs_are_submitted_still_waits_for_the_running_ones(monkeypatch):
    """Submitting a lab waits for its new worker thread to start; a lab submitted before may
    already run. A Ctrl-C in that wait lost the running lab's future: nothing waited for its
    destroy, and the sandbox went down under it."""
    sent, destroyed = threading.Event(), threading.Event()

    class SlowToStart(matrixjobs.ThreadPoolExecutor):
        def submit(self, fn, /, *args, **kwargs):
            future = super().submit(fn, *args, **kwargs)
            sent.wait(timeout=30)          # the main thread waits while lab 0 runs
            return future

    def one(i, say):
        if i == 0:
            ctrl_c()
            sent.set()
            time.sleep(0.3)                # its destroy, under way
            destroyed.set()
        return i

    monkeypatch.setattr(matrixjobs, "ThreadPoolExecutor", SlowToStart)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            matrixjobs.run_concurrently(2, 2, one, lambda finished: None, lambda m: None)
        assert destroyed.is_set(), "returned before the running lab was done"
    finally:
        signal.signal(signal.SIGINT, previous)


class StuckDestroy(CtrlCWhileDestroying):
    """mx-nat-virtio's destroy hangs (a call that never returns) after the first Ctrl-C."""

    def __init__(self, monkeypatch, said: list[str], **kw):
        super().__init__(monkeypatch, **kw)
        self.release, self.said = threading.Event(), said

    def after_cancel(self) -> None:
        cleanup_wait_begun()
        ctrl_c()
        # two signals before the main thread runs its handler are handled as one: the second
        # is sent once the first was answered
        said_once(self.said, "Ctrl-C again")
        ctrl_c()
        assert self.release.wait(timeout=90)


def test_a_third_ctrl_c_stops_waiting_for_a_destroy_that_hangs(monkeypatch, tmp_path):
    said: list[str] = []
    fake = StuckDestroy(monkeypatch, said)
    try:
        run_interrupted(fake, tmp_path, said)
        assert any(m.startswith("stopped waiting for") for m in said)
        assert fake.calls[-1][0] == "sandbox down"
    finally:
        fake.release.set()          # the hung destroy ends with the test


def test_a_pending_interrupt_waits_until_the_cleanup_is_done():
    """A Ctrl-C noted in a finalizer is raised by the next progress line, but not by one of a
    cleanup (a lab being destroyed): by the first line after it."""
    interrupts._PENDING.set()
    try:
        with interrupts.cleaning_up():
            interrupts.raise_pending()
        with pytest.raises(KeyboardInterrupt):
            interrupts.raise_pending()
    finally:
        interrupts._PENDING.clear()


def test_default_jobs_two_per_core_within_free_memory(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    assert 1 <= matrix.default_jobs(10) <= 4
    assert matrix.default_jobs(1) == 1


def test_cli_refuses_zero_jobs_with_exit_2(tmp_path):
    result = CliRunner().invoke(main, ["matrix", "--jobs", "0", "--report-dir", str(tmp_path)])
    assert result.exit_code == 2 and "--jobs" in result.output
    assert not (tmp_path / "summary.json").exists()


def test_labs_at_once_never_share_a_subnet(monkeypatch, tmp_path):
    """natnetwork and internal both prefer 192.168.150.0/24: at once in one sandbox, the host's
    probe of one lab's vm1 reached the other lab's vm1 (seen: internal host_to_vm red)."""
    fake = Overlapping(monkeypatch)
    fake.barrier = threading.Barrier(1)          # any order: this test is about addresses
    matrix.run(["natnetwork", "hostonly", "internal"], ["virtio", "e1000"], tmp_path,
               progress=lambda m: None, jobs=2)
    subnets = sum(fake.subnets.values(), [])
    assert len(subnets) == 6 and all(s is not None for s in subnets)
    assert not any(a.overlaps(b) for i, a in enumerate(subnets) for b in subnets[i + 1:])
