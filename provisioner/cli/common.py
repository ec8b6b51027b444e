"""What every command module shares: one place that maps VnetError to a message and an exit
code, the name callbacks, the target options, and printing a verification."""
from __future__ import annotations

import functools
import json
import os
import sys
import traceback
from pathlib import Path

import click

from .. import interrupts
from ..errors import ExitStatus, VnetError
from ..lab.model import Backend, check_name

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
    interrupts.install()
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
    from ..host.paths import validate_name

    return None if value is None else validate_name(value)


def report_kind_opt(ctx, param, value):
    """Click callback: `--report html` needs graphviz's dot; say so before anything is made."""
    if value == "html":
        from ..verify.topograph import require_dot

        require_dot()
    return value


def require_report_out(report, out, dry_run: bool = False) -> None:
    """`--report` without `--out`, or with `--dry-run` (nothing is verified, so there is no
    report), is a usage error before anything is loaded or built."""
    if report and dry_run:
        raise click.UsageError("--report: a dry run verifies nothing, so it writes no report; "
                               "drop --report or --dry-run")
    if report and out is None:
        raise click.UsageError("--report needs --out FILE")


def emit_verification(result, report, out, fmt):
    from ..verify import presentation

    if report:
        require_report_out(report, out)
        presentation.write_report(result, report, out)
    click.echo(json.dumps(result, indent=2) if fmt == "json" else presentation.matrix_text(result))
    if presentation.exit_code(result):      # a red cell, or nothing verified at all
        sys.exit(int(ExitStatus.CHECKS_FAILED))


def report_options(fn):
    """--report KIND --out FILE --format: the same three options on every command that verifies."""
    fn = click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")(fn)
    fn = click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
                      help="Report file.")(fn)
    fn = click.option("--report", type=click.Choice(["json", "junit", "html"]),
                      callback=report_kind_opt, help="Also write a report.")(fn)
    return fn


def only_one_target(sandbox_name: str | None, uri: str | None) -> None:
    """A sandbox has its own libvirtd: a URI beside it would put the lab's networks on another
    libvirtd (the machine's own) while the lab's record says "sandbox"."""
    if sandbox_name is not None and uri is not None:
        raise click.UsageError(f"--sandbox and --uri exclude each other: sandbox "
                               f"{sandbox_name}'s labs live on its own libvirtd")


def target_options(fn):
    @functools.wraps(fn)
    def one_target(*args, **kwargs):
        only_one_target(kwargs.get("sandbox_name"), kwargs.get("uri"))
        return fn(*args, **kwargs)
    one_target = click.option("--uri", help="libvirt URI (default qemu:///system, or the "
                                            "sandbox's); not with --sandbox.")(one_target)
    return click.option("--sandbox", "sandbox_name", callback=sandbox_name_opt,
                        help="Target this vnet sandbox.")(one_target)


def explicit(value, name: str):
    """The option's value when given on the command line, else None (its default then means
    "whatever the lab's record says"): `--backend` stays accepted, and is no longer needed."""
    ctx = click.get_current_context()
    return value if ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT \
        else None
