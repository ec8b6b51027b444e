"""`vnet` command line: parse, call, and map VnetError to one message and an exit code."""
from __future__ import annotations

import functools
import json
import os
import sys
import traceback
from pathlib import Path

import click

from . import __version__, modes, nics
from .errors import ExitStatus, NotFound, VnetError
from .model import Backend, check_name

BACKENDS = [b.value for b in Backend]


def handle_errors(fn):
    """Library code raises; this is the one place that prints and exits."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return run_guarded(fn, *args, **kwargs)
    return wrapper


def run_guarded(fn, *args, **kwargs):
    """Call fn; a VnetError becomes its message and exit code, anything unexpected exit 3 with
    one line (1 is reserved for red cells), the traceback only with --debug or VNET_DEBUG=1."""
    try:
        return fn(*args, **kwargs)
    except click.UsageError as exc:
        if _is_help(exc):
            raise      # `vnet sandbox` alone prints its help, as click does
        click.echo(f"vnet: error: {' '.join(exc.format_message().split())}", err=True)
        sys.exit(exc.exit_code)     # 2, like every bad input
    except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort):
        raise          # click prints these itself
    except VnetError as exc:
        click.echo(f"vnet: error: {exc.message}", err=True)
        if exc.hint:
            click.echo(f"vnet: hint: {exc.hint}", err=True)
        sys.exit(int(exc.status))
    except KeyboardInterrupt:
        click.echo("vnet: interrupted; `vnet destroy LAB` (or `vnet gc`) removes what was "
                   "created", err=True)
        sys.exit(int(ExitStatus.INTERRUPTED))
    except Exception as exc:  # noqa: BLE001 - the last line of defence: never a bare traceback
        if _debug():
            traceback.print_exc()
        detail = " ".join(f"{type(exc).__name__}: {exc}".split())
        click.echo(f"vnet: internal error: {detail[:200]}; rerun with --debug for the traceback",
                   err=True)
        sys.exit(int(ExitStatus.ENVIRONMENT))


def _is_help(exc: click.UsageError) -> bool:
    help_error = getattr(click.exceptions, "NoArgsIsHelpError", None)   # click >= 8.2
    return help_error is not None and isinstance(exc, help_error)


def _debug() -> bool:
    ctx = click.get_current_context(silent=True)
    return os.environ.get("VNET_DEBUG") == "1" or bool(ctx and ctx.find_root().params.get("debug"))


class GuardedGroup(click.Group):
    """Also guards what runs outside a command's body (argument callbacks, nested groups)."""

    def invoke(self, ctx):
        return run_guarded(super().invoke, ctx)

    def make_context(self, *args, **kwargs):
        # the root group's own options are parsed here, outside invoke
        return run_guarded(super().make_context, *args, **kwargs)


def lab_name_arg(ctx, param, value):
    """Click callback: a LAB_NAME from argv passes the lab-file name rule before it reaches a
    path or an API (`vnet destroy ..` must not mean the labs directory)."""
    return None if value is None else check_name(value, param.human_readable_name)


def sandbox_name_opt(ctx, param, value):
    """Click callback: --sandbox passes the sandbox name rule ('' is not "no sandbox")."""
    from .sandbox import validate_name

    return None if value is None else validate_name(value)


def report_kind_opt(ctx, param, value):
    """Click callback: `--report html` needs graphviz's dot; say so before anything is made."""
    if value == "html":
        from .topograph import require_dot

        require_dot()
    return value


@click.group(cls=GuardedGroup, context_settings={"help_option_names": ["-h", "--help"],
                                                 "max_content_width": 100})
@click.version_option(__version__, prog_name="vnet")
@click.option("--debug", is_flag=True, help="Print the traceback of an internal error "
              "(also VNET_DEBUG=1).")
def main(debug):
    """vnet: build libvirt and VirtualBox network labs, and prove from inside the guests what
    each network allows and forbids.

    \b
    Quick start (an isolated sandbox on this machine; nothing touches your real network):
      vnet image build                       # tiny guest image, cached
      vnet sandbox up                        # private libvirtd + offline "Internet"
      vnet create --mode natnetwork --sandbox default
      vnet destroy natnetwork --sandbox default && vnet sandbox down

    \b
    See what a lab would be, without touching anything:
      vnet create --mode hostonly --dry-run
      vnet render lab.yaml --backend virtualbox --out out/
      vnet modes --format json
    """


