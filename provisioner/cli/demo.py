"""`vnet demo`: the Vagrant demos in one command (provisioner/ops/demo.py). Registered on the main
group by provisioner/cli/__init__.py."""
from __future__ import annotations

import json

import click

from ..lab import modes
from .common import emit_verification, handle_errors, report_options, sandbox_name_opt


@click.command("demo")
# the demos are vagrant/<mode>/, one per mode (ops/demo.py checks the directory is there)
@click.argument("mode", required=False, type=click.Choice(modes.names()), metavar="MODE")
@click.option("--sandbox", "sandbox_name", default="default", show_default=True,
              callback=sandbox_name_opt, help="Run in this sandbox (made if it is not up, and "
                                              "then removed again unless --keep).")
@click.option("--keep", is_flag=True, help="Leave the machines up (and the sandbox, if made).")
@click.option("--destroy", is_flag=True, help="Remove a demo kept earlier with --keep.")
@click.option("--list", "list_only", is_flag=True, help="Show the five demos and where any is kept.")
@report_options
@handle_errors
def demo_cmd(mode, sandbox_name, keep, destroy, list_only, report, out, fmt):
    """From nothing to a verified Vagrant demo (vagrant/MODE): the sandbox, the tiny box added
    under vnet's own VAGRANT_HOME, `vagrant up --provider libvirt` on the sandbox host, `vnet
    verify --vagrant`, then everything removed again unless --keep.

    Exit code 0 when every cell is as the mode promises, 1 for a red cell, 2 for bad input,
    3 when a step fails (what was made is removed).

    \b
    Examples:
      vnet demo --list
      vnet demo natnetwork
      vnet demo internal --sandbox demo --keep && vnet demo internal --sandbox demo --destroy
      vnet demo hostonly --report html --out hostonly.html
    """
    from ..ops import demo
    from ..progress import progress_printer

    if list_only:
        demos = demo.list_demos()
        if fmt == "json":
            click.echo(json.dumps(demos, indent=2))
            return
        from ..verify.report import table

        click.echo(table(["demo", "directory", "what it shows", "kept in sandbox"],
                         [[d["demo"], d["directory"], d["description"],
                           ", ".join(d["kept_in"]) or "-"] for d in demos]))
        return
    if mode is None:
        raise click.UsageError(f"give MODE ({', '.join(demo.names())}), or --list")
    demo.check_mode(mode)
    if keep and destroy:
        raise click.UsageError("--keep and --destroy exclude each other")
    if report and out is None:
        raise click.UsageError("--report needs --out FILE")
    say = progress_printer()
    if destroy:
        demo.teardown(mode, sandbox_name, say)
        click.echo(f"demo {mode} removed from sandbox {sandbox_name}")
        return
    result = demo.run(mode, sandbox_name, keep, say)
    emit_verification(result, report, out, fmt)


COMMANDS = (demo_cmd,)
