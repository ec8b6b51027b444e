"""The CLI contract: spellings, JSON shapes, exit code 2 with one line for bad input, and
nothing written when input is bad."""
import json

from click.testing import CliRunner

from provisioner.cli import main


def invoke(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_modes_json_contract():
    result = invoke("modes", "--format", "json")
    data = json.loads(result.output)
    assert data["backend"] == "virtualbox"
    assert data["modes"]["nat"] == {"vm_to_host": "yes", "host_to_vm": "port-forward",
                                    "vm_to_vm": "no", "vm_to_internet": "yes",
                                    "internet_to_vm": "port-forward"}
    assert list(data["modes"]) == ["bridged", "nat", "natnetwork", "hostonly", "internal"]


def test_modes_libvirt_states_its_difference():
    data = json.loads(invoke("modes", "--backend", "libvirt", "--format", "json").output)
    assert data["modes"]["natnetwork"]["host_to_vm"] == "yes"
    assert "bridge" in data["differences"]["natnetwork"]
    assert "host->VM" in invoke("modes").output


def test_create_dry_run_prints_valid_xml(relaxng):
    result = invoke("create", "--mode", "natnetwork", "--dry-run")
    assert result.exit_code == 0
    docs = [d for d in result.output.split("<!-- ") if d.strip()
            and not d.startswith("port forward ")]
    assert len(docs) == 4      # lab network, management network, two domains
    # each forward's bind address is shown: loopback outside a sandbox
    assert "port forward echo-vm1: tcp 127.0.0.1:7001 -> vm1:7 (vnet port proxy)" in result.output
    for doc in docs:
        relaxng(doc.split("-->\n", 1)[1])


def test_dry_run_in_a_sandbox_shows_forwards_on_its_uplink_address():
    result = invoke("create", "--mode", "nat", "--dry-run", "--sandbox", "h2x")
    assert result.exit_code == 0, result.output
    assert "port forward ssh-vm2: tcp 203.0.113.2:2222 -> vm2:22 (QEMU hostfwd)" in result.output


def test_render_out_writes_the_contract_layout(tmp_path):
    lab = tmp_path / "lab.yaml"
    lab.write_text("name: x\nnetworks: [{name: n, mode: hostonly}]\n"
                   "vms: [{name: a, nics: [{network: n}]}]\n")
    assert invoke("render", str(lab), "--out", str(tmp_path / "o")).exit_code == 0
    assert (tmp_path / "o" / "networks" / "vnet-x-n.xml").exists()
    assert (tmp_path / "o" / "domains" / "vnet-x-a.xml").exists()


def test_bad_lab_exits_2_with_one_line_and_writes_nothing(tmp_path):
    lab = tmp_path / "lab.yaml"
    lab.write_text("name: x\nnetworks: [{name: n, mode: bogus}]\n"
                   "vms: [{name: a, nics: [{network: n}]}]\n")
    out = tmp_path / "o"
    result = CliRunner().invoke(main, ["render", str(lab), "--out", str(out)])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "vnet: error: networks.n.mode: unknown mode 'bogus'; valid modes: bridged, nat, "
        "natnetwork, hostonly, internal"]
    assert not out.exists()


def test_unknown_choice_on_the_command_line_exits_2():
    result = CliRunner().invoke(main, ["create", "--mode", "bogus", "--dry-run"])
    assert result.exit_code == 2
    assert "bridged" in result.output and "internal" in result.output


def test_unsupported_combination_exits_2():
    result = CliRunner().invoke(main, ["create", "--mode", "natnetwork", "--nic-model", "vdpa",
                                       "--dry-run"])
    assert result.exit_code == 2
    assert "need a bridged network" in result.output


def test_every_command_has_help_with_examples():
    for command in main.commands.values():
        if hasattr(command, "commands"):
            continue
        text = invoke(command.name, "--help").output
        assert "Usage:" in text
        assert "Examples:" in text and "vnet " in text.split("Examples:", 1)[1], command.name
