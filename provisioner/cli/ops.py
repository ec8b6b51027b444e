"""`vnet doctor` and `vnet matrix`: parse, call the library (provisioner.doctor,
provisioner.ops.matrix), print, exit. Registered on the main group by provisioner/cli/__init__.py."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from .common import BACKENDS, handle_errors, only_one_target, sandbox_name_opt
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
    only_one_target(sandbox_name, uri)
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
@click.option("--one-lab-per-mode", is_flag=True,
              help="One lab per mode x NIC model (10 labs of 2 VMs) instead of one lab per NIC "
                   "model carrying every mode (2 labs of 2 VMs with one NIC per mode).")
@handle_errors
def matrix_cmd(mode_list, model_list, sandbox_name, report_dir, pf, report, out, jobs,
               one_lab_per_mode):
    """Verify every mode x NIC model in a sandbox, up to --jobs N labs at once; print one
    summary table and write a JSON and JUnit report per mode x model plus summary.json
    (seconds per row and per lab, total wall time).

    By default each NIC model gets ONE lab: two VMs with one NIC on a network of every mode,
    verified once; its cells are split back per mode into the same reports, rows and expected
    values (from the mode table) as a lab of that mode alone. Every probe is bound to the
    device and address of its own mode's NIC, so no mode's cell is decided through another
    mode's NIC. The report of such a row names the shared lab, and its seconds are that lab's.
    A model with one realizable mode (sriov, vdpa: bridged only) gets a lab of its own.
    --one-lab-per-mode creates, verifies and destroys the default lab of each mode x model
    instead (two VMs, one NIC each).

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
      vnet matrix --one-lab-per-mode --report-dir reports   # a lab for each mode x model
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
                             progress=progress_printer(), jobs=jobs,
                             shared=not one_lab_per_mode)
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
