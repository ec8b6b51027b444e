"""`vnet` command line. This package builds the `main` group and adds each command module's
commands; the command modules never import `main` (parse, call the library, print, exit)."""
from __future__ import annotations

import click

from .. import __version__
from . import capture, demo, host, impair, labs, ops, report, vagrant
from .common import GuardedGroup


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


for _module in (labs, host, ops, report, demo, impair, capture):
    for _command in _module.COMMANDS:
        main.add_command(_command)
host.image.add_command(vagrant.image_box)
