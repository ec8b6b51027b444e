"""The accelerator probe boots the real image; TCG must always boot it."""
import pytest

from provisioner.host import accel

pytestmark = pytest.mark.integration


def test_tcg_boots_the_tiny_image_to_userspace(tiny_image):
    ok, seconds = accel.boot_once(tiny_image, "qemu")
    assert ok, f"no VNET-BOOTED marker within {seconds:.1f}s"


def test_the_verdict_is_cached(tiny_image, tmp_path, monkeypatch):
    monkeypatch.setenv("VNET_STATE_DIR", str(tmp_path))
    calls = []
    monkeypatch.setattr(accel, "probe", lambda image: calls.append(1) or ("qemu", "test"))
    assert accel.choose(tiny_image, progress=lambda m: None) == "qemu"
    assert accel.choose(tiny_image, progress=lambda m: None) == "qemu"
    assert calls == [1]
