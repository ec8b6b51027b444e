"""The pytest plugin on a real lab: vnet_lab brings a two-VM natnetwork lab up in the session's
sandbox, a probe passes to the peer's echo port and fails to a closed one, ssh reads the
guest's NIC driver, and the whole lab verifies green. The plugin destroys the lab when this
module ends (tests/unit/test_pytest_plugin.py proves the teardown, also after a failure)."""
import pytest

pytestmark = pytest.mark.integration


def test_web_reachable(lab_sandbox, vnet_lab):
    lab = vnet_lab("labs/webpair.yaml", sandbox=lab_sandbox.name)
    assert lab.probe("web1", "web2", port=7).observed == "pass"
    closed = lab.probe("web1", "web2", port=9)       # nothing listens there: refused
    assert closed.observed == "fail", closed.detail
    assert "virtio_net" in lab.ssh("web1", "readlink /sys/class/net/eth0/device/driver")
    result = lab.verify()
    assert result.ok, [c for c in result.checks if not c["ok"]]
