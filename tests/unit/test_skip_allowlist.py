"""Under CI=true a skip fails the run unless its reason is on tests/skip-allowlist.txt; the
allowed ones are printed at the end. Each case runs tests/conftest.py (the real policy) in a
pytest of its own (pytester)."""
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
CONFTEST = TESTS / "conftest.py"
ALLOWLIST = TESTS / "skip-allowlist.txt"

LISTED = "no VirtualBox on this machine"
TESTS_FILE = f"""
import pytest

def test_ok():
    pass

def test_listed():
    pytest.skip("{LISTED}: runs on a VirtualBox host")

@pytest.mark.xfail(reason="an expected failure is not a skip")
def test_xfail():
    assert False
"""


@pytest.fixture
def project(pytester):
    pytester.makeconftest(CONFTEST.read_text())
    (pytester.path / "skip-allowlist.txt").write_text(f"# why each is here\n{LISTED}\n")
    pytester.makepyfile(test_listed=TESTS_FILE)
    return pytester


def test_a_listed_skip_passes_under_ci_and_is_printed(project, monkeypatch):
    monkeypatch.setenv("CI", "true")
    result = project.runpytest()
    assert result.ret == 0
    result.stdout.fnmatch_lines(["*skips allowed in CI (tests/skip-allowlist.txt)*",
                                 f"*test_listed.py::test_listed: {LISTED}*"])
    result.assert_outcomes(passed=1, skipped=1, xfailed=1)


def test_an_unlisted_skip_fails_under_ci(project, monkeypatch):
    monkeypatch.setenv("CI", "true")
    project.makepyfile(test_unlisted="""
import pytest

def test_needs_libvirtd():
    pytest.skip("libvirtd is missing")
""")
    result = project.runpytest()
    assert result.ret == 1
    result.stdout.fnmatch_lines(["*skips NOT on tests/skip-allowlist.txt*",
                                 "*test_needs_libvirtd: libvirtd is missing",
                                 "these fail the run under CI=true*"])


def test_an_unlisted_module_level_skip_fails_under_ci(project, monkeypatch):
    monkeypatch.setenv("CI", "true")
    project.makepyfile(test_module="""
import pytest
pytest.skip("needs root", allow_module_level=True)
""")
    assert project.runpytest().ret == 1


def test_a_skip_in_a_fixture_counts_too(project, monkeypatch):
    monkeypatch.setenv("CI", "true")
    project.makepyfile(test_fixture="""
import pytest

@pytest.fixture
def lab():
    pytest.skip("qemu is missing")

def test_lab(lab):
    pass
""")
    assert project.runpytest().ret == 1


def test_outside_ci_an_unlisted_skip_is_only_reported(project, monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    project.makepyfile(test_unlisted="""
import pytest

def test_needs_libvirtd():
    pytest.skip("libvirtd is missing")
""")
    result = project.runpytest()
    assert result.ret == 0
    result.stdout.fnmatch_lines(["*skips NOT on tests/skip-allowlist.txt*",
                                 "*under CI=true they would fail the run*"])


def test_a_failing_run_keeps_its_own_exit_code(project, monkeypatch):
    monkeypatch.setenv("CI", "true")
    project.makepyfile(test_broken="def test_broken():\n    assert False\n")
    assert project.runpytest().ret == 1


def test_every_entry_of_the_real_allowlist_is_a_reason_some_test_gives():
    """An entry that matches no skip in the tests is dead weight that could hide a new one."""
    from tests.conftest import allowed_skips

    entries = allowed_skips(ALLOWLIST)
    sources = "\n".join(p.read_text() for p in TESTS.rglob("test_*.py"))
    assert 0 < len(entries) <= 8
    for entry in entries:
        assert entry in sources, entry
