"""The lab commands: modes, render, create, up, verify, status, destroy, list, gc."""
from __future__ import annotations

import json
from pathlib import Path

import click

from ..errors import LabFileError
from ..lab import modes, nics
from ..lab.model import Backend
from ..lab.tunnels import TYPES as TUNNEL_TYPES
from .common import (BACKENDS, emit_verification, explicit, handle_errors, lab_name_arg,
                     only_one_target, report_options, require_report_out, sandbox_name_opt,
                     target_options)


# --- modes ------------------------------------------------------------------------------------

@click.command("modes")
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
    from ..verify.report import modes_json, modes_table

    click.echo(json.dumps(modes_json(Backend(backend)), indent=2) if fmt == "json"
               else modes_table(Backend(backend)))


# --- render / create --------------------------------------------------------------------------

@click.command()
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
    from ..lab import loader as labfile
    from ..ops.plans import plan_for, write_plan, print_plan

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


@click.command()
@lab_options
@click.option("--backend", type=click.Choice(BACKENDS), default="libvirt", show_default=True)
@click.option("--dry-run", is_flag=True, help="Print the plan; create nothing.")
@click.option("--sandbox", "sandbox_name", callback=sandbox_name_opt,
              help="Create inside this vnet sandbox.")
@click.option("--uri", help="libvirt URI (default qemu:///system, or the sandbox's); not with "
                            "--sandbox.")
@click.option("--no-verify", is_flag=True, help="Stop once the VMs have their addresses.")
@click.option("--tunnel", type=click.Choice(TUNNEL_TYPES),
              help="Add one tunnel of this type between the first two VMs (overlay "
                   "10.99.0.0/24) and verify it with tunnel cells.")
@report_options
@handle_errors
def create(mode, nic_model, vms, name, pf, bridge, backend, dry_run, sandbox_name, uri, no_verify,
           report, out, fmt, tunnel=None):
    """Create the default lab for a mode (N VMs on one network), boot it and verify it.

    \b
    For nat, each VM gets its own NAT with SSH and echo port forwards; natnetwork gets the
    same forwards on its shared NAT network.
    \b
    Examples:
      vnet create --mode natnetwork --dry-run
      vnet create --mode hostonly --backend virtualbox --dry-run
      vnet create --mode natnetwork --sandbox default
      vnet create --mode natnetwork --tunnel wireguard --sandbox default
    """
    only_one_target(sandbox_name, uri)
    from ..lab import loader as labfile
    from ..lab.defaults import default_lab
    from ..lab.tunnels import default_tunnel
    from ..ops.plans import plan_for, show_plan

    from ..host.sandbox import lab_defaults

    require_report_out(report, out, dry_run)
    if bridge is not None and not modes.MODES[mode].physical_lan:
        takes = [m.name for m in modes.MODES.values() if m.physical_lan]
        raise click.UsageError(f"--bridge: only --mode {'/'.join(takes)} takes a bridge, "
                               f"not {mode}")
    if pf is not None and nic_model != "sriov":
        raise click.UsageError(f"--pf: only --nic-model sriov takes a physical function, "
                               f"not {nic_model}")
    if tunnel and modes.MODES[mode].per_vm_nat:
        raise click.UsageError(f"--tunnel: under --mode {mode} each VM has a NAT of its own, "
                               "so no network joins the two ends; use another mode, or a lab "
                               "file with a router VM")
    if nic_model == "sriov" and pf is None:
        raise click.UsageError("--nic-model sriov needs --pf PF: the physical function whose "
                               "VFs the VMs get")
    defaults = lab_defaults(sandbox_name, bridge)
    data = default_lab(mode, nic_model, vms, name, bridge, pf=pf)
    if tunnel:
        data["tunnels"] = [default_tunnel(tunnel, [vm["name"] for vm in data["vms"]])]
    try:
        lab = labfile.resolve(data, defaults, source=f"vnet create --mode {mode}")
    except LabFileError as exc:      # the lab is the options': name the option, not a field
        raise LabFileError(_option_of(exc.path), exc.message.removeprefix(f"{exc.path}: "),
                           exc.hint) from None
    if dry_run:
        show_plan(plan_for(lab, Backend(backend)), fmt)
        return
    _up_and_verify(lab, backend, sandbox_name, uri, not no_verify, report, out, fmt)


