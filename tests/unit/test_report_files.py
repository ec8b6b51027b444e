"""Report files land where the user says without following what is planted there: vnet matrix
writes fixed names (mx-<mode>-<model>.json/.xml) into --report-dir, which may be a shared
directory such as /tmp/m, and vnet runs as root. A symlink planted under a report's name is
replaced by the report, never written through."""
from __future__ import annotations

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
