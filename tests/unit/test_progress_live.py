"""Progress on a terminal and off it (provisioner/progress.py, progress_live.py): piped or
with CI=true the lines are the plain timestamped ones and events print nothing; on a TTY the
live display (rich) draws each VM's boot state, the verified cells and a download; the boot
wait and the verifier pass those events."""
from __future__ import annotations

import io
import re

import pytest
from rich.console import Console

from provisioner import progress
from provisioner.drivers import boot
from provisioner.progress import Cells, Transfer, VmState, emit
from provisioner.progress_live import LiveProgress

LINE = re.compile(r"^\[\s*\d+\.\ds\] (.*)$")


class Terminal(io.StringIO):
    def isatty(self):
        return True


class Recorder(list):
    """A Progress that also takes events, as the live display does."""

    def __call__(self, message):
        self.append(("line", message))

    def event(self, event):
        self.append(("event", event))


@pytest.mark.parametrize("stream, ci", [(io.StringIO(), None), (Terminal(), "true")],
                         ids=["piped", "CI=true on a terminal"])
def test_plain_lines_when_piped_or_in_ci(monkeypatch, stream, ci):
    monkeypatch.setattr("sys.stderr", stream)
    if ci:
        monkeypatch.setenv("CI", ci)
    else:
        monkeypatch.delenv("CI", raising=False)
    say = progress.progress_printer()
    assert not isinstance(say, LiveProgress)
    say("started 2 VM(s): web1, web2")
    emit(say, VmState("web1", "booting"))          # a plain printer draws no event
    emit(say, Cells(3, 12))
    say("web1 ready")
    lines = stream.getvalue().splitlines()
    assert [LINE.match(line).group(1) for line in lines] == ["started 2 VM(s): web1, web2",
                                                             "web1 ready"]
    assert lines[0].startswith("[  0.0s] ")        # the format of today's lines, unchanged


def test_a_terminal_gets_the_live_display(monkeypatch):
    monkeypatch.setattr("sys.stderr", Terminal())
    monkeypatch.delenv("CI", raising=False)
    assert progress.live_wanted()
    assert isinstance(progress.progress_printer(), LiveProgress)
    assert not isinstance(progress.progress_printer(quiet=True), LiveProgress)


def test_the_live_display_renders_each_vms_state_the_cells_and_a_download():
    console = Console(record=True, force_terminal=True, width=100)
    live = LiveProgress(console)
    try:
        live("started 3 VM(s): web1, web2, db1")
        for vm, state in (("web1", "ready"), ("web2", "address"), ("db1", "booting")):
            emit(live, VmState(vm, state))
        emit(live, Cells(5, 12))
        emit(live, Transfer("downloading debian12", 3 * 2**20, 10 * 2**20))
        snapshot = Console(record=True, force_terminal=True, width=100)
        snapshot.print(live.render())
    finally:
        live.close()
    panel = snapshot.export_text()
    rows = {line.split()[0]: line.split()[1:] for line in panel.splitlines() if line.strip()}
    assert rows["web1"] == ["ready", "4/4"]
    assert rows["web2"] == ["address", "3/4"]
    assert rows["db1"] == ["booting", "2/4"]
    assert "verification: 5 of 12 cells done" in panel
    assert "downloading debian12: 3 of 10 MiB" in panel
    assert "started 3 VM(s): web1, web2, db1" in console.export_text()   # the line itself


class AddressFirst(boot.Boot):
    """web1 shows an address one round before it is ready."""
    poll = 0.0

    def __init__(self):
        self.rounds = 0

    def next_round(self):
        self.rounds += 1

    def check(self, vm):
        return self.rounds >= 3, (["10.0.0.5/24"] if self.rounds >= 2 else [None])

    def alive(self, vm):
        return True

    def triage(self, vm):
        return ""

    def ready_line(self, vm, found):
        return f"{vm} ready: {found}"

    def timed_out(self, pending, timeout):
        raise AssertionError("not reached")


def test_the_boot_wait_passes_each_vms_states_once():
    said = Recorder()
    boot.wait(AddressFirst(), ["web1"], said, timeout=60)
    assert [e.state for kind, e in said if kind == "event"] == ["defined", "booting", "address",
                                                                 "ready"]
    assert ("line", "web1 ready: ['10.0.0.5/24']") in said     # the line is still said


def test_a_download_passes_its_bytes_to_a_live_display_and_writes_no_bar(tmp_path, monkeypatch):
    from provisioner.guest import cloudimages
    from tests.unit.test_cloudimages import qcow2_like

    monkeypatch.setenv("VNET_CACHE_DIR", str(tmp_path / "cache"))
    image = qcow2_like(tmp_path / "deb.qcow2", 3 << 20)
    said, stream = Recorder(), io.StringIO()
    cloudimages.fetch(image, said, stream=stream)
    sizes = [e for kind, e in said if kind == "event"]
    size = (tmp_path / "deb.qcow2").stat().st_size
    assert sizes and sizes[-1] == Transfer("downloading img", size, size)
    assert sizes[0].done < size
    assert stream.getvalue() == ""            # the display draws it; no \r bar under it


def test_piped_stdout_is_not_taken_by_the_live_display(monkeypatch):
    """`vnet verify --format json > file` on a terminal: the JSON must reach the file."""
    out = io.StringIO()
    monkeypatch.setattr("sys.stdout", out)
    live = LiveProgress(Console(file=Terminal(), force_terminal=True, width=80))
    try:
        live("verifying 12 cells of lab web")
        print('{"ok": true}')
    finally:
        live.close()
    assert out.getvalue() == '{"ok": true}\n'
