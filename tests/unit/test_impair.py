"""Issue 18, points 1 and 2 without guests: the lab file's `impair` (ranges, exit 2), where
libvirt applies each part (golden), VirtualBox's bandwidth groups, the tolerances, and the
guest's measurement against a real listener on loopback (its negative control: a declared
delay that is not there is out of tolerance)."""
import json
import socket
import threading
import time

import pytest

from provisioner.drivers.libvirt import impair as libvirt_impair
from provisioner.drivers.virtualbox import bandwidth
from provisioner.errors import LabFileError, Unsupported
from provisioner.lab import loader
from provisioner.lab.model import Backend, Impairment
from provisioner.verify import impairment
from provisioner.verify.run import probe_module
from tests.conftest import ROOT, regen_golden


def _lab(impair, mode="hostonly"):
    return {"name": "imp", "networks": [{"name": "lan", "mode": mode}],
            "vms": [{"name": "a", "nics": [{"network": "lan", "impair": impair}]}]}


@pytest.mark.parametrize("impair, field, valid", [
    ({"delay_ms": 0.5}, "delay_ms", "from 1 to 5000 (ms)"),
    ({"delay_ms": "80"}, "delay_ms", "from 1 to 5000 (ms)"),
    ({"loss_pct": 0.1}, "loss_pct", "from 1 to 50 (%)"),
    ({"rate_mbit": True}, "rate_mbit", "from 0.5 to 1000 (Mbit/s)"),
    ({"jitter_ms": 5}, "jitter_ms", "needs a delay_ms of at least 5"),
    ({"delay_ms": 4, "jitter_ms": 5}, "jitter_ms", "needs a delay_ms of at least 5"),
    ({"dealy_ms": 4}, "dealy_ms", "valid fields: delay_ms, jitter_ms, loss_pct, rate_mbit"),
])
def test_bad_impairment_names_the_field_and_the_valid_range(impair, field, valid):
    with pytest.raises(LabFileError) as err:
        loader.resolve(_lab(impair))
    assert str(err.value).startswith(f"vms.a.nics[0].impair.{field}:") and valid in str(err.value)
    assert "\n" not in str(err.value) and err.value.status == 2


def test_impairment_needs_a_host_on_the_network():
    with pytest.raises(LabFileError, match=r"nics\[0\]\.impair: network lan \(internal\) has no host"):
        loader.resolve(_lab({"delay_ms": 10}, mode="internal"))


def test_any_subset_loads():
    lab = loader.resolve(_lab({"loss_pct": 2}))
    assert lab.vms[0].nics[0].impair == Impairment(loss_pct=2.0)


@pytest.mark.parametrize("case", ["impair", "impair-netem"])
def test_libvirt_impairment_plan_golden(case):
    """Where libvirt applies each part, with and without sch_netem in the host kernel."""
    lab = loader.load(ROOT / "tests" / "golden" / case / "lab.yaml")
    text = json.dumps({"host kernel with sch_netem": libvirt_impair.plan(lab, True),
                       "host kernel without sch_netem": libvirt_impair.plan(lab, False)},
                      indent=1) + "\n"
    path = ROOT / "tests" / "golden" / case / "libvirt" / "impair.json"
    if regen_golden():
        path.write_text(text)
    assert text == path.read_text()


def test_libvirt_refuses_a_rate_where_there_is_no_tap():
    from provisioner.ops.plans import plan_for
    from provisioner.lab.model import Backend

    lab = loader.resolve(_lab({"rate_mbit": 10}, mode="nat"))
    with pytest.raises(Unsupported, match=r"nics\[0\]\.impair\.rate_mbit: this NIC has no host-side"):
        plan_for(lab, Backend.LIBVIRT)


def test_virtualbox_bandwidth_group_and_its_runtime_limit():
    assert bandwidth.bandwidth_limit(10) == "10000k" and bandwidth.bandwidth_limit(0.5) == "500k"
    assert bandwidth.set_argv("vnet-x-a", 0, 2.5) == (
        "VBoxManage", "bandwidthctl", "vnet-x-a", "set", "vnet-nic1", "--limit", "2500k")
    assert bandwidth.set_argv("vnet-x-a", 1, None)[-1] == "0"


def test_loss_sample_count_makes_no_loss_implausible():
    for pct in (1, 2, 5, 20):
        n = impairment.samples_for(Impairment(loss_pct=pct))
        assert (1 - pct / 100) ** n <= impairment.ALPHA / 2
        low, high = impairment.bounds(Impairment(loss_pct=pct), n)["lost"]
        assert low >= 1 and high > n * pct / 100
    assert impairment.samples_for(Impairment(delay_ms=10)) == impairment.MIN_SAMPLES


def test_bounds_reject_no_delay_for_a_declared_delay():
    b = impairment.bounds(Impairment(delay_ms=100, jitter_ms=10), 60)
    assert b["rtt_median_ms"][0] == 95 and not b["rtt_median_ms"][0] <= 2.0
    assert b["rtt_iqr_ms"] == [5.0, 70.0]


@pytest.fixture(scope="module")
def listener():
    module = probe_module()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    threading.Thread(target=module.serve, args=(port, "host", "127.0.0.1"), daemon=True).start()
    time.sleep(0.3)
    return module, port


def _measure(listener, impair, backend=Backend.LIBVIRT):
    module, port = listener
    spec = {"id": "0", "target": "127.0.0.1", "port": port, "expect_name": "host",
            "impair": impairment.probe_for(impair, backend, baseline_target="127.0.0.1")}
    return module.run_all([spec])["0"]