# --- modes ------------------------------------------------------------------------------------

@main.command("modes")
@click.option("--backend", type=click.Choice(BACKENDS), default="virtualbox", show_default=True,
              help="Whose promises to show; libvirt differs where stated.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table",
              show_default=True)
@handle_errors
def modes_cmd(backend: str, fmt: str):
    """Print what each network mode promises (the expected reachability matrix).

    \b
    Examples:
      vnet modes
      vnet modes --backend libvirt --format json
    """
    from .report import modes_json, modes_table

    click.echo(json.dumps(modes_json(Backend(backend)), indent=2) if fmt == "json"
               else modes_table(Backend(backend)))


# --- render / create --------------------------------------------------------------------------

@main.command()
@click.argument("lab_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--backend", type=click.Choice(BACKENDS), default="libvirt", show_default=True)
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Write files here instead of printing them.")
@handle_errors
def render(lab_file: Path, backend: str, out: Path | None):
    """Render LAB_FILE to libvirt XML or VBoxManage command lines, touching nothing.

    \b
    With --out, libvirt writes OUT/networks/<name>.xml and OUT/domains/<name>.xml;
    virtualbox writes OUT/vboxmanage.json (a list of argv lists) and OUT/vboxmanage.sh.
    \b
    Examples:
      vnet render lab.yaml
      vnet render lab.yaml --backend virtualbox --out build/
    """
    from . import labfile
    from .plans import plan_for, write_plan, print_plan

    lab = labfile.load(lab_file)
    plan = plan_for(lab, Backend(backend))
    if out:
        for path in write_plan(plan, out):
            click.echo(path)
    else:
        print_plan(plan)


def lab_options(fn):
    """Options shared by commands that build the default lab."""
    fn = click.option("--mode", required=True, type=click.Choice(modes.names()),
                      help="Network mode of the lab's one network.")(fn)
    fn = click.option("--nic-model", default="virtio", show_default=True,
                      type=click.Choice(nics.names()), help="Model of every VM's NIC.")(fn)
    fn = click.option("--vms", default=2, show_default=True, type=click.IntRange(1, 64),
                      help="How many VMs.")(fn)
    fn = click.option("--name", help="Lab name (default: the mode).")(fn)
    fn = click.option("--pf", help="sriov: the physical function whose VFs the VMs get.")(fn)
    fn = click.option("--bridge", help="bridged: the existing host bridge (default br0; in a "
                                       "sandbox, its LAN bridge).")(fn)
    return fn


@main.command()
@lab_options
@click.option("--backend", type=click.Choice(BACKENDS), default="libvirt", show_default=True)
@click.option("--dry-run", is_flag=True, help="Print the plan; create nothing.")
@click.option("--sandbox", "sandbox_name", callback=sandbox_name_opt,
              help="Create inside this vnet sandbox.")
