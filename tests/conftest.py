import os
from pathlib import Path

import pytest

# pytester: tests/unit/test_skip_allowlist.py runs this conftest's skip policy in a pytest of
# its own. (A pytest_plugins list must live in this top-level conftest.)
pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parent.parent
SCHEMAS = Path("/usr/share/libvirt/schemas")
SKIP_ALLOWLIST = Path(__file__).resolve().parent / "skip-allowlist.txt"


@pytest.fixture(scope="session")
def relaxng():
    """libvirt's own RelaxNG schemas (Debian: libvirt0), compiled once per session."""
    lxml = pytest.importorskip("lxml.etree", reason="lxml is missing: pip install .[test]")
    if not (SCHEMAS / "domain.rng").exists():
        pytest.skip(f"libvirt's RNG schemas are missing at {SCHEMAS}: apt-get install libvirt0")
    cache = {}

    def validate(xml: str) -> None:
        doc = lxml.fromstring(xml.encode())
        kind = doc.tag
        if kind not in cache:
            cache[kind] = lxml.RelaxNG(lxml.parse(str(SCHEMAS / f"{kind}.rng")))
        schema = cache[kind]
        if not schema.validate(doc):
            raise AssertionError(f"{kind} XML fails libvirt's schema: {schema.error_log}")
    return validate


def regen_golden() -> bool:
    return os.environ.get("VNET_REGEN_GOLDEN") == "1"


# --- CI: a skip must say why it may happen --------------------------------------------------

def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def allowed_skips(path: Path = SKIP_ALLOWLIST) -> list[str]:
    """The allow-list: one piece of a skip reason a line; '#' starts a comment line."""
    lines = path.read_text().splitlines() if path.exists() else []
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


class SkipPolicy:
    """Under CI=true, a skipped test (or module) fails the run unless its reason contains an
    entry of tests/skip-allowlist.txt: a green CI must not hide a missing install step. The
    allowed skips are printed at the end, so the list stays visible."""

    def __init__(self, allowed: list[str], enforce: bool):
        self.allowed, self.enforce = allowed, enforce
        self.skips: list[tuple[str, str, str | None]] = []     # (test, reason, entry)

    def _note(self, report) -> None:
        if not report.skipped or hasattr(report, "wasxfail"):
            return
        longrepr = report.longrepr
        reason = str(longrepr[2]) if isinstance(longrepr, tuple) and len(longrepr) == 3 \
            else str(longrepr)
        reason = reason.removeprefix("Skipped: ")
        entry = next((e for e in self.allowed if e in reason), None)
        self.skips.append((report.nodeid, reason, entry))

    def pytest_runtest_logreport(self, report):
        self._note(report)

    def pytest_collectreport(self, report):
        self._note(report)

    def unlisted(self):
        return [s for s in self.skips if s[2] is None]

    def pytest_sessionfinish(self, session):
        if self.enforce and self.unlisted() and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter):
        write = terminalreporter.write_line
        listed = [s for s in self.skips if s[2] is not None]
        if self.enforce and listed:
            terminalreporter.section("skips allowed in CI (tests/skip-allowlist.txt)")
            for test, reason, entry in listed:
                write(f"{test}: {reason}")
        if self.unlisted():
            terminalreporter.section("skips NOT on tests/skip-allowlist.txt")
            for test, reason, _ in self.unlisted():
                write(f"{test}: {reason}")
            write("these fail the run under CI=true: install what they need, or add the reason "
                  "to tests/skip-allowlist.txt with why it cannot be had" if self.enforce else
                  "(not in CI: allowed here; under CI=true they would fail the run)")


def pytest_configure(config):
    config.pluginmanager.register(SkipPolicy(allowed_skips(), in_ci()), "vnet-skip-policy")