def test_measurement_without_the_declared_delay_is_out_of_tolerance(listener):
    """The negative control on loopback: 100 ms declared, none there."""
    result = _measure(listener, Impairment(delay_ms=100))
    assert result["observed"] == "error" and "out of tolerance: rtt_median_ms" in result["detail"]
    assert "baseline over the management path" in result["detail"]
    assert "excess rtt_median_ms" in result["detail"] and "baseline" in result["measured"]
    assert result["measured"]["answered"] == impairment.MIN_SAMPLES


@pytest.mark.parametrize("backend, way", [(Backend.LIBVIRT, "toward the guest"),
                                          (Backend.VIRTUALBOX, "from the guest")])
def test_measurement_of_an_unshaped_transfer_exceeds_a_declared_rate(listener, backend, way):
    """Each backend's rate is measured the way it applies it (libvirt: toward the guest, the
    listener streams; VirtualBox: what the VM sends, the listener counts)."""
    result = _measure(listener, Impairment(rate_mbit=1), backend)
    assert result["observed"] == "error" and "mbit" in result["detail"] and way in result["detail"]
    assert result["measured"]["mbit"] > 1.15


def test_a_rate_is_told_only_where_the_unshaped_path_carries_clearly_more():
    """A guest whose own capacity is about the declared rate measures that rate with nothing
    applied: the rate is then too small to tell, never a pass."""
    module = probe_module()
    opts = impairment.probe_for(Impairment(rate_mbit=10), Backend.LIBVIRT, "127.0.0.1")
    assert opts["rate_control"] == 15.0

    def judge(unshaped):
        measured = {"mbit": 9.6, "baseline_mbit": unshaped}
        return module.judge_excess(opts["bounds"], opts["noise"], measured, None,
                                   opts["floor"], opts["rate_control"])
    assert judge(95.0) == ([], [])
    out, blind = judge(11.0)
    assert not out and blind and "reached 11.0 Mbit/s, under 15.0" in blind[0]


def test_a_silent_far_end_is_fail():
    module = probe_module()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))     # bound, never answers
        port = s.getsockname()[1]
        spec = {"id": "0", "target": "127.0.0.1", "port": port, "expect_name": "host",
                "impair": dict(impairment.probe_for(Impairment(delay_ms=5), Backend.LIBVIRT,
                                                    "127.0.0.1"), drain=0.2)}
        result = module.run_all([spec])["0"]
    assert result["observed"] == "fail" and "none of 60" in result["detail"]


class _Dom:
    def XMLDesc(self, flags):
        return ("<domain><devices><interface type='network'><mac address='52:54:00:18:00:01'/>"
                "<target dev='vnet7'/></interface></devices></domain>")


class _Conn:
    class conn:
        @staticmethod
        def lookupByName(name):
            return _Dom()


@pytest.mark.parametrize("host_has_netem", [True, False])
def test_applier_tries_netem_on_the_tap_and_falls_back_to_tbf_and_the_guest(
        host_has_netem, monkeypatch, tmp_path):
    """Where each part goes is decided by trying netem on the NIC's own tap: the kernel's
    "Specified qdisc kind is unknown" sends delay/jitter/loss to the guest, rate to tbf."""
    from provisioner.host import runner
    from provisioner.host.state import Target

    monkeypatch.setenv("VNET_STATE_DIR", str(tmp_path))
    ran = []

    def run(argv, **kw):
        ran.append(argv)
        if "netem" in argv and not host_has_netem:
            return runner.Result(argv, 2, "", "Error: Specified qdisc kind is unknown.\n")
        if argv[0] == "ssh":
            return runner.Result(argv, 0, '{"ifname": "eth0", "netem": {}}\n', "")
        return runner.Result(argv, 0, "", "")
    monkeypatch.setattr(runner, "run", run)
    monkeypatch.setattr(libvirt_impair.state, "existing_key", lambda target, lab: tmp_path / "k")
    lab = loader.load(ROOT / "tests" / "golden" / "impair-netem" / "lab.yaml")
    lab = loader.resolve({**lab.meta["raw"], "networks": lab.meta["raw"]["networks"][:1],
                          "vms": [{"name": "a", "nics": [dict(lab.meta["raw"]["vms"][0]["nics"][0],
                                                               mac="52:54:00:18:00:01")]}]})
    record = {"lab": lab.name, "mgmt": {"a": "100.64.0.10"}}
    nic = lab.vm("a").nics[0]
    entry = libvirt_impair.Applier(lab, Target(uri="test:///default"), _Conn(), record) \
        .apply("a", nic, nic.impair)
    tcs = [argv for argv in ran if argv[0] == "tc"]
    if host_has_netem:
        assert tcs == [libvirt_impair.host_netem_argv("vnet7", nic.impair)]
        assert set(entry["parts"].values()) == {"host: netem on vnet7 (toward the guest)"}
        assert not any(argv[0] == "ssh" for argv in ran)
    else:
        assert tcs[1] == libvirt_impair.tbf_argv("vnet7", 10)
        assert entry["parts"]["rate_mbit"] == "host: tbf on vnet7 (toward the guest)"
        assert entry["parts"]["delay_ms"] == \
            "guest: netem on eth0 egress (the host kernel has no sch_netem)"
        (ssh,) = [argv for argv in ran if argv[0] == "ssh"]
        assert ssh[-1].startswith("python3 - ") and "100.64.0.10" in ssh[-2]
    assert record["impair"]["a"][nic.mac]["declared"] == nic.impair.as_dict()
