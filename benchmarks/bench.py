"""vnet benchmark (see README.md here). Every number is a median with min and max beside it,
and every ratio is taken between measurements made in the same run, alternating A/B."""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from provisioner.host import accel, locks, netns, sandbox  # noqa: E402
from provisioner.guest import bootstages, images  # noqa: E402
from provisioner.drivers.boot import read_console  # noqa: E402
from provisioner.host import state  # noqa: E402
from provisioner.drivers.libvirt.connection import LibvirtDriver as LibvirtConnection  # noqa: E402

VNET = [str(Path(sys.executable).parent / "vnet")]
SANDBOX = "bench"
LINKS_LAB = ROOT / "examples" / "bonds-and-router.yaml"


def stats(values: list[float]) -> dict | None:
    if not values:
        return None
    return {"median": round(statistics.median(values), 2), "min": round(min(values), 2),
            "max": round(max(values), 2), "runs": len(values)}


def vnet(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([*VNET, *args], capture_output=True, text=True, cwd=ROOT)
    if check and proc.returncode != 0:
        raise SystemExit(f"vnet {' '.join(args)} failed ({proc.returncode}):\n"
                         f"{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return proc


def say(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


# --- measurements -----------------------------------------------------------------------------

def children_cpu_s() -> float:
    """CPU seconds (user + system) of this process's children that have ended so far."""
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def floor_boot(image, runs: int, cpu: list | None = None) -> list[float]:
    """One bare QEMU boot of the same kernel and initramfs to userspace (no libvirt, no NIC);
    each boot's QEMU CPU seconds go to `cpu`."""
    times = []
    for _ in range(runs):
        before = children_cpu_s()
        ok, seconds = accel.boot_once(image, "qemu")
        if ok:
            times.append(seconds)
            if cpu is not None:
                cpu.append(children_cpu_s() - before)
    return times


def qemu_cpu_s() -> list[float]:
    """CPU seconds each of the sandbox's QEMU processes has used since it started (/proc's
    utime + stime; proc(5))."""
    tick = os.sysconf("SC_CLK_TCK")
    found = []
    for pid, argv in netns.pids_in_netns([f"vnet-{SANDBOX}-host"]).items():
        if argv and "qemu-system" in argv[0]:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            found.append((int(fields[11]) + int(fields[12])) / tick)
    return found


def tcg_flushes(name: str) -> list[int]:
    """How often each running guest of lab `name` had its whole TCG translation cache flushed
    (QEMU's HMP `info jit`, "TB flush count"): each flush retranslates the guest's hot code, so
    a cache too small for the guest shows here first (drivers/libvirt/render.py TB_CACHE_MIB).
    A guest that is not running (a failed create) has no count."""
    import libvirt

    driver = LibvirtConnection(state.Target(uri=sandbox.describe(SANDBOX).uri, sandbox=SANDBOX))
    counts = []
    for domain in driver.labs().get(name, {}).get("domain", []):
        try:
            jit = driver.hmp(domain, "info jit") if driver.domain_state(domain) == "running" else ""
        except libvirt.libvirtError:
            continue
        counts += [int(line.split()[-1]) for line in jit.splitlines()
                   if line.startswith("TB flush count")]
    return counts


PARALLEL_TIMEOUT = 300.0


def parallel_floor(image, vms: int = 8) -> float | None:
    """`vms` bare QEMU boots of the same image started together: wall time until the last one
    reached userspace (the floor an N-VM lab can reach on these cores)."""
    times: list[float] = []
    start = time.monotonic()
    # accel's own probe timeout (10 s) is for one boot: N at once on a busy machine take longer
    threads = [threading.Thread(target=lambda: times.append(
        accel.boot_once(image, "qemu", timeout=PARALLEL_TIMEOUT)[0])) for _ in range(vms)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.monotonic() - start if all(times) and len(times) == vms else None


def boot_timelines(name: str) -> list[dict]:
    """Each VM's boot timeline from its own console stamps (guest/bootstages.py)."""
    lab_dir = state.lab_dir(state.Target(uri="", sandbox=SANDBOX), name)
    return [t for log in sorted(lab_dir.glob("*.serial.log"))
            if (t := bootstages.timeline(read_console(log)))]


def qemu_memory_mib() -> dict:
    """RSS counts the kernel file QEMU maps in every process; PSS shares it out, and
    Anonymous is what each VM really adds (guest RAM it touched + TCG cache + QEMU heap)."""
    totals = {"rss": 0, "pss": 0, "anon": 0}
    for pid, argv in netns.pids_in_netns([f"vnet-{SANDBOX}-host"]).items():
        if argv and "qemu-system" in argv[0]:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                fields = {l.split(":")[0]: int(l.split()[1]) for l in f if l.split()[-1] == "kB"}
            totals["rss"] += fields["Rss"]
            totals["pss"] += fields["Pss"]
            totals["anon"] += fields["Anonymous"]
    return {k: round(v / 1024, 1) for k, v in totals.items()}


def verified_lab(mode: str, vms: int, name: str, lab_file: Path | None = None,
                 boots: list | None = None, breakdowns: list | None = None,
                 cpu: list | None = None) -> tuple[float, dict, dict]:
    """`vnet create` (or `vnet up LAB_FILE`, whose lab is `name`) from nothing to a verified
    matrix: (wall s, phases, QEMU memory MiB); each VM's boot timeline is added to `boots`,
    the result's verify_breakdown to `breakdowns`, and to `cpu` where the CPU went
    (each guest's QEMU, and vnet with everything it ran: Ansible, ssh, the listeners)."""
    start, before = time.monotonic(), children_cpu_s()
    proc = vnet("up", str(lab_file), "--sandbox", SANDBOX, "--format", "json", check=False) \
        if lab_file else vnet("create", "--mode", mode, "--vms", str(vms), "--name", name,
                              "--sandbox", SANDBOX, "--format", "json", check=False)
    wall = time.monotonic() - start
    try:           # whatever fails here, the lab goes: the next run would collide with it
        memory = qemu_memory_mib()
        if cpu is not None:
            cpu.append({"guests": qemu_cpu_s(), "vnet": children_cpu_s() - before,
                        "tcg_flushes": tcg_flushes(name)})
        if boots is not None:
            boots += boot_timelines(name)
    finally:
        vnet("destroy", name, "--sandbox", SANDBOX, check=False)
    try:
        report = json.loads(proc.stdout)
    except json.JSONDecodeError:
        raise SystemExit(f"vnet create {mode} printed no report:\n{proc.stderr[-2000:]}")
    if not report["ok"]:
        raise SystemExit(f"lab {name} did not verify green: "
                         f"{[c for c in report['checks'] if not c['ok']][:3]}")
    if breakdowns is not None and report.get("verify_breakdown"):
        breakdowns.append(report["verify_breakdown"])
    return wall, report["timings"], memory


def verify_breakdown(found: list[dict]) -> dict | None:
    """Medians over runs (and, per guest, over guests) of where the verify phase went
    (provisioner/verify/run.py breakdown()): prepare, guests (the Ansible run), finish; per
    guest the run's controller start-up (hidden behind the boot when Ansible starts early),
    the probe task, and inside it Python's start on the guest and the probes."""
    if not found:
        return None
    guests = [g for b in found for g in b.get("per_guest", {}).values()]
    per_guest = {key: stats([g[key] for g in guests if g.get(key) is not None])
                 for key in ("controller_start_s", "probe_task_s", "wrapup_s")}
    per_guest |= {key: stats([g["module"][key] for g in guests
                              if g.get("module", {}).get(key) is not None])
                  for key in ("python_start_s", "probes_s", "forwards_wait_s")}
    return {**{key: stats([b[key] for b in found if b.get(key) is not None])
               for key in ("prepare_s", "guests_s", "finish_s")}, "per_guest": per_guest}


def tunnels_verify(runs: int) -> dict | None:
    """The verify phase of examples/tunnels.yaml (3 VMs, six tunnels across a router), to
    compare with the plain natnetwork lab's (issue 17)."""
    seconds = []
    for i in range(runs):
        say(f"tunnels (examples/tunnels.yaml), run {i + 1}/{runs}")
        _, timings, _ = verified_lab("", 3, "tunnels", ROOT / "examples" / "tunnels.yaml")
        seconds += [timings["verify"]] if "verify" in timings else []
    return stats(seconds)


def vagrant_up(box_ready: bool) -> float | None:
    """`vagrant up` of vagrant/natnetwork in the same sandbox (it verifies nothing)."""
    demo = ROOT / "vagrant" / "natnetwork"
    if not box_ready or not (demo / "Vagrantfile").exists():
        return None
    env = vagrant_env()
    argv = sandbox.exec_argv(sandbox.load(SANDBOX), ["vagrant", "up", "--provider", "libvirt"])
    start = time.monotonic()
    proc = subprocess.run(argv, cwd=demo, env=env, capture_output=True, text=True)
    wall = time.monotonic() - start
    subprocess.run(sandbox.exec_argv(sandbox.load(SANDBOX), ["vagrant", "destroy", "-f"]),
                   cwd=demo, env=env, capture_output=True)
    if proc.returncode != 0:
        say(f"vagrant up failed: {proc.stderr[-400:]}")
        return None
    return wall


def prepare_vagrant() -> bool:
    """Package the tiny image as a box (same kernel and initramfs) and add it, once."""
    if subprocess.run(["which", "vagrant"], capture_output=True).returncode != 0:
        say("vagrant is not installed: skipping the Vagrant comparison")
        return False
    proc = vnet("image", "box", "--provider", "libvirt", "--out", str(HERE / ".boxes"), check=False)
    if proc.returncode != 0:
        say(f"vnet image box failed, skipping Vagrant: {proc.stderr[-300:]}")
        return False
    # Add it under the name the demo asks for, so Vagrant never looks for it online.
    box_file = proc.stdout.strip().splitlines()[-1]
    added = subprocess.run(["vagrant", "box", "add", "--force", "--name", "vnet/tiny", box_file],
                           env=vagrant_env(), capture_output=True, text=True)
    if added.returncode != 0:
        say(f"vagrant box add failed, skipping Vagrant: {added.stderr[-300:]}")
        return False
    return True


def vagrant_env() -> dict:
    return {**os.environ, "VAGRANT_HOME": str(HERE / ".vagrant-home")}


def render_1000() -> dict:
    from provisioner.lab import loader as labfile
    from provisioner.drivers.virtualbox.render import VBoxContext, VirtualBoxRenderer
    from provisioner.drivers.libvirt.render import LibvirtRenderer

    data = {"name": "big",
            "networks": [{"name": f"n{i}", "mode": ("natnetwork", "hostonly", "internal")[i % 3],
                          "subnet": f"10.{i}.0.0/22"} for i in range(50)],
            "vms": [{"name": f"vm{j}", "nics": [{"network": f"n{j % 50}"}]} for j in range(1000)]}
    out = {}
    for label, make in (("xml", lambda: LibvirtRenderer()),
                        ("vboxmanage", lambda: VirtualBoxRenderer(
                            VBoxContext(hostonly_ranges=("10.0.0.0/8", "172.16.0.0/12"),
                                        mgmt_subnet="172.16.0.0/16")))):
        times = []
        for _ in range(5):
            start = time.perf_counter()
            make().plan(labfile.resolve(data))
            times.append(time.perf_counter() - start)
        out[label] = stats(times)
    return out


def matrix(jobs: int | None = None, shared: bool = False) -> dict | None:
    """`vnet matrix` with --jobs (None: its default); one lab per mode x model, or with
    `shared` its default: one lab per NIC model carrying every mode."""
    report_dir = HERE / ".matrix-report" / f"{'shared' if shared else 'jobs'}-{jobs or 'default'}"
    start = time.monotonic()
    proc = vnet("matrix", "--sandbox", SANDBOX, "--report-dir", str(report_dir),
                *(["--jobs", str(jobs)] if jobs else []),
                *([] if shared else ["--one-lab-per-mode"]), check=False)
    wall = time.monotonic() - start
    if proc.returncode not in (0, 1):
        say(f"vnet matrix failed: {proc.stderr[-300:]}")
        return None
    summary = json.loads((report_dir / "summary.json").read_text())
    # Report paths relative to the repository: a result file names no path of this machine.
    text = json.dumps(summary).replace(str(ROOT) + "/", "")
    return {"total": round(wall, 2), "green": proc.returncode == 0, "per_lab": json.loads(text)}


# --- several hosts (issue 13) -----------------------------------------------------------------

MULTI_SANDBOX = "mhbench"


def _lab_yaml(name: str, hosts: tuple[str, ...]) -> str:
    """natnetwork + internal, 4 VMs spread round-robin over `hosts` (one host: all on it)."""
    lines = [f"name: {name}", "networks:",
             "  - {name: lan, mode: natnetwork, subnet: 10.73.0.0/24}",
             "  - {name: back, mode: internal, subnet: 10.73.1.0/24}", "vms:"]
    if len(hosts) > 1:
        lines[1:1] = ["hosts:"] + [f"  - {{name: {h}}}" for h in hosts]
    for i in range(4):
        where = f", host: {hosts[i % len(hosts)]}" if len(hosts) > 1 else ""
        lines.append(f"  - {{name: vm{i}{where}, nics: [{{network: lan}}, {{network: back}}]}}")
    return "\n".join(lines) + "\n"


def several_hosts(runs: int) -> dict:
    """Time to a verified 2-host x 2-VM lab beside the same 4 VMs on one host, alternated in
    one `--hosts 2` sandbox (the single-host lab runs on hv1)."""
    import tempfile

    results: dict[str, list[float]] = {"two_hosts_2x2": [], "one_host_4": []}
    with tempfile.TemporaryDirectory(prefix="vnet-bench-") as tmp:
        files = {"two_hosts_2x2": Path(tmp) / "mh2.yaml", "one_host_4": Path(tmp) / "mh1.yaml"}
        files["two_hosts_2x2"].write_text(_lab_yaml("mh2", ("hv1", "hv2")))
        files["one_host_4"].write_text(_lab_yaml("mh1", ("hv1",)))
        sandbox.up(MULTI_SANDBOX, progress=say, hosts=2)
        try:
            for i in range(runs):
                for key, path in files.items():
                    say(f"several hosts: {key}, run {i + 1}/{runs}")
                    start = time.monotonic()
                    proc = vnet("up", str(path), "--sandbox", MULTI_SANDBOX, "--format", "json",
                                check=False)
                    wall = time.monotonic() - start
                    vnet("destroy", path.stem, "--sandbox", MULTI_SANDBOX, check=False)
                    report = json.loads(proc.stdout or "{}")
                    if not report.get("ok"):
                        raise SystemExit(f"{key} did not verify green: {proc.stderr[-2000:]}")
                    results[key].append(wall)
        finally:
            sandbox.down(MULTI_SANDBOX, progress=say)
    two, one = stats(results["two_hosts_2x2"]), stats(results["one_host_4"])
    return {"two_hosts_2x2_vms_s": two, "one_host_4_vms_s": one,
            "ratio_two_hosts_vs_one": round(two["median"] / one["median"], 2)}


PARALLEL_VMS = 8
GUEST_RAM_MIB = 128          # the default lab's VMs (lab/defaults.py)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true",
                        help="under a minute: no Vagrant, no full matrix, fewer runs")
    parser.add_argument("--out", type=Path, default=HERE / "result.json")
    parser.add_argument("--sandbox", default=SANDBOX,
                        help=f"a new sandbox to run in, made and removed by the run (default "
                             f"{SANDBOX}; also {MULTI_SANDBOX} for the multi-host lab)")
    args = parser.parse_args()
    globals()["SANDBOX"] = args.sandbox     # every helper runs in this sandbox
    if os.geteuid() != 0:
        raise SystemExit("benchmarks/run needs root (it runs a vnet sandbox)")
    taken = sorted({SANDBOX, MULTI_SANDBOX} & set(sandbox.list_names()))
    if taken:        # the run removes its sandboxes at the end, with whatever labs they hold
        parser.error(f"--sandbox: sandbox {', '.join(taken)} already exists (its labs would be "
                     "removed with it at the end); give another name, or `vnet sandbox down` it")
    runs = 1 if args.quick else 3
    image = images.build_tiny(progress=say)
    t0 = time.monotonic()
    images.build_tiny(progress=say)
    image_cache_hit = time.monotonic() - t0
    sandbox.up(SANDBOX, progress=say)
    try:
        say("floor: bare QEMU boots, one alone and "
            + ("" if args.quick else f"{PARALLEL_VMS} together, alternated"))
        floor, parallel, floor_cpu, lab_cpu = [], [], [], []
        for _ in range(runs + 1):
            floor += floor_boot(image, 1, floor_cpu)
            if not args.quick and (p := parallel_floor(image, PARALLEL_VMS)) is not None:
                parallel.append(p)
        box_ready = False if args.quick else prepare_vagrant()
        verified, phases, vagrant, links, boots, breakdowns = [], [], [], [], [], []
        for i in range(runs):            # A/B alternated: vnet, then vagrant, in the same sandbox
            say(f"time to verified, run {i + 1}/{runs}")
            wall, timings, _ = verified_lab("natnetwork", 2, f"ttv{i}", boots=boots,
                                            breakdowns=breakdowns, cpu=lab_cpu)
            verified.append(wall)
            phases.append(timings)
            say(f"bonds and a router (examples/bonds-and-router.yaml), run {i + 1}/{runs}")
            _, link_timings, _ = verified_lab("", 3, "bondrouter", LINKS_LAB)
            links.append(link_timings)
            if box_ready:
                say(f"vagrant up, run {i + 1}/{runs}")
                if (v := vagrant_up(box_ready)) is not None:
                    vagrant.append(v)
        scaling = []
        for n in ((1, 2) if args.quick else (1, 2, 4, PARALLEL_VMS)):
            say(f"scaling: {n} VM(s)")
            wall, _, mem = verified_lab("natnetwork", n, f"scale{n}")
            scaling.append({"vms": n, "seconds": round(wall, 2), "qemu_rss_mib": mem["rss"],
                            "qemu_pss_mib": mem["pss"], "qemu_anon_mib": mem["anon"],
                            "guest_ram_mib": GUEST_RAM_MIB * n,
                            "overhead_beyond_guest_ram_mib_per_vm":
                                round((mem["pss"] - GUEST_RAM_MIB * n) / n, 1)})
        tunnels = tunnels_verify(runs)
        matrices = {}
        if not args.quick:   # the same matrix one lab at a time, concurrently, then shared labs
            matrices = matrix_rows()
        render = render_1000()
    finally:
        sandbox.down(SANDBOX, progress=say)

    hosts = several_hosts(runs)
    phase_names = sorted({k for p in phases for k in p})
    ttv = stats(verified)
    vag = stats(vagrant)
    result = {
        "floor_boot_s": stats(floor),
        "parallel_floor_s": stats(parallel) and dict(stats(parallel), vms=PARALLEL_VMS),
        "time_to_verified_s": ttv,
        "phases": {k: stats([p[k] for p in phases if k in p]) for k in phase_names}
                  | {"image_cache_hit": round(image_cache_hit, 3)},
        "boot_breakdown_s": boot_breakdown(boots),
        "verify_breakdown_s": verify_breakdown(breakdowns),
        "cpu_s": cpu_accounting(floor_cpu, lab_cpu),
        # the verify phase beside the plain natnetwork lab's, from the same runs (issue 17)
        "verify_s": {"natnetwork_2_vms": stats([p["verify"] for p in phases if "verify" in p]),
                     "bonds_and_router_3_vms": stats([p["verify"] for p in links
                                                      if "verify" in p]),
                     "tunnels_3_vms": tunnels},
        "vagrant_up_s": vag,
        "ratio_vs_vagrant": round(ttv["median"] / vag["median"], 2) if vag else None,
        "matrix_s": matrices.get("concurrent"),
        "matrix_sequential_s": matrices.get("sequential"),
        "matrix_shared_s": matrices.get("shared"),
        "matrix_ratios": matrix_ratios(matrices),
        "scaling": scaling,
        "render_1000_s": render,
        "several_hosts": hosts,
        "machine": {"cores": os.cpu_count(), "accelerator": accel.choose(image, say)},
        "notes": ["vagrant up verifies nothing; vnet's time includes a full verified matrix",
                  "each value: median with min and max of the runs in this same invocation",
                  "boot_breakdown_s: the guests' own uptime stamps from their serial consoles"],
    }
    if len(scaling) > 1:
        a, b = scaling[0], scaling[-1]
        result["scaling_marginal"] = {
            "seconds_per_extra_vm": round((b["seconds"] - a["seconds"]) / (b["vms"] - a["vms"]), 2),
            "rss_mib_per_extra_vm": round((b["qemu_rss_mib"] - a["qemu_rss_mib"]) / (b["vms"] - a["vms"]), 1),
            "pss_mib_per_extra_vm": round((b["qemu_pss_mib"] - a["qemu_pss_mib"]) / (b["vms"] - a["vms"]), 1)}
    result["targets"] = targets(result)
    locks.write_out(args.out, json.dumps(result, indent=2) + "\n")
    print(summary(result))
    say(f"wrote {args.out}")


def cpu_accounting(floor_cpu: list[float], lab_cpu: list[dict]) -> dict | None:
    """Where the 2-VM lab's CPU went, beside a bare boot's: on a machine whose cores the
    guests fill (TCG), the wall time cannot fall below the CPU seconds over the cores."""
    if not floor_cpu or not lab_cpu:
        return None
    guest = stats([g for run in lab_cpu for g in run["guests"]])
    vnet_side = stats([run["vnet"] for run in lab_cpu])
    floor = stats(floor_cpu)
    total = statistics.median(sum(run["guests"]) + run["vnet"] for run in lab_cpu)
    return {"floor_boot_qemu": floor, "per_guest_qemu": guest,
            "vnet_ansible_ssh": vnet_side,
            "guest_vs_floor": round(guest["median"] / floor["median"], 2),
            "lab_cpu_over_cores_s": round(total / (os.cpu_count() or 1), 2),
            "tcg_flushes_per_guest": stats([n for run in lab_cpu for n in run["tcg_flushes"]]),
            "note": "per_guest_qemu: one guest's QEMU from its start to a green matrix; "
                    "vnet_ansible_ssh: vnet and what it ran (not libvirtd)"}


def boot_breakdown(boots: list[dict]) -> dict | None:
    """The guests' median timeline (seconds since their kernel started) and the time each stage
    took after the one before it."""
    if not boots:
        return None
    timeline = bootstages.median_timeline(boots)
    stages, before = {}, 0.0
    for stage, at in timeline.items():
        stages[stage] = round(at - before, 2)
        before = at
    return {"timeline": timeline, "stage_seconds": stages, "boots": len(boots)}


def matrix_rows() -> dict:
    """The full matrix three ways, one after another in this sandbox: one lab per mode x model
    one at a time (--one-lab-per-mode --jobs 1), the same labs at once (--jobs default), and
    vnet matrix's default (one lab per NIC model carrying every mode, labs at once)."""
    rows = {}
    say("full matrix, one lab per mode x model, one at a time (--jobs 1)")
    rows["sequential"] = matrix(1)
    say("full matrix, one lab per mode x model, labs at once (--jobs default)")
    rows["concurrent"] = matrix()
    say("full matrix, vnet matrix's default: one shared lab per NIC model")
    rows["shared"] = matrix(shared=True)
    return rows


def matrix_ratios(rows: dict) -> dict | None:
    """Each way of running the matrix as a fraction of one lab per mode, one at a time."""
    seq = rows.get("sequential")
    if not seq:
        return None
    return {f"{k}_vs_sequential": round(rows[k]["total"] / seq["total"], 2)
            for k in ("concurrent", "shared") if rows.get(k)}


# (measure, how it is computed, target): each ratio is taken within this run.
TARGETS = (
    ("natnetwork 2 VMs to green / bare boot floor", "time_to_verified_vs_floor", 2.5),
    ("vnet to green / vagrant up (unverified)", "ratio_vs_vagrant", 0.4),
    ("full matrix, shared labs (default) / one lab per mode, one at a time",
     "matrix_shared_vs_sequential", 0.4),
    (f"{PARALLEL_VMS}-VM lab to green / {PARALLEL_VMS} bare boots together",
     "lab_8_vms_vs_parallel_floor", 1.5),
    (f"PSS beyond guest RAM per VM, MiB ({PARALLEL_VMS} VMs)", "pss_beyond_guest_ram_mib", 32.0),
)


def targets(r: dict) -> list[dict]:
    """Each target of issue 15 with its value from this run and met / not met (None when
    this run did not measure it, e.g. --quick)."""
    def median(key):
        return (r.get(key) or {}).get("median")
    floor, par = median("floor_boot_s"), median("parallel_floor_s")
    big = next((s for s in r["scaling"] if s["vms"] == PARALLEL_VMS), None)
    seq, shared = r.get("matrix_sequential_s"), r.get("matrix_shared_s")
    values = {
        "time_to_verified_vs_floor": median("time_to_verified_s") / floor if floor else None,
        "ratio_vs_vagrant": r.get("ratio_vs_vagrant"),
        "matrix_shared_vs_sequential": shared["total"] / seq["total"] if seq and shared else None,
        "lab_8_vms_vs_parallel_floor": big["seconds"] / par if big and par else None,
        "pss_beyond_guest_ram_mib": big["overhead_beyond_guest_ram_mib_per_vm"] if big else None,
    }
    return [{"measure": label, "key": key, "value": None if values[key] is None
             else round(values[key], 2), "target": f"<= {limit}",
             "met": None if values[key] is None else values[key] <= limit}
            for label, key, limit in TARGETS]


def ratio(row: dict, sequential: dict | None) -> str:
    return f" = {row['total'] / sequential['total']:.2f}x --jobs 1" if sequential else ""


def summary(r: dict) -> str:
    floor = r["floor_boot_s"]["median"] if r["floor_boot_s"] else None
    ttv = r["time_to_verified_s"]["median"]
    lines = ["vnet benchmark (medians; min-max in the JSON)",
             f"  bare boot floor            {floor}s",
             f"  time to verified (2 VMs)   {ttv}s = {ttv / floor:.1f}x floor" if floor else
             f"  time to verified (2 VMs)   {ttv}s",
             "  phases                     " + ", ".join(
                 f"{k} {v['median']}s" for k, v in r["phases"].items() if isinstance(v, dict))]
    if r.get("parallel_floor_s"):
        lines.append(f"  parallel floor ({r['parallel_floor_s']['vms']} boots)  "
                     f"{r['parallel_floor_s']['median']}s")
    if r.get("cpu_s"):
        c = r["cpu_s"]
        lines.append(f"  CPU: per guest {c['per_guest_qemu']['median']}s = {c['guest_vs_floor']}x "
                     f"a bare boot's {c['floor_boot_qemu']['median']}s; vnet+Ansible "
                     f"{c['vnet_ansible_ssh']['median']}s; lab CPU / cores "
                     f"{c['lab_cpu_over_cores_s']}s"
                     + (f"; TCG cache flushes per guest {c['tcg_flushes_per_guest']['median']}"
                        if c.get("tcg_flushes_per_guest") else ""))
    if r.get("boot_breakdown_s"):
        lines.append("  in-guest boot (uptime)     " + ", ".join(
            f"{k} {v}s" for k, v in r["boot_breakdown_s"]["timeline"].items()))
    if r.get("verify_s", {}).get("bonds_and_router_3_vms"):
        lines.append(f"  verify: natnetwork 2 VMs   {r['verify_s']['natnetwork_2_vms']['median']}s, "
                     f"bonds+router 3 VMs {r['verify_s']['bonds_and_router_3_vms']['median']}s")
    if r.get("verify_s", {}).get("tunnels_3_vms"):
        lines.append(f"  verify: tunnels 3 VMs      {r['verify_s']['tunnels_3_vms']['median']}s "
                     "(six tunnels across a router)")
    if r["vagrant_up_s"]:
        lines.append(f"  vagrant up (unverified)    {r['vagrant_up_s']['median']}s -> "
                     f"vnet/vagrant = {r['ratio_vs_vagrant']}")
    if r.get("matrix_sequential_s"):
        lines.append(f"  full matrix, --jobs 1      {r['matrix_sequential_s']['total']}s")
    if r["matrix_s"]:
        lines.append(f"  full matrix, --jobs {r['matrix_s']['per_lab'].get('jobs', '?'):<6} "
                     f" {r['matrix_s']['total']}s" + ratio(r["matrix_s"], r.get("matrix_sequential_s")))
    if r.get("matrix_shared_s"):
        lines.append(f"  full matrix, shared labs    {r['matrix_shared_s']['total']}s"
                     + ratio(r["matrix_shared_s"], r.get("matrix_sequential_s")))
    for s in r["scaling"]:
        lines.append(f"  {s['vms']} VM(s)                   {s['seconds']}s, QEMU RSS {s['qemu_rss_mib']} "
                     f"MiB, PSS {s['qemu_pss_mib']} MiB ({s['overhead_beyond_guest_ram_mib_per_vm']} "
                     "MiB/VM beyond guest RAM)")
    lines.append(f"  render 1000 VMs            xml {r['render_1000_s']['xml']['median']}s, "
                 f"vboxmanage {r['render_1000_s']['vboxmanage']['median']}s")
    if r.get("several_hosts"):
        h = r["several_hosts"]
        lines.append(f"  2 hosts x 2 VMs, verified  {h['two_hosts_2x2_vms_s']['median']}s; same 4 VMs "
                     f"on one host {h['one_host_4_vms_s']['median']}s "
                     f"(ratio {h['ratio_two_hosts_vs_one']})")
    lines.append("targets (issue 15; ratios from this run):")
    for t in r.get("targets", []):
        verdict = "not measured" if t["met"] is None else ("met" if t["met"] else "NOT MET")
        lines.append(f"  {t['measure']:<58} {t['value']} (target {t['target']}): {verdict}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
