"""`vnet doctor` and `vnet matrix`: parse, call the library (provisioner.doctor,
provisioner.ops.matrix), print, exit. Registered on the main group by provisioner/cli/__init__.py."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from .common import BACKENDS, handle_errors, sandbox_name_opt
from ..errors import ExitStatus


@click.command("doctor")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
              show_default=True)
@click.option("--uri", help="libvirt URI to check (default qemu:///system, or the sandbox's).")
@click.option("--sandbox", "sandbox_name", callback=sandbox_name_opt,
              help="Check this vnet sandbox as the target.")
@click.option("--backend", type=click.Choice(BACKENDS), default="libvirt", show_default=True)
@click.option("--lab", "lab_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Also check what this lab file needs (its subnets, SR-IOV VFs, vDPA devices).")
@handle_errors
def doctor_cmd(fmt, uri, sandbox_name, backend, lab_file):
    """Find what would make labs fail on this machine, before anything is created: KVM that
    does not boot, no libvirtd or no permission, qemu:///session, taken subnets, a FORWARD
    chain that drops, ufw/firewalld against libvirt's firewall, missing programs, VirtualBox's
    networks.conf and KVM modules, SR-IOV VFs and vDPA devices.

    Each finding has an id, a severity (ok, warn, error), a summary and a fix. Exit code 0 when
    there is no error, 3 when there is one.

    \b
    Examples:
      vnet doctor
      vnet doctor --sandbox default --format json
      vnet doctor --backend virtualbox
      vnet doctor --lab lab.yaml --sandbox default
    """
    from .. import doctor

    lab = None
    if lab_file is not None:
        from ..lab import loader as labfile
        from ..host import sandbox

        lab = labfile.load(lab_file, sandbox.lab_defaults(sandbox_name))
    report = doctor.diagnose(backend=backend, uri=uri, sandbox=sandbox_name, lab=lab,
                             progress=lambda message: click.echo(f"vnet: {message}", err=True))
    click.echo(json.dumps(report.as_json(), indent=2) if fmt == "json" else report.text())
    sys.exit(int(ExitStatus.ENVIRONMENT) if report.errors else 0)



def _names(value: str | None) -> list[str] | None:
    return None if value is None else [v.strip() for v in value.split(",") if v.strip()]


@click.command("matrix")
@click.option("--modes", "mode_list", metavar="M1,M2,...",
              help="Modes to run (default: all: bridged,nat,natnetwork,hostonly,internal).")
@click.option("--nic-models", "model_list", metavar="M1,M2,...", default="virtio,e1000",
              show_default=True, help="NIC models to run with every mode.")
@click.option("--sandbox", "sandbox_name", callback=sandbox_name_opt,
              help="Run in this sandbox (default: a temporary one, removed at the end).")
@click.option("--report-dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Where <lab>.json, <lab>.xml (JUnit) and summary.json go.")
@click.option("--pf", help="sriov: the physical function whose VFs the labs get.")
@click.option("--report", type=click.Choice(["html"]), help="Also write one HTML report.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Report file.")
@click.option("--jobs", type=click.IntRange(min=1), metavar="N",
              help="Labs at once (default: two per core, as many as the free memory holds).")
@handle_errors
def matrix_cmd(mode_list, model_list, sandbox_name, report_dir, pf, report, out, jobs):
    """Create, verify and destroy the default lab of every mode x NIC model, up to --jobs N
    at once, in a sandbox; print one summary table and write a JSON and JUnit report per lab plus
    summary.json (per-lab seconds, total wall time).

    Exit code 1 when any cell is red, 3 when a lab could not be created, 1 when nothing at
    all was verified (every lab skipped or unsupported), 0 otherwise. Labs whose hardware is
    missing (SR-IOV, vDPA) are reported as skipped; combinations libvirt cannot realize as
    unsupported. A temporary sandbox is removed at the end, also on Ctrl-C.

    \b
    Examples:
      vnet matrix --report-dir reports
      vnet matrix --modes internal,hostonly --nic-models virtio --report-dir /tmp/m
      vnet matrix --sandbox default --modes natnetwork --report-dir out
      vnet matrix --jobs 1 --report-dir reports      # one lab after another
      vnet matrix --modes natnetwork --report-dir out --report html --out out/matrix.html
    """
    from ..progress import progress_printer
    from ..ops import matrix
    from ..lab import modes

    if report and out is None:
        raise click.UsageError("--report needs --out FILE")
    if report:
        from ..verify.topograph import require_dot

        require_dot()        # before an hour of labs, not after
    mode_names = _names(mode_list) or modes.names()
    model_names = _names(model_list) or list(matrix.DEFAULT_MODELS)
    try:
        summary = matrix.run(mode_names, model_names, report_dir, sandbox_name, pf,
                             progress=progress_printer(),
                             jobs=jobs or matrix.default_jobs(len(mode_names) * len(model_names)))
    except KeyboardInterrupt:
        click.echo(f"vnet: interrupted; labs and the temporary sandbox were removed; partial "
                   f"results in {report_dir / 'summary.json'}", err=True)
        sys.exit(int(ExitStatus.INTERRUPTED))
    click.echo(matrix.summary_table(summary))
    click.echo(f"reports: {report_dir}/")
    if report:
        from ..verify import htmlreport

        saved, labs = htmlreport.load(report_dir / "summary.json")
        click.echo(f"html report: {htmlreport.write_html(saved, out, labs)}")
    sys.exit(int(matrix.exit_status(summary)))


COMMANDS = (doctor_cmd, matrix_cmd)
