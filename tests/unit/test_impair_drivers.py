"""`vnet impair` through the driver contract (issue 18): the CLI never asks which backend; on
VirtualBox the stand-in runs `bandwidthctl set` on the NIC's bandwidth group, refuses delay and
loss (exit 2 naming the field), and the record's declaration follows, so `verify` measures the
new one; a backend without the operation says so."""
from __future__ import annotations

import pytest
from click.testing import CliRunner

from provisioner.cli import main
from provisioner.drivers.base import Driver, driver_class, lab_from_record
from provisioner.drivers.virtualbox import lifecycle as vbox_exec
from provisioner.errors import Unsupported
from provisioner.host import state
from provisioner.host.state import Target
from provisioner.lab import loader
from provisioner.lab.defaults import default_lab
from provisioner.lab.model import Backend, Impairment
from tests.unit.test_vbox_exec import StandIn


@pytest.fixture
def vbox(tmp_path, monkeypatch):
    return StandIn(tmp_path, monkeypatch)


def _group(vbox, record) -> dict:
    vm = next(v for v in vbox.state()["vms"].values() if v["name"] == record["vms"]["vm1"])
    assert vm["nics"]["1"]["bandwidthgroup"] == "vnet-nic1"
    return vm["bandwidth"]["vnet-nic1"]


def test_virtualbox_rate_is_a_bandwidth_group_and_vnet_impair_sets_it(vbox):
    data = default_lab("natnetwork", name="imp")
    data["vms"][0]["nics"][0]["impair"] = {"rate_mbit": 10}
    driver = driver_class(Backend.VIRTUALBOX)(vbox_exec.TARGET)
    driver.up(loader.resolve(data, source="test"), vbox.say, wait=False)
    record = state.read(vbox_exec.TARGET, "imp")
    assert _group(vbox, record) == {"type": "network", "limit": "10000k"}
    mac = record["impair"]["vm1"]
    assert list(mac.values())[0]["summary"] == \
        "rate_mbit -> VirtualBox bandwidth group vnet-nic1 (what the VM sends)"

    result = CliRunner().invoke(main, ["impair", "imp", "vm1", "0", "--rate-mbit", "2.5"])
    assert result.exit_code == 0, result.output
    assert "rate_mbit -> VirtualBox bandwidth group vnet-nic1" in result.output
    record = state.read(vbox_exec.TARGET, "imp")
    assert _group(vbox, record)["limit"] == "2500k"
    assert lab_from_record(record).vm("vm1").nics[0].impair == Impairment(rate_mbit=2.5)

    result = CliRunner().invoke(main, ["impair", "imp", "vm1", "0", "--delay-ms", "10"])
    assert result.exit_code == 2
    assert "vms.vm1.nics[0].impair.delay_ms: VirtualBox has no delay" in result.output
    assert _group(vbox, state.read(vbox_exec.TARGET, "imp"))["limit"] == "2500k"

    result = CliRunner().invoke(main, ["impair", "imp", "vm1", "0", "--clear"])
    assert result.exit_code == 0, result.output
    record = state.read(vbox_exec.TARGET, "imp")
    assert _group(vbox, record)["limit"] == "0"
    assert lab_from_record(record).vm("vm1").nics[0].impair is None
    vbox_exec.destroy("imp", vbox.say)


def test_virtualbox_refuses_a_rate_on_a_nic_without_a_group(vbox):
    vbox_exec.up(loader.resolve(default_lab("natnetwork", name="imp"), source="test"), vbox.say,
                 wait=False)
    result = CliRunner().invoke(main, ["impair", "imp", "vm1", "0", "--rate-mbit", "5"])
    assert result.exit_code == 2 and "has no bandwidth group" in result.output
    vbox_exec.destroy("imp", vbox.say)


@pytest.mark.parametrize("args, says", [
    (["--delay-ms", "0.5"], "vms.vm1.nics[0].impair.delay_ms: 0.5 must be a number from 1 to 5000"),
    (["--delay-ms", "0"], "vms.vm1.nics[0].impair: is empty; give at least one of delay_ms"),
    (["--jitter-ms", "0"], "vms.vm1.nics[0].impair: is empty; give at least one of delay_ms"),
    ([], "give --clear, or at least one of"),
    (["--clear", "--loss-pct", "2"], "give --clear, or at least one of"),
    (["--jitter-ms", "3"], "impair.jitter_ms: 3 ms needs a delay_ms of at least 3"),
])
def test_bad_vnet_impair_arguments_exit_2_before_any_lab_is_looked_up(args, says, monkeypatch):
    from provisioner import ops

    monkeypatch.setattr(ops.labs, "find", lambda *a, **k: pytest.fail("looked up a lab"))
    result = CliRunner().invoke(main, ["impair", "lab", "vm1", "0", *args])
    assert result.exit_code == 2 and says in result.output, result.output


def test_set_impairment_is_part_of_the_contract_and_says_where_it_is_missing():
    class Bare(Driver):
        backend = Backend.LIBVIRT
        target_for = up = status = destroy = labs = gc = None    # type: ignore[assignment]

    with pytest.raises(Unsupported, match="impairment is not supported on libvirt"):
        Bare(Target(uri="test:///default")).set_impairment("lab", "vm1", 0, None)
