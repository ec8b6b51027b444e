"""benchmarks/bench.py's report of issue 15's targets: each ratio from the run's own numbers,
met / not met, and "not measured" where the run (e.g. --quick) did not measure it."""
import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def bench():
    spec = importlib.util.spec_from_file_location("vnet_bench", ROOT / "benchmarks" / "bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def stat(median):
    return {"median": median, "min": median, "max": median, "runs": 1}


def full_result():
    return {"floor_boot_s": stat(2.0), "parallel_floor_s": dict(stat(10.0), vms=8),
            "time_to_verified_s": stat(6.0), "phases": {"verify": stat(2.0)},
            "boot_breakdown_s": {"timeline": {"kernel": 1.0, "ready": 2.0}},
            "vagrant_up_s": stat(20.0), "ratio_vs_vagrant": 0.3,
            "matrix_s": {"total": 50.0, "per_lab": {"jobs": 4}},
            "matrix_sequential_s": {"total": 100.0, "per_lab": {"jobs": 1}},
            "matrix_shared_s": {"total": 35.0, "per_lab": {"jobs": 2}},
            "scaling": [{"vms": 8, "seconds": 16.0, "qemu_rss_mib": 1, "qemu_pss_mib": 1,
                         "overhead_beyond_guest_ram_mib_per_vm": 30.0}],
            "render_1000_s": {"xml": stat(0.2), "vboxmanage": stat(0.2)}}


def test_every_target_is_computed_from_the_same_run():
    b = bench()
    got = {t["key"]: (t["value"], t["met"]) for t in b.targets(full_result())}
    assert got == {"time_to_verified_vs_floor": (3.0, False), "ratio_vs_vagrant": (0.3, True),
                   "matrix_shared_vs_sequential": (0.35, True),
                   "lab_8_vms_vs_parallel_floor": (1.6, False),
                   "pss_beyond_guest_ram_mib": (30.0, True)}


def test_a_quick_run_says_not_measured_and_the_summary_prints_each_target():
    b = bench()
    r = full_result() | {"parallel_floor_s": None, "vagrant_up_s": None, "ratio_vs_vagrant": None,
                         "matrix_s": None, "matrix_sequential_s": None,
                         "matrix_shared_s": None, "scaling": []}
    r["targets"] = b.targets(r)
    assert [t["met"] for t in r["targets"]] == [False, None, None, None, None]
    text = b.summary(r)
    assert text.count("not measured") == 4 and "NOT MET" in text


def test_boot_breakdown_gives_each_stage_after_the_one_before():
    b = bench()
    out = b.boot_breakdown([{"kernel": 1.0, "init": 1.5, "ready": 3.0},
                            {"kernel": 1.2, "init": 1.7, "ready": 3.4}])
    assert out["timeline"] == {"kernel": 1.1, "init": 1.6, "ready": 3.2}
    assert out["stage_seconds"] == {"kernel": 1.1, "init": 0.5, "ready": 1.6}
    assert b.boot_breakdown([]) is None


def test_the_matrix_rows_are_each_a_fraction_of_the_sequential_matrix():
    b = bench()
    rows = {"sequential": {"total": 200.0}, "concurrent": {"total": 120.0},
            "shared": {"total": 70.0}}
    assert b.matrix_ratios(rows) == {"concurrent_vs_sequential": 0.6, "shared_vs_sequential": 0.35}
    assert b.matrix_ratios({}) is None
    text = b.summary(full_result())
    assert "shared labs    35.0s = 0.35x --jobs 1" in text and "50.0s = 0.50x --jobs 1" in text

def test_the_verify_breakdown_is_reported_as_medians_per_part():
    b = bench()
    run = {"prepare_s": 0.1, "guests_s": 4.0, "finish_s": 0.3, "per_guest": {
        "vm1": {"controller_start_s": 0.8, "probe_task_s": 3.0, "wrapup_s": 0.2,
                "module": {"python_start_s": 1.0, "probes_s": 0.5, "forwards_wait_s": 0.0}},
        "vm2": {"controller_start_s": 0.8, "probe_task_s": 3.4, "wrapup_s": 0.2,
                "module": {"python_start_s": 1.4, "probes_s": 0.7, "forwards_wait_s": 0.1}}}}
    found = b.verify_breakdown([run, dict(run, guests_s=5.0)])
    assert found["guests_s"]["median"] == 4.5 and found["prepare_s"]["runs"] == 2
    assert found["per_guest"]["python_start_s"]["median"] == 1.2
    assert found["per_guest"]["probe_task_s"]["runs"] == 4
    assert b.verify_breakdown([]) is None


def test_cpu_accounting_sets_the_guests_beside_a_bare_boot():
    b = bench()
    runs = [{"guests": [5.0, 5.2], "vnet": 2.0, "tcg_flushes": [2, 2]},
            {"guests": [5.4, 5.0], "vnet": 2.2, "tcg_flushes": [2, 10]}]
    found = b.cpu_accounting([1.8, 2.0, 2.2], runs)
    assert found["tcg_flushes_per_guest"] == {"median": 2, "min": 2, "max": 10, "runs": 4}
    assert found["per_guest_qemu"]["median"] == 5.1 and found["floor_boot_qemu"]["median"] == 2.0
    assert found["guest_vs_floor"] == 2.55 and found["vnet_ansible_ssh"]["median"] == 2.1
    cores = b.os.cpu_count() or 1
    assert found["lab_cpu_over_cores_s"] == round(12.4 / cores, 2)   # median of 12.2 and 12.6
    assert b.cpu_accounting([], runs) is None and b.cpu_accounting([2.0], []) is None
    line = b.summary(dict(full_result(), cpu_s=found))
    assert "CPU: per guest 5.1s = 2.55x" in line and "TCG cache flushes per guest 2" in line


def test_qemu_cpu_is_read_from_proc_stat(monkeypatch):
    """FAKE namespace listing: this test process stands in for a QEMU."""
    import os

    b = bench()
    monkeypatch.setattr(b.netns, "pids_in_netns", lambda names: {
        os.getpid(): ["qemu-system-x86_64", "-name", "x"], 1: ["init"]})
    used = os.times()
    (seconds,) = b.qemu_cpu_s()
    assert abs(seconds - (used.user + used.system)) < 0.5


def test_tcg_flushes_reads_info_jit_of_the_labs_running_guests(monkeypatch):
    """FAKE libvirt connection (the HMP text is QEMU 7.2's `info jit`): a guest that is not
    running, or whose monitor fails, has no count."""
    import libvirt

    b = bench()
    jit = "Translation buffer state:\ngen code size 1/2\n\nStatistics:\nTB flush count      {}\n"

    class Fake:
        def __init__(self, target):
            pass

        def labs(self):
            return {"lab": {"domain": ["vnet-lab-a", "vnet-lab-b", "vnet-lab-c", "vnet-lab-d"]}}

        def domain_state(self, name):
            return "shutoff" if name.endswith("c") else "running"

        def hmp(self, name, command):
            assert command == "info jit"
            if name.endswith("d"):
                raise libvirt.libvirtError("monitor gone")
            return jit.format({"vnet-lab-a": 2, "vnet-lab-b": 10}[name])
    monkeypatch.setattr(b, "LibvirtConnection", Fake)
    monkeypatch.setattr(b.sandbox, "describe", lambda name: type("S", (), {"uri": "test:///x"}))
    assert b.tcg_flushes("lab") == [2, 10]
    assert b.tcg_flushes("other") == []


def test_the_benchmark_refuses_a_sandbox_that_already_exists(monkeypatch, capsys):
    """It removes its sandboxes at the end: one given by name that held the user's labs went
    with them."""
    import os
    import sys

    import pytest

    module = bench()
    built = []
    monkeypatch.setattr(module.sandbox, "list_names", lambda: ["default", "work"])
    monkeypatch.setattr(module.images, "build_tiny", lambda **kw: built.append(kw))
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(sys, "argv", ["bench", "--sandbox", "work"])
    with pytest.raises(SystemExit) as exit_:
        module.main()
    assert exit_.value.code == 2 and not built
    assert "--sandbox: sandbox work already exists" in capsys.readouterr().err
