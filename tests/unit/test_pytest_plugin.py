"""The pytest plugin (provisioner/testing/plugin.py) in a pytest of its own (pytester): it is
registered by its entry point, gives the fixture and the marker, brings a lab up once per
module, and destroys it (and a sandbox it made) even when the test body fails. The host is a
fake LabOps passed through the documented seam: a conftest that overrides `vnet_ops`."""
from importlib.metadata import entry_points

FAKE_OPS = '''
import json, os
from pathlib import Path
import pytest

LOG = Path(os.environ["VNET_FAKE_LOG"])


def note(*words):
    with LOG.open("a") as f:
        f.write(" ".join(words) + "\\n")


class FakeOps:
    def __init__(self, sandbox_up):
        self.up_sandboxes = {"default"} if sandbox_up else set()

    def sandbox_is_up(self, name):
        return name in self.up_sandboxes

    def sandbox_up(self, name, progress):
        note("sandbox-up", name)
        self.up_sandboxes.add(name)

    def sandbox_down(self, name, progress):
        note("sandbox-down", name)

    def lab_name(self, lab_file, sandbox):
        return Path(lab_file).stem

    def up(self, lab_file, sandbox, backend, progress):
        note("up", Path(lab_file).name, sandbox)
        return Path(lab_file).stem

    def destroy(self, name, sandbox, progress):
        note("destroy", name, sandbox)

    def verify(self, handle, progress):
        return {"lab": handle, "ok": True, "checks": []}

    def probe_specs(self, handle, source, target, port):
        return {"id": "0", "target": target, "port": port}

    def ssh(self, handle, vm, command, timeout, stdin=None):
        if stdin is not None:      # the probe: the real probe module is what is sent
            assert "def run_all" in stdin
            return 0, json.dumps({"0": {"observed": "pass", "detail": "echoed"}}), ""
        if command == "false":
            return 1, "", "boom on " + vm
        return 0, "virtio_net\\n", ""


@pytest.fixture(scope="session")
def vnet_ops():
    return FakeOps(sandbox_up=os.environ.get("VNET_FAKE_SANDBOX") == "up")
'''

TESTS = '''
import pytest
from provisioner.testing.livelab import SshFailed


def test_web_reachable(vnet_lab):
    lab = vnet_lab("lab.yaml", sandbox="default")
    assert lab.probe("web1", "web2", port=7).observed == "pass"
    assert "virtio_net" in lab.ssh("web1", "readlink /sys/class/net/eth0/device/driver")
    assert lab.verify().ok


def test_same_lab_again(vnet_lab):
    assert vnet_lab("lab.yaml") is vnet_lab("lab.yaml", sandbox="default")


def test_ssh_failure_carries_stderr(vnet_lab):
    with pytest.raises(SshFailed, match="boom on web1"):
        vnet_lab("lab.yaml").ssh("web1", "false")


@pytest.mark.vnet_lab("marked.yaml")
def test_marked(vnet_marked_lab):
    assert vnet_marked_lab.name == "marked"


def test_body_fails(vnet_lab):
    vnet_lab("other.yaml")
    assert False, "the test body failed"
'''


def run(pytester, monkeypatch, sandbox: str):
    log = pytester.path / "ops.log"
    monkeypatch.setenv("VNET_FAKE_LOG", str(log))
    monkeypatch.setenv("VNET_FAKE_SANDBOX", sandbox)
    pytester.makeconftest(FAKE_OPS)
    pytester.makepyfile(test_labs=TESTS)
    result = pytester.runpytest("-p", "no:cacheprovider")
    return result, log.read_text().splitlines()


def test_entry_point_names_the_plugin():
    plugins = {ep.name: ep.value for ep in entry_points(group="pytest11")}
    assert plugins.get("vnet") == "provisioner.testing.plugin"


def test_fixture_and_marker_are_registered(pytester):
    result = pytester.runpytest("--fixtures")
    result.stdout.fnmatch_lines(["vnet_lab*", "vnet_marked_lab*"])
    result = pytester.runpytest("--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.vnet_lab(file*"])


def test_labs_come_up_once_per_module_and_are_destroyed_after_a_failure(pytester, monkeypatch):
    result, log = run(pytester, monkeypatch, sandbox="up")
    result.assert_outcomes(passed=4, failed=1)
    # once per module each, destroyed in reverse order at the module's end; the sandbox was
    # up already, so it is left alone
    assert log == ["up lab.yaml default", "up marked.yaml default", "up other.yaml default",
                   "destroy other default", "destroy marked default", "destroy lab default"]


