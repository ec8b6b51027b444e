"""Unit tier: what every unit test gets."""
import pytest


@pytest.fixture(autouse=True)
def private_state_root(tmp_path_factory, monkeypatch):
    """A state root of the test's own: a unit test never writes under the machine's real one
    (/var/lib/vnet as root; SSH control directories were found left there by unit runs). A test
    that needs its own path sets VNET_STATE_DIR again."""
    monkeypatch.setenv("VNET_STATE_DIR", str(tmp_path_factory.mktemp("state-root")))


@pytest.fixture(autouse=True)
def real_drivers_afterwards():
    """A FAKE driver a test put in the registry (test_matrix.Fake) goes after that test."""
    yield
    from .test_matrix import real_drivers_back

    real_drivers_back()


@pytest.fixture(autouse=True)
def builtin_virtualbox_rules(request, monkeypatch):
    """Plans judged by VirtualBox 7.0's built-in rules, whatever VirtualBox this machine has
    (ops/plans.virtualbox_here): a developer's VirtualBox 6.1, or a networks.conf of their own,
    would change the golden argv. A test that asks for the machine's own rules takes the
    `this_machines_virtualbox` fixture."""
    if "this_machines_virtualbox" in request.fixturenames:
        return
    from provisioner.ops import plans

    monkeypatch.setattr(plans, "virtualbox_here", lambda: None)


@pytest.fixture
def this_machines_virtualbox():
    """Plans judged by what this machine's VirtualBox allows (see builtin_virtualbox_rules)."""
