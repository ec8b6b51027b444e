"""Unit tier: what every unit test gets."""
import pytest


@pytest.fixture(autouse=True)
def real_drivers_afterwards():
    """A FAKE driver a test put in the registry (test_matrix.Fake) goes after that test."""
    yield
    from .test_matrix import real_drivers_back

    real_drivers_back()
