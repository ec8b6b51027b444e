"""`vnet sandbox ...` and `vnet image ...`: the machine side of vnet (the isolated lab host and
the guest images)."""
from __future__ import annotations

import json
import sys

import click

from .common import handle_errors
from ..errors import ExitStatus


# --- sandbox ----------------------------------------------------------------------------------

@click.group()
def sandbox():
    """An isolated lab host on this machine: a network namespace running a private libvirtd,
    and an offline "Internet" namespace (203.0.113.0/24, LAN 198.51.100.0/24). The root
    namespace gets no bridge, firewall rule or daemon.

    \b
    Examples:
      vnet sandbox up
      vnet sandbox exec default -- virsh list --all
      vnet sandbox down
    """


@sandbox.command("up")
@click.argument("name", default="default")
@handle_errors
def sandbox_up(name):
    """Create sandbox NAME (idempotent)."""
    from ..drivers.libvirt import lifecycle
    from ..host import sandbox as sb

    box = sb.up(name, progress=lifecycle.progress_printer())
    click.echo(f"sandbox {box.name} is up: {box.uri}")


@sandbox.command("down")
@click.argument("name", default="default")
@handle_errors
def sandbox_down(name):
    """Remove sandbox NAME and everything in it (its labs included)."""
    from ..drivers.libvirt import lifecycle
    from ..host import sandbox as sb

    sb.down(name, progress=lifecycle.progress_printer())
    click.echo(f"sandbox {name} is down")


@sandbox.command("status")
@click.argument("name", default="default")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@handle_errors
def sandbox_status(name, fmt):
    """Show whether sandbox NAME is up, and its addresses."""
    from ..host import sandbox as sb

    data = sb.status(name)
    if fmt == "json":
        click.echo(json.dumps(data, indent=2))
    else:
        for key, value in data.items():
            click.echo(f"{key}: {value}")
    if not data.get("up"):
        sys.exit(int(ExitStatus.ENVIRONMENT))


@sandbox.command("exec", context_settings={"ignore_unknown_options": True})
@click.argument("name")
@click.argument("argv", nargs=-1, required=True, type=click.UNPROCESSED)
@handle_errors
def sandbox_exec(name, argv):
    """Run a command on the sandbox host (its network namespace, LIBVIRT_DEFAULT_URI set).

    \b
    Examples:
      vnet sandbox exec default -- virsh net-list --all
      vnet sandbox exec default -- ip addr
    """
    import os

    from ..host import sandbox as sb

    full = sb.exec_argv(sb.load(name), list(argv))
    os.execvp(full[0], full)


# --- images -----------------------------------------------------------------------------------

@click.group()
def image():
    """Guest images: the tiny image (kernel + busybox + dropbear + Python) built offline from
    Debian packages and cached by the hash of its inputs.

    \b
    Examples:
      vnet image build
      vnet image list
    """


@image.command("build")
@click.argument("name", default="tiny", type=click.Choice(["tiny"]))
@click.option("--force", is_flag=True, help="Rebuild even when cached.")
@handle_errors
def image_build(name, force):
    """Build (or reuse) an image."""
    from ..guest import images
    from ..drivers.libvirt import lifecycle

    built = images.build_tiny(progress=lifecycle.progress_printer(), force=force)
    click.echo(f"{built.name} {built.digest}: {built.kernel.parent}")


@image.command("list")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@handle_errors
def image_list(fmt):
    """List cached images."""
    from ..guest import images
    from ..verify.report import table

    items = images.list_cached()
    if fmt == "json":
        click.echo(json.dumps(items, indent=2, default=str))
    else:
        click.echo(table(["name", "digest", "size_mib", "path"],
                         [[i["name"], i["digest"], i["size_mib"], i["path"]] for i in items]))


COMMANDS = (sandbox, image)
