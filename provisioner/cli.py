"""`vnet` command line: parse, call, and map VnetError to one message and an exit code."""
from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import click

from . import __version__, modes, nics
from .errors import ExitStatus, VnetError
from .model import Backend

BACKENDS = [b.value for b in Backend]


def handle_errors(fn):
    """Library code raises; this is the one place that prints and exits."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except VnetError as exc:
            click.echo(f"vnet: error: {exc.message}", err=True)
            if exc.hint:
                click.echo(f"vnet: hint: {exc.hint}", err=True)
            sys.exit(int(exc.status))
        except KeyboardInterrupt:
            click.echo("vnet: interrupted; `vnet destroy LAB` (or `vnet gc`) removes what was "
                       "created", err=True)
            sys.exit(int(ExitStatus.INTERRUPTED))
    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"],
                                              "max_content_width": 100})
@click.version_option(__version__, prog_name="vnet")
def main():
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
@click.option("--sandbox", "sandbox_name", help="Create inside this vnet sandbox.")
@click.option("--uri", help="libvirt URI (default qemu:///system, or the sandbox's).")
@click.option("--no-verify", is_flag=True, help="Stop once the VMs have their addresses.")
@click.option("--report", type=click.Choice(["json", "junit"]), help="Also write a report.")
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

    defaults = _defaults(sandbox_name, bridge)
    data = default_lab(mode, nic_model, vms, name, bridge, pf=pf)
    lab = labfile.resolve(data, defaults, source=f"vnet create --mode {mode}")
    if dry_run:
        print_plan(plan_for(lab, Backend(backend)))
        return
    from .lifecycle import up_and_verify

    up_and_verify(lab, Backend(backend), sandbox_name, uri, verify=not no_verify,
                  report=report, out=out, fmt=fmt)


def _defaults(sandbox_name: str | None, bridge: str | None):
    from .labfile import Defaults

    if sandbox_name is None:
        return Defaults(bridge=bridge or "br0")
    from ipaddress import IPv4Address, IPv4Network

    from . import sandbox

    sb = sandbox.load(sandbox_name)
    return Defaults(bridge=bridge or sb.lan_bridge, bridged_subnet=IPv4Network(sb.lan_subnet),
                    bridged_host_ip=IPv4Address(sb.host_lan_ip),
                    bridged_router=IPv4Address(sb.lan_gateway))
