"""Link impairment in a real sandbox (issue 18): a two-VM lab with one impaired NIC verifies
green, with the guest's measured RTT, loss and throughput in the JSON result; then the negative
control: the NIC declares 100 ms but the driver applies none (VNET_TEST_SKIP_IMPAIR), and the
impairment cell, and only it, turns red; then `vnet impair` sets 100 ms on the running lab and
the cell measures it green."""
import json
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from provisioner.cli import main

from provisioner.drivers.base import driver_class, lab_from_record
from provisioner.drivers.libvirt import lifecycle
from provisioner.host import state
from provisioner.lab import loader as labfile
from provisioner.lab.model import Backend, Impairment
from provisioner.verify import run as verifier

pytestmark = pytest.mark.integration
LAB = Path(__file__).resolve().parent / "labs" / "impair.yaml"


def say(message):
    print(message, flush=True)


def red(result):
    return {(c["kind"], c["source"], c["target"]): c["detail"]
            for c in result["checks"] if not c["ok"]}


def test_impaired_nic_is_measured_green_and_its_negative_control_red(lab_sandbox, monkeypatch):
    lab = labfile.load(LAB, labfile.sandbox_defaults(lab_sandbox))
    target = lifecycle.target_for(lab_sandbox.name, None)
    try:
        record = lifecycle.up(lab, target, say)
        applied = record["impair"]["a"][lab.vm("a").nics[0].mac]
        say(f"applied: {applied['summary']}")
        assert set(applied["parts"]) == {"delay_ms", "jitter_ms", "loss_pct", "rate_mbit"}

        started = time.monotonic()
        result = verifier.verify(lab, target, say, timings=record["timings"])
        say(verifier.matrix_text(result))
        say(f"verify took {time.monotonic() - started:.1f}s")
        assert result["ok"], red(result)
        (cell,) = [c for c in result["checks"] if c["kind"] == "impairment"]
        say(json.dumps(cell, indent=1))
        measured = cell["measured"]
        assert {"rtt_median_ms", "rtt_iqr_ms", "loss_pct", "mbit", "samples"} <= set(measured)
        assert "declared" in cell["detail"] and "applied:" in cell["detail"], cell["detail"]

        # negative control: declare 100 ms, apply none -> the impairment cell, and only it
        monkeypatch.setenv("VNET_TEST_SKIP_IMPAIR", "1")
        driver = driver_class(Backend.LIBVIRT)(target)
        done = driver.set_impairment(lab.name, "a", 0, Impairment(delay_ms=100))
        assert done["summary"].startswith("nothing"), done
        changed = lab_from_record(state.read(target, lab.name))
        assert changed.vm("a").nics[0].impair == Impairment(delay_ms=100)
        result = verifier.verify(changed, target, say, timings=record["timings"])
        say(verifier.matrix_text(result))
        assert set(red(result)) == {("impairment", "a", cell["target"])}, red(result)
        (cell,) = [c for c in result["checks"] if c["kind"] == "impairment"]
        assert "out of tolerance: rtt_median_ms" in cell["detail"], cell["detail"]

        # `vnet impair` on the running lab applies what it declares: 100 ms, measured green
        monkeypatch.delenv("VNET_TEST_SKIP_IMPAIR")
        out = CliRunner().invoke(main, ["impair", lab.name, "a", "0", "--delay-ms", "100",
                                        "--sandbox", lab_sandbox.name])
        assert out.exit_code == 0 and "delay_ms -> guest: netem on eth0" in out.output, out.output
        result = verifier.verify(lab_from_record(state.read(target, lab.name)), target, say,
                                 timings=record["timings"])
        say(verifier.matrix_text(result))
        assert result["ok"], red(result)
        (cell,) = [c for c in result["checks"] if c["kind"] == "impairment"]
        assert cell["measured"]["rtt_median_ms"] >= 99, cell
    finally:
        lifecycle.destroy(lab.name, target, say)