def _option_of(field: str) -> str:
    """The `vnet create` option behind a field of the lab it builds ("tunnels.vxlan0.endpoints"
    is --tunnel's, "vms.vm1.nics[0].model" --nic-model's)."""
    last = field.rsplit(".", 1)[-1]
    if field.startswith("tunnels."):
        return "--tunnel"
    if field == "name" or last in ("bridge", "pf"):
        return f"--{last}"           # the lab's name, networks.net.bridge, vms.vm1.nics[0].pf
    if field.startswith("vms.") and ".nics[" in field:
        return "--nic-model"
    if field.startswith("vms"):
        return "--vms"
    return f"--mode (its lab's {field})" if field else "--mode"


def _up_and_verify(lab, backend, sandbox_name, uri, verify, report, out, fmt, wait=True):
    from .. import ops
    from ..progress import progress_printer

    say = progress_printer()
    driver, record = ops.labs.up(lab, backend, sandbox_name, uri, say, wait=wait,
                                 verify_next=verify)
    if not verify or not wait:
        if driver.status_after_up or fmt == "json":    # JSON always says what is up
            data = driver.status(lab.name)
            click.echo(json.dumps(data, indent=2) if fmt == "json" else _status_table(data))
        return
    result = ops.labs.verify(driver, lab, say, timings=record.get("timings", {}),
                             pcap_dir=_beside(out))
    emit_verification(result, report, out, fmt)


@click.command()
@click.argument("lab_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--backend", type=click.Choice(BACKENDS), default="libvirt", show_default=True)
@target_options
@click.option("--no-wait", is_flag=True, help="Return once the VMs have started.")
@click.option("--no-verify", is_flag=True, help="Stop once the VMs have their addresses.")
@click.option("--dry-run", is_flag=True, help="Print the plan; create nothing.")
@report_options
@handle_errors
def up(lab_file, backend, uri, sandbox_name, no_wait, no_verify, dry_run, report, out, fmt):
    """Create (or complete) the lab in LAB_FILE, boot it, wait for addresses and verify it.
    Running it again changes nothing.

    \b
    Examples:
      vnet up lab.yaml --sandbox default
      vnet up lab.yaml --uri qemu+ssh://root@hv1/system --no-verify
    """
    from ..lab import loader as labfile
    from ..ops.plans import plan_for, show_plan

    from ..host.sandbox import lab_defaults

    require_report_out(report, out, dry_run)
    lab = labfile.load(lab_file, lab_defaults(sandbox_name))
    if dry_run:
        show_plan(plan_for(lab, Backend(backend)), fmt)
        return
    _up_and_verify(lab, backend, sandbox_name, uri, not no_verify, report, out, fmt,
                   wait=not no_wait)


@click.command("verify")
@click.argument("lab_name", required=False, callback=lab_name_arg)
@target_options
@click.option("--vagrant", "vagrant_dir", type=click.Path(file_okay=False, exists=True,
              path_type=Path), help="Verify this Vagrant project (its vnet.yaml) instead of LAB_NAME.")
@click.option("--backend", type=click.Choice(BACKENDS), default="libvirt", show_default=True)
@report_options
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
    from .. import ops
    from ..progress import progress_printer

    require_report_out(report, out)
    if vagrant_dir is not None:
        from ..ops import vagrant

        result = vagrant.verify(vagrant_dir, sandbox_name, progress_printer())
        return emit_verification(result, report, out, fmt)
    if lab_name is None:
        raise click.UsageError("give LAB_NAME, or --vagrant DIR")
    driver = ops.labs.find(lab_name, sandbox_name, uri, explicit(backend, "backend"))
    lab = ops.labs.lab_of(driver, lab_name)
    result = ops.labs.verify(driver, lab, progress_printer(), pcap_dir=_beside(out))
    emit_verification(result, report, out, fmt)


