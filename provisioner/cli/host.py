"""`vnet sandbox ...` and `vnet image ...`: the machine side of vnet (the isolated lab host and
the guest images)."""
from __future__ import annotations

import json
import sys

import click

from .common import handle_errors
from ..guest.cloudbuild import RECIPES
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
@click.option("--hosts", "hosts", type=click.IntRange(1, 8), default=1, show_default=True,
              help="hypervisor hosts hv1..hvN, each a namespace with its own libvirtd")
@handle_errors
def sandbox_up(name, hosts):
    """Create sandbox NAME (default: default), or finish one half up; running it again changes
    nothing. A sandbox is this machine's isolated lab host: network namespaces with a private
    libvirtd and dnsmasq, a LAN bridge, and an offline "Internet" on documentation ranges
    (203.0.113.0/24, 198.51.100.0/24); nothing reaches the machine's real network.

    \b
    Examples:
      vnet sandbox up
      vnet sandbox up lab2 --hosts 2     # hv1 and hv2, hv2 reached over qemu+ssh://
      vnet create --mode natnetwork --sandbox lab2
    """
    from ..progress import progress_printer
    from ..host import sandbox as sb

    box = sb.up(name, progress=progress_printer(), hosts=hosts)
    click.echo(f"sandbox {box.name} is up: {box.uri}")


@sandbox.command("down")
@click.argument("name", default="default")
@handle_errors
def sandbox_down(name):
    """Remove sandbox NAME and everything in it (its labs included): its guests and daemons
    (ended by PID), its namespaces and state. Only what carries vnet's own tag is removed.

    \b
    Examples:
      vnet sandbox down
      vnet sandbox down lab2
    """
    from ..progress import progress_printer
    from ..host import sandbox as sb

    sb.down(name, progress=progress_printer())
    click.echo(f"sandbox {name} is down")


@sandbox.command("status")
@click.argument("name", default="default")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@handle_errors
def sandbox_status(name, fmt):
    """Show whether sandbox NAME is up, and its addresses (exit 3 when it is not up).

    \b
    Examples:
      vnet sandbox status
      vnet sandbox status lab2 --format json
    """
    from ..host import sandbox as sb

    data = sb.status(name)
    if fmt == "json":
        click.echo(json.dumps(data, indent=2))
    else:
        for key, value in data.items():     # nested values as JSON, never Python's repr
            click.echo(f"{key}: {value if isinstance(value, (str, int, float)) else json.dumps(value)}")
    if not data.get("up"):
        sys.exit(int(ExitStatus.ENVIRONMENT))


@sandbox.command("list")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@handle_errors
def sandbox_list(fmt):
    """List the sandboxes this machine has: up, half up, or gone but with something left
    (namespaces, lab state); each with the first of its problems and the command that fixes it.

    \b
    Examples:
      vnet sandbox list
      vnet sandbox list --format json
    """
    from ..host import sandbox as sb
    from ..verify.report import table

    rows = [sb.status(name) for name in sb.list_names()]
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(table(["name", "up", "problem"],
                     [[r["name"], "yes" if r["up"] else "no", (r["problems"] or [""])[0]]
                      for r in rows]))


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
    Debian packages and cached by the hash of its inputs; a Debian 12 cloud image built the same
    way (`--cloud debian12`); the cache listed with sizes and pruned.

    \b
    Examples:
      vnet image build
      vnet image build --cloud debian12
      vnet image list
      vnet image prune --keep 1 --dry-run
    """


@image.command("build")
@click.argument("name", default="tiny", type=click.Choice(["tiny"]))
@click.option("--cloud", type=click.Choice(sorted(RECIPES)),
              help="Build a cloud-init qcow2 from Debian packages instead (debian12); prints "
                   "the file:// URL and sha256 for a lab file's images: entry.")
@click.option("--force", is_flag=True, help="Rebuild even when cached.")
@handle_errors
def image_build(name, cloud, force):
    """Build (or reuse) an image. NAME is the only built image, `tiny` (the default): a kernel,
    busybox, dropbear and Python from Debian 12 packages, cached by the hash of its inputs, so
    a second build returns at once.

    \b
    Examples:
      vnet image build
      vnet image build --force              # rebuild although cached
      vnet image build --cloud debian12     # a cloud-init qcow2, for a lab file's images:
    """
    from ..guest import images
    from ..progress import progress_printer

    if cloud is not None:
        from ..guest import cloudbuild

        built = cloudbuild.build(cloud, progress=progress_printer(), force=force)
        click.echo(f"{built.name} {built.digest}\n"
                   f"images:\n  {built.name}:\n    url: {built.url}\n"
                   f"    sha256: {built.sha256}")
        return
    built = images.build_tiny(progress=progress_printer(), force=force)
    click.echo(f"{built.name} {built.digest}: {built.kernel.parent}")


@image.command("list")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@handle_errors
def image_list(fmt):
    """List cached images and their sizes on disk: built images, cloud downloads, Vagrant boxes,
    and the Debian packages and boot loaders they are built from.

    \b
    Examples:
      vnet image list
      vnet image list --format json
      vnet image prune --keep 1 --dry-run   # what pruning would remove
    """
    from ..guest import imagecache
    from ..verify.report import table

    items = imagecache.entries()
    total = sum(e.size for e in items)
    if fmt == "json":
        click.echo(json.dumps({"images": [{"name": e.name, "kind": e.kind, "digest": e.digest,
                                           "size_mib": round(e.size / 2**20, 1),
                                           "built_at": e.built_at, "sha256": e.sha256,
                                           "path": str(e.path)} for e in items],
                               "total_mib": round(total / 2**20, 1)}, indent=2))
        return
    click.echo(table(["name", "digest", "size_mib", "built_at", "path"],
                     [[e.name, e.digest, f"{e.size / 2**20:.1f}", e.built_at, str(e.path)]
                      for e in items]))
    click.echo(f"total: {total / 2**20:.1f} MiB in {len(items)} entries")
    _former_caches()


def _former_caches() -> None:
    from ..host.paths import cache_dir, former_caches

    for path in former_caches():
        click.echo(f"note: {path} is an older vnet's cache, which nothing reads now (root's "
                   f"cache is {cache_dir()}): move its images/ there, or remove it")


@image.command("prune")
@click.option("--keep", type=click.IntRange(min=0), default=1, show_default=True,
              help="How many of the newest images of each name to keep besides those in use.")
@click.option("--dry-run", is_flag=True, help="Say what would go; remove nothing.")
@handle_errors
def image_prune(keep, dry_run):
    """Remove cached images that no lab uses, keeping the KEEP newest of each name.

    An image is in use when a lab record (`vnet list`) names it or one of its overlays is
    backed by it; such an image is never removed. Vagrant boxes of old tiny images go too
    (`vagrant box add` keeps its own copy), and so do older downloads of the Debian packages
    and boot loaders images are built from (the newest of each stays). Only entries carrying
    vnet's own manifest (or a downloaded cloud image named by its sha256, a box by its tiny
    image's digest, a package by apt's file name and ar header, a loader folder by its two
    files) under the cache directory are touched.

    \b
    Examples:
      vnet image prune --dry-run
      vnet image prune --keep 0
    """
    from ..guest import imagecache

    gone = imagecache.prune(keep, dry_run=dry_run, progress=click.echo)
    freed = sum(e.size for e in gone) / 2**20
    click.echo(f"{'would free' if dry_run else 'freed'} {freed:.1f} MiB "
               f"({len(gone)} entries)")
    _former_caches()


COMMANDS = (sandbox, image)
