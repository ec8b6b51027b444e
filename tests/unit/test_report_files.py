"""Report files land where the user says without following what is planted there: vnet matrix
writes fixed names (mx-<mode>-<model>.json/.xml) into --report-dir, which may be a shared
directory such as /tmp/m, and vnet runs as root. A symlink planted under a report's name is
replaced by the report, never written through."""
from __future__ import annotations

from pathlib import Path

import pytest

from provisioner.verify.presentation import write_report
from tests.report_sample import sample_result


@pytest.mark.parametrize("kind", ["json", "junit", "html"])
def test_a_report_replaces_a_planted_symlink_and_never_writes_through_it(tmp_path, kind):
    victim = tmp_path / "victim"
    victim.write_text("precious")
    reports = tmp_path / "reports"
    reports.mkdir()
    out = reports / "mx-internal-virtio.json"
    out.symlink_to(victim)
    write_report(sample_result(red=True), kind, out)
    assert victim.read_text() == "precious"
    assert out.is_file() and not out.is_symlink()
    assert [p.name for p in reports.iterdir()] == [out.name]      # no temporary left behind


def test_a_stream_the_user_names_is_written_as_a_stream(tmp_path):
    """--out /dev/stdout, /dev/null or a FIFO: written to, never replaced by a regular file."""
    import os
    import threading

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text()))
    reader.start()
    write_report(sample_result(red=True), "json", fifo)
    reader.join(10)
    assert got and '"lab"' in got[0] and fifo.is_fifo()
    write_report(sample_result(red=True), "junit", Path(os.devnull))
    assert Path(os.devnull).is_char_device()


def test_a_matrix_report_never_writes_through_to_a_stream_or_device(tmp_path):
    """vnet matrix's own names in a shared report directory: always replaced whole."""
    import os

    from provisioner.host.locks import write_atomic

    fifo = tmp_path / "mx-nat-virtio.json"
    os.mkfifo(fifo)
    write_report(sample_result(red=True), "json", fifo, write=write_atomic)
    assert fifo.is_file() and not fifo.is_fifo()
