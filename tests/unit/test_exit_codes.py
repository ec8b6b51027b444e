"""Exit codes that mean something: `vnet verify`, `create` and `up` exit 1 on any red cell and
when nothing at all was verified; the summary counts ok, red and skipped. The lab lifecycle and
the verification are replaced through their public functions (lifecycle.up, verify.verify);
`vnet verify LAB` reads a real lab record from a private state directory."""
import pytest
from click.testing import CliRunner

from provisioner import lifecycle, state
from provisioner import verify as verifier
from provisioner.checks import SKIPPED, Check
from provisioner.cli import main
from provisioner.defaultlab import default_lab

OK = Check("vm_to_vm", "net", "hostonly", "vm1", "vm2", "pass", "guest:vm1", observed="pass",
           detail="nonce echoed by vm2")
RED = Check("vm_to_internet", "net", "hostonly", "vm1", "internet", "fail", "guest:vm1",
            observed="error", detail="leak: answered by vm9 instead of internet")
SKIP = Check("nic_model", "net", "hostonly", "vm1", "x", "pass", "guest:vm1", observed=SKIPPED,
             detail="skipped: no hardware")
RESULTS = {            # name: (cells, exit code, the summary's counts, the last line)
    "green": ([OK, OK], 0, "2 ok, 0 red, 0 skipped", "VERIFIED"),
    "one red cell": ([OK, RED], 1, "1 ok, 1 red, 0 skipped", "NOT VERIFIED"),
    "all skipped": ([SKIP, SKIP], 1, "0 ok, 0 red, 2 skipped", "NOTHING VERIFIED"),
    "no cell at all": ([], 1, "0 ok, 0 red, 0 skipped", "NOTHING VERIFIED"),
}


def fake_result(lab, cells):
    found = [c.as_dict() for c in cells]
    return {"lab": lab.name, "backend": "libvirt", "inventory": "vnet",
            "ok": all(c["ok"] for c in found),       # what the old code computed
            "checks": found, "timings": {"verify": 1.0}, "notes": []}


@pytest.fixture
def lab_env(monkeypatch, tmp_path):
    """A private state root holding one lab record, and `up` replaced: nothing is booted."""
    monkeypatch.setenv("VNET_STATE_DIR", str(tmp_path / "state"))
    target = lifecycle.target_for(None, None)
    state.save(target, "hostonly", {"lab_data": default_lab("hostonly"), "source": "test"})
    monkeypatch.setattr(lifecycle, "up", lambda lab, target, say, wait=True: {"timings": {}})
    lab_file = tmp_path / "lab.yaml"
    lab_file.write_text("name: hostonly\nnetworks: [{name: net, mode: hostonly}]\n"
                        "vms: [{name: vm1, nics: [{network: net}]}]\n")
    return lab_file


@pytest.mark.parametrize("kind", list(RESULTS))
@pytest.mark.parametrize("command", ["verify", "create", "up"])
def test_exit_code_and_summary(lab_env, monkeypatch, command, kind):
    cells, code, counts, last = RESULTS[kind]
    monkeypatch.setattr(verifier, "verify", lambda lab, target, say, timings=None,
                        inventory=None: fake_result(lab, cells))
    argv = {"verify": ["verify", "hostonly"], "create": ["create", "--mode", "hostonly"],
            "up": ["up", str(lab_env)]}[command]
    result = CliRunner().invoke(main, argv, catch_exceptions=False)
    assert result.exit_code == code, result.output
    lines = result.output.strip().splitlines()
    assert counts in lines[0]
    assert lines[-1].startswith(last)


def test_json_output_keeps_its_contract_and_the_exit_code(lab_env, monkeypatch):
    import json

    monkeypatch.setattr(verifier, "verify", lambda lab, target, say, timings=None,
                        inventory=None: fake_result(lab, [OK, RED]))
    result = CliRunner().invoke(main, ["verify", "hostonly", "--format", "json"])
    assert result.exit_code == 1
    data = json.loads(result.output)
    assert [c["observed"] for c in data["checks"]] == ["pass", "error"]
    assert [c["ok"] for c in data["checks"]] == [True, False]
