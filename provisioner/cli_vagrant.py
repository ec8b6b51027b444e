"""`vnet image box` and the Vagrant side of `vnet verify --vagrant` (see provisioner/vagrant.py)."""
from __future__ import annotations

import shlex
from pathlib import Path

import click

from .cli import handle_errors
from .cli_host import image


@image.command("box")
@click.option("--provider", type=click.Choice(["libvirt", "virtualbox"]), default="libvirt",
              show_default=True, help="Which Vagrant provider the box is for.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Directory for the .box file (default: vnet's cache, boxes/).")
@handle_errors
def image_box(provider: str, out: Path | None):
    """Package the tiny image as a local Vagrant box (no download needed for the demos).

    \b
    The box boots the tiny image's kernel directly and accepts only its own, freshly generated
    SSH key (never Vagrant's shared insecure key). The virtualbox box boots from its own ISO
    (box.ovf, a VMDK, boot.iso; see vagrant/README.md).
    \b
    Examples:
      vnet image box
      vnet image box --out build/ && vagrant box add --name vnet/tiny build/vnet-tiny-*-libvirt.box
      vnet image box --provider virtualbox --out build/
    """
    from . import images, lifecycle, vagrantbox

    box = vagrantbox.build(provider, out or images.cache_dir() / "boxes",
                           progress=lifecycle.progress_printer())
    for note in box.notes:
        click.echo(f"vnet: note: {note}", err=True)
    click.echo(str(box.path))
    click.echo(f"add it with: {shlex.join(box.add_argv)}", err=True)