@click.command()
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
    from .. import ops

    data = ops.labs.find(lab_name, sandbox_name, uri).status(lab_name)
    click.echo(json.dumps(data, indent=2) if fmt == "json" else _status_table(data))


def _beside(out) -> Path | None:
    """The encapsulation cells' pcaps go beside a report written to a file (else: the lab's
    state directory)."""
    return Path(out).resolve().parent if out else None


def _status_table(data: dict) -> str:
    from ..verify.report import table

    hosts = any("host" in vm for vm in data["vms"])    # a lab on several hosts
    rows = [[vm["name"], *([vm.get("host", "-")] if hosts else []), vm["state"], nic["network"],
             nic["model"], nic["mac"], ", ".join(nic["addresses"]) or "-"]
            for vm in data["vms"] for nic in vm["nics"]]
    text = f"lab {data['lab']}\n" + table(["vm", *(["host"] if hosts else []), "state", "network",
                                          "model", "mac", "addresses"], rows)
    if data.get("forwards"):       # several hosts: which host serves each forward, and how
        text += "\nport forwards\n" + table(
            ["forward", "network", "listen", "to", "host", "served by"],
            [[f["name"], f["network"], f"{f['proto']} {f['listen']}",
              f"{f['vm']}:{f['guest_port']}", f["host"], f["served_by"]]
             for f in data["forwards"]])
    return text


@click.command()
@click.argument("lab_name", callback=lab_name_arg)
@target_options
@click.option("--backend", type=click.Choice(BACKENDS), default="libvirt", show_default=True)
@handle_errors
def destroy(lab_name, uri, sandbox_name, backend):
    """Remove exactly what LAB_NAME created (VMs, networks, port forwards, state); also after a
    crash or Ctrl-C. The lab's record says which backend it is on (--backend is not needed).

    \b
    Examples:
      vnet destroy natnetwork --sandbox default
    """
    from .. import ops
    from ..progress import progress_printer

    driver = ops.labs.find(lab_name, sandbox_name, uri, explicit(backend, "backend"))
    driver.destroy(lab_name, progress_printer())
    if not driver.says_destroyed:
        click.echo(f"lab {lab_name} destroyed")


@click.command("list")
@target_options
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@handle_errors
def list_cmd(uri, sandbox_name, fmt):
    """List labs on a target (a sandbox, or a libvirt URI).

    Without --sandbox and --uri, VirtualBox's labs on this machine are listed too when
    VirtualBox is installed.

    \b
    Examples:
      vnet list --sandbox default
    """
    from .. import ops
    from ..verify.report import table

    labs = ops.labs.list_labs(sandbox_name, uri)
    if fmt == "json":
        click.echo(json.dumps(labs, indent=2))
    else:
        click.echo(table(["lab", "domains", "networks", "state"],
                         [[l["lab"], l["domains"], l["networks"], l["state"]] for l in labs]))


@click.command()
@target_options
@handle_errors
def gc(uri, sandbox_name):
    """Remove libvirt objects tagged by vnet whose lab state is gone. Untagged objects are never
    touched. Without --sandbox and --uri, VirtualBox's VMs of this state root are covered too
    when VirtualBox is installed. Of a sandbox that is down (`vnet sandbox list` names one that
    left lab state), it removes the lab state left behind.

    \b
    Examples:
      vnet gc --sandbox default
    """
    from .. import ops
    from ..progress import progress_printer

    removed = ops.labs.gc(progress_printer(), sandbox_name, uri)
    click.echo(f"removed {len(removed)} object(s)")


COMMANDS = (modes_cmd, render, create, up, verify_cmd, status, destroy, list_cmd, gc)
