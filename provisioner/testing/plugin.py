"""The vnet pytest plugin (entry point `pytest11: vnet = provisioner.testing.plugin`).

    def test_web_reachable(vnet_lab):
        lab = vnet_lab("lab.yaml", sandbox="default")
        assert lab.probe("web1", "web2", port=7).observed == "pass"

    @pytest.mark.vnet_lab("lab.yaml", sandbox="default")
    def test_verified(vnet_marked_lab):
        assert vnet_marked_lab.verify().ok

`vnet_lab(file, sandbox="default", scope="module", backend="libvirt")` brings the lab in
`file` (relative to the test file) up once per test module (scope="session": once per run)
and destroys it when the module (or run) ends, also when a test failed or the up itself did.
A sandbox that is not up is brought up and, since the plugin made it, taken down afterwards.

The seam: every action goes through the `vnet_ops` fixture (livelab.LabOps); a conftest.py
that overrides it gets a lab without a host, as the plugin's own tests do.

Nothing heavy is imported here: a pytest run that uses no vnet fixture pays for this module only."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pytest

SCOPES = ("module", "session")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "vnet_lab(file, sandbox='default', scope='module', backend='libvirt'): "
                   "bring the vnet lab in file up for this test; the test gets it as the "
                   "vnet_marked_lab fixture")


class _Labs:
    """The labs (and sandboxes) one scope brought up, torn down in reverse order."""

    def __init__(self, ops: Any, progress: Callable[[str], None]):
        self.ops, self.progress = ops, progress
        self.labs: dict[tuple, Any] = {}
        self.undo: list[Callable[[], None]] = []

    def get(self, lab_file: Path, sandbox: str, backend: str) -> Any:
        from .livelab import LiveLab

        key = (str(lab_file), sandbox, backend)
        if key in self.labs and not self.labs[key].destroyed:
            return self.labs[key]
        name = self.ops.lab_name(lab_file, sandbox)    # a bad lab file fails before any work
        if not self.ops.sandbox_is_up(sandbox):
            # registered first: a half-made sandbox is taken down too
            self.undo.append(lambda: self.ops.sandbox_down(sandbox, self.progress))
            self.ops.sandbox_up(sandbox, self.progress)
        made: list[LiveLab] = []        # empty while (or when) up has not returned

        def destroy() -> None:          # unless the test destroyed it itself (LiveLab.destroy)
            if not (made and made[0].destroyed):
                self.ops.destroy(name, sandbox, self.progress)
        self.undo.append(destroy)
        handle = self.ops.up(lab_file, sandbox, backend, self.progress)
        made.append(LiveLab(self.ops, handle, name, sandbox, self.progress))
        self.labs[key] = made[0]
        return made[0]

    def close(self) -> None:
        errors = []
        while self.undo:
            try:
                self.undo.pop()()
            except Exception as exc:   # every step runs; the first failure is raised
                errors.append(exc)
        if errors:
            raise errors[0]


@pytest.fixture(scope="session")
def vnet_ops() -> Any:
    """What acts on the host (livelab.LabOps). Override this fixture to drive the plugin
    without a host."""
    from .livelab import LabOps

    return LabOps()


@pytest.fixture(scope="session")
def vnet_progress() -> Callable[[str], None]:
    """Where the labs' progress lines go (vnet's timestamped lines on stderr, shown by
    pytest for a failed test or with -s)."""
    from ..progress import progress_printer

    return progress_printer()


def _labs_until_scope_ends(vnet_ops, vnet_progress):
    """The labs of one scope; destroyed when it ends, whatever happened in it."""
    labs = _Labs(vnet_ops, vnet_progress)
    try:
        yield labs
    finally:
        labs.close()


@pytest.fixture(scope="session")
def _vnet_session_labs(vnet_ops, vnet_progress):
    yield from _labs_until_scope_ends(vnet_ops, vnet_progress)


@pytest.fixture(scope="module")
def _vnet_module_labs(vnet_ops, vnet_progress):
    yield from _labs_until_scope_ends(vnet_ops, vnet_progress)


@pytest.fixture
def vnet_lab(request, _vnet_module_labs, _vnet_session_labs):
    """A factory: vnet_lab(file, sandbox="default", scope="module", backend="libvirt") ->
    livelab.LiveLab, up once per scope and destroyed when the scope ends."""
    def bring_up(lab_file: str | Path, sandbox: str = "default", scope: str = "module",
                 backend: str = "libvirt"):
        if scope not in SCOPES:
            raise ValueError(f"vnet_lab scope: {scope!r}; valid: {', '.join(SCOPES)}")
        path = Path(lab_file)
        if not path.is_absolute():
            path = Path(request.path).parent / path
        labs = _vnet_session_labs if scope == "session" else _vnet_module_labs
        return labs.get(path.resolve(), sandbox, backend)
    return bring_up


@pytest.fixture
def vnet_marked_lab(request, vnet_lab):
    """The lab the test's @pytest.mark.vnet_lab(file, ...) names."""
    marker = request.node.get_closest_marker("vnet_lab")
    if marker is None:
        raise pytest.UsageError("vnet_marked_lab needs @pytest.mark.vnet_lab(\"lab.yaml\")")
    return vnet_lab(*marker.args, **marker.kwargs)