def test_a_sandbox_the_plugin_made_is_taken_down_after_the_labs(pytester, monkeypatch):
    result, log = run(pytester, monkeypatch, sandbox="missing")
    result.assert_outcomes(passed=4, failed=1)
    assert log[0] == "sandbox-up default"
    assert log[-1] == "sandbox-down default"
    assert log.count("sandbox-up default") == 1


def run_one_lab(pytester, monkeypatch, sandbox_up: bool, method: str):
    """One test that asks for lab.yaml, with FakeOps whose `method` (Python source, indented
    for a class body) replaces the fake's; -> (result, the ops log's lines)."""
    log = pytester.path / "ops.log"
    monkeypatch.setenv("VNET_FAKE_LOG", str(log))
    monkeypatch.setenv("VNET_FAKE_SANDBOX", "up" if sandbox_up else "missing")
    pytester.makeconftest(FAKE_OPS + f'''
@pytest.fixture(scope="session")
def vnet_ops():
    class Changed(FakeOps):
{method}
    return Changed(sandbox_up={sandbox_up})
''')
    pytester.makepyfile(test_up="def test_up(vnet_lab):\n    vnet_lab('lab.yaml')\n")
    result = pytester.runpytest("-p", "no:cacheprovider")
    return result, log.read_text().splitlines() if log.exists() else []


def test_a_lab_whose_up_fails_is_destroyed(pytester, monkeypatch):
    result, log = run_one_lab(pytester, monkeypatch, True, '''\
        def up(self, lab_file, sandbox, backend, progress):
            note("up", Path(lab_file).name, sandbox)
            raise RuntimeError("no address for web2")''')
    result.assert_outcomes(errors=0, failed=1)
    assert log == ["up lab.yaml default", "destroy lab default"]


def test_a_bad_lab_file_fails_before_a_sandbox_comes_up(pytester, monkeypatch):
    """A typo in the lab file cost a whole sandbox up and down before its one-line error."""
    result, log = run_one_lab(pytester, monkeypatch, False, '''\
        def lab_name(self, lab_file, sandbox):
            raise ValueError("vms.web1.nics[0].network: no network named 'lann'")''')
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*no network named 'lann'*"])
    assert log == []            # no sandbox up, no down: the log was never written


def test_a_bad_scope_is_refused(pytester, monkeypatch):
    monkeypatch.setenv("VNET_FAKE_LOG", str(pytester.path / "ops.log"))
    pytester.makeconftest(FAKE_OPS)
    pytester.makepyfile(test_scope="def test_s(vnet_lab):\n    vnet_lab('lab.yaml', scope='class')\n")
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*vnet_lab scope: 'class'; valid: module, session*"])


def test_a_session_lab_comes_up_once_for_every_module(pytester, monkeypatch):
    monkeypatch.setenv("VNET_FAKE_LOG", str(pytester.path / "ops.log"))
    monkeypatch.setenv("VNET_FAKE_SANDBOX", "up")
    pytester.makeconftest(FAKE_OPS)
    body = "def test_s(vnet_lab):\n    vnet_lab('{}/lab.yaml', scope='session')\n".format(
        pytester.path)
    pytester.makepyfile(test_one=body, test_two=body)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    assert (pytester.path / "ops.log").read_text().splitlines() == [
        "up lab.yaml default", "destroy lab default"]


def test_a_lab_the_test_destroyed_is_not_destroyed_again_and_comes_back_on_request(
        pytester, monkeypatch):
    monkeypatch.setenv("VNET_FAKE_LOG", str(pytester.path / "ops.log"))
    monkeypatch.setenv("VNET_FAKE_SANDBOX", "up")
    pytester.makeconftest(FAKE_OPS)
    pytester.makepyfile(test_d="""
def test_destroy(vnet_lab):
    vnet_lab('lab.yaml').destroy()

def test_again(vnet_lab):
    assert not vnet_lab('lab.yaml').destroyed
""")
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    assert (pytester.path / "ops.log").read_text().splitlines() == [
        "up lab.yaml default", "destroy lab default", "up lab.yaml default",
        "destroy lab default"]


def test_loading_the_plugin_imports_nothing_heavy():
    """Every pytest run in an environment with vnet loads the plugin: it must stay cheap."""
    import subprocess
    import sys

    code = ("import sys, provisioner.testing.plugin; "
            "print(' '.join(m for m in ('rich', 'libvirt', 'ansible_runner', 'yaml', "
            "'provisioner.ops', 'provisioner.verify', 'provisioner.testing.livelab') "
            "if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True).stdout.strip()
    assert loaded == ""