@click.option("--uri", help="libvirt URI (default qemu:///system, or the sandbox's).")
@click.option("--no-verify", is_flag=True, help="Stop once the VMs have their addresses.")
@click.option("--report", type=click.Choice(["json", "junit", "html"]), callback=report_kind_opt,
              help="Also write a report.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Report file.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@handle_errors
def create(mode, nic_model, vms, name, pf, bridge, backend, dry_run, sandbox_name, uri, no_verify,
           report, out, fmt):
    """Create the default lab for a mode (N VMs on one network), boot it and verify it.

    \b
    For nat, each VM gets its own NAT with SSH and echo port forwards; natnetwork gets the
    same forwards on its shared NAT network.
    \b
    Examples:
      vnet create --mode natnetwork --dry-run
      vnet create --mode hostonly --backend virtualbox --dry-run
      vnet create --mode natnetwork --sandbox default
    """
    from . import labfile
    from .defaultlab import default_lab
    from .plans import plan_for, print_plan

    from .sandbox import lab_defaults

    require_report_out(report, out)
    defaults = lab_defaults(sandbox_name, bridge)
    data = default_lab(mode, nic_model, vms, name, bridge, pf=pf)
    lab = labfile.resolve(data, defaults, source=f"vnet create --mode {mode}")
    if dry_run:
        print_plan(plan_for(lab, Backend(backend)))
        return
    _up_and_verify(lab, backend, sandbox_name, uri, not no_verify, report, out, fmt)


def _up_and_verify(lab, backend, sandbox_name, uri, verify, report, out, fmt, wait=True):
    from . import lifecycle

    say = lifecycle.progress_printer()
    if Backend(backend) is Backend.VIRTUALBOX:
        from .drivers import vbox_exec
        record = vbox_exec.up(lab, progress=say, wait=wait)
        if not verify or not wait:
            return
        from . import verify as verifier

        result = verifier.verify(lab, vbox_exec.TARGET, say, timings=record.get("timings", {}),
                                 inventory=vbox_exec.inventory(lab))
        return _emit_verification(result, report, out, fmt)
    target = lifecycle.target_for(sandbox_name, uri)
    record = lifecycle.up(lab, target, say, wait=wait)
    if not verify or not wait:
        click.echo(json.dumps(lifecycle.status(lab.name, target), indent=2) if fmt == "json"
                   else _status_table(lifecycle.status(lab.name, target)))
        return
    from . import verify as verifier

    result = verifier.verify(lab, target, say, timings=record.get("timings", {}))
    _emit_verification(result, report, out, fmt)


def require_report_out(report, out) -> None:
    """`--report` without `--out` is a usage error before anything is loaded or built."""
    if report and out is None:
        raise click.UsageError("--report needs --out FILE")


def _emit_verification(result, report, out, fmt):
    from . import verify as verifier

    if report:
        require_report_out(report, out)
        verifier.write_report(result, report, out)
    click.echo(json.dumps(result, indent=2) if fmt == "json" else verifier.matrix_text(result))
    if verifier.exit_code(result):      # a red cell, or nothing verified at all
        sys.exit(int(ExitStatus.CHECKS_FAILED))


def target_options(fn):
    fn = click.option("--uri", help="libvirt URI (default qemu:///system, or the sandbox's).")(fn)
    fn = click.option("--sandbox", "sandbox_name", callback=sandbox_name_opt,
                      help="Target this vnet sandbox.")(fn)
    return fn


@main.command()
@click.argument("lab_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--backend", type=click.Choice(BACKENDS), default="libvirt", show_default=True)
@target_options
@click.option("--no-wait", is_flag=True, help="Return once the VMs have started.")
@click.option("--no-verify", is_flag=True, help="Stop once the VMs have their addresses.")
@click.option("--dry-run", is_flag=True, help="Print the plan; create nothing.")
@click.option("--report", type=click.Choice(["json", "junit", "html"]), callback=report_kind_opt,
              help="Also write a report.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Report file.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@handle_errors
def up(lab_file, backend, uri, sandbox_name, no_wait, no_verify, dry_run, report, out, fmt):
    """Create (or complete) the lab in LAB_FILE, boot it, wait for addresses and verify it.
    Running it again changes nothing.

    \b
    Examples:
      vnet up lab.yaml --sandbox default
      vnet up lab.yaml --uri qemu+ssh://root@hv1/system --no-verify
    """
    from . import labfile
    from .plans import plan_for, print_plan

    from .sandbox import lab_defaults

    require_report_out(report, out)
    lab = labfile.load(lab_file, lab_defaults(sandbox_name))
    if dry_run:
        print_plan(plan_for(lab, Backend(backend)))
        return
    _up_and_verify(lab, backend, sandbox_name, uri, not no_verify, report, out, fmt,
                   wait=not no_wait)


@main.command("verify")
@click.argument("lab_name", required=False, callback=lab_name_arg)
@target_options
@click.option("--vagrant", "vagrant_dir", type=click.Path(file_okay=False, exists=True,
              path_type=Path), help="Verify this Vagrant project (its vnet.yaml) instead of LAB_NAME.")
@click.option("--backend", type=click.Choice(BACKENDS), default="libvirt", show_default=True)
@click.option("--report", type=click.Choice(["json", "junit", "html"]), callback=report_kind_opt,
              help="Also write a report.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Report file.")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@handle_errors
def verify_cmd(lab_name, uri, sandbox_name, vagrant_dir, backend, report, out, fmt):
    """Probe every cell of LAB_NAME's reachability matrix from inside its guests and compare it
    with what each mode promises. Exit 0 only when every cell matches; 1 on any red cell, and
    1 when nothing was verified (every cell skipped or unsupported).

    \b
    Examples:
      vnet verify natnetwork --sandbox default
      vnet verify natnetwork --sandbox default --report junit --out report.xml
      vnet verify --vagrant vagrant/natnetwork --sandbox default
      vnet verify hostonly --backend virtualbox
    """
    from . import lifecycle, state
    from . import verify as verifier

    require_report_out(report, out)
    if vagrant_dir is not None:
        from . import vagrant

        result = vagrant.verify(vagrant_dir, sandbox_name, lifecycle.progress_printer())
        return _emit_verification(result, report, out, fmt)
    if lab_name is None:
        raise click.UsageError("give LAB_NAME, or --vagrant DIR")
    inventory = None
    if Backend(backend) is Backend.VIRTUALBOX:
        from .drivers import vbox_exec
        target = vbox_exec.TARGET
    else:
        target = lifecycle.target_for(sandbox_name, uri)
    record = state.read(target, lab_name)
    if record is None:
        raise NotFound(f"no lab named {lab_name!r} on this target", hint="vnet list shows the labs")
    lab = lifecycle.lab_from_record(record)
    if Backend(backend) is Backend.VIRTUALBOX:
        inventory = vbox_exec.inventory(lab)
    result = verifier.verify(lab, target, lifecycle.progress_printer(), inventory=inventory)
    _emit_verification(result, report, out, fmt)


@main.command()
@click.argument("lab_name", callback=lab_name_arg)
@target_options
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@handle_errors
def status(lab_name, uri, sandbox_name, fmt):
    """Show a lab's VMs, NICs, models, addresses and state.

    \b
    Examples:
      vnet status natnetwork --sandbox default
      vnet status natnetwork --sandbox default --format json
    """
    from . import lifecycle

    data = lifecycle.status(lab_name, lifecycle.target_for(sandbox_name, uri))
    click.echo(json.dumps(data, indent=2) if fmt == "json" else _status_table(data))


def _status_table(data: dict) -> str:
    from .report import table

    rows = [[vm["name"], vm["state"], nic["network"], nic["model"], nic["mac"],
             ", ".join(nic["addresses"]) or "-"] for vm in data["vms"] for nic in vm["nics"]]
    return f"lab {data['lab']}\n" + table(["vm", "state", "network", "model", "mac", "addresses"], rows)


@main.command()
@click.argument("lab_name", callback=lab_name_arg)
@target_options
@click.option("--backend", type=click.Choice(BACKENDS), default="libvirt", show_default=True)
@handle_errors
def destroy(lab_name, uri, sandbox_name, backend):
    """Remove exactly what LAB_NAME created (VMs, networks, port forwards, state); also after a
    crash or Ctrl-C.

    \b
    Examples:
      vnet destroy natnetwork --sandbox default
    """
    from . import lifecycle

    if Backend(backend) is Backend.VIRTUALBOX:
        from .drivers import vbox_exec
        vbox_exec.destroy(lab_name, progress=lifecycle.progress_printer())
        return
    lifecycle.destroy(lab_name, lifecycle.target_for(sandbox_name, uri),
                      lifecycle.progress_printer())
    click.echo(f"lab {lab_name} destroyed")


@main.command("list")
@target_options
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@handle_errors
def list_cmd(uri, sandbox_name, fmt):
    """List labs on a target (a sandbox, or a libvirt URI).

    \b
    Examples:
      vnet list --sandbox default
    """
    from . import lifecycle
    from .report import table

    labs = lifecycle.list_labs(lifecycle.target_for(sandbox_name, uri))
    if fmt == "json":
        click.echo(json.dumps(labs, indent=2))
    else:
        click.echo(table(["lab", "domains", "networks", "state"],
                         [[l["lab"], l["domains"], l["networks"], l["state"]] for l in labs]))


@main.command()
@target_options
@handle_errors
def gc(uri, sandbox_name):
    """Remove libvirt objects tagged by vnet whose lab state is gone. Untagged objects are never
    touched.

    \b
    Examples:
      vnet gc --sandbox default
    """
    from . import lifecycle

    removed = lifecycle.gc(lifecycle.target_for(sandbox_name, uri), lifecycle.progress_printer())
    click.echo(f"removed {len(removed)} object(s)")



# Command groups in their own modules; importing them registers them on `main`.
from . import cli_host  # noqa: E402,F401  (sandbox, image)
from . import cli_vagrant  # noqa: E402,F401  (image box, vagrant verification)
from . import cli_ops  # noqa: E402,F401  (doctor, matrix)
from . import cli_report  # noqa: E402,F401  (report: saved JSON -> HTML)
from . import cli_demo  # noqa: E402,F401  (demo: one-command Vagrant demos)
