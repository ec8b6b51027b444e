"""`vnet impair`: change the impairment of one NIC of a running lab, or remove it. Parse, call
the lab's driver (Driver.set_impairment), print, exit. Registered by provisioner/cli/__init__.py."""
from __future__ import annotations

import click

from .common import handle_errors, lab_name_arg, target_options
from ..lab.model import check_name


@click.command("impair")
@click.argument("lab_name", metavar="LAB", callback=lab_name_arg)
@click.argument("vm")
@click.argument("nic", type=int)
@click.option("--delay-ms", type=float, help="Delay added to the link (1 to 5000 ms).")
@click.option("--jitter-ms", type=float, help="The delay varies by up to +/- this (0 to 1000 ms; "
              "needs --delay-ms at least as large).")
@click.option("--loss-pct", type=float, help="Packets lost (1 to 50 %).")
@click.option("--rate-mbit", type=float, help="Rate limit (0.5 to 1000 Mbit/s).")
@click.option("--clear", is_flag=True, help="Remove the NIC's impairment.")
@target_options
@handle_errors
def impair_cmd(lab_name, vm, nic, delay_ms, jitter_ms, loss_pct, rate_mbit, clear, sandbox_name,
               uri):
    """Set the impairment of NIC number NIC (0 is the VM's first NIC in the lab file) of VM in
    the running lab LAB, replacing what it had; or remove it with --clear. The lab's record
    takes the new declaration, so the next `vnet verify` measures it (the impairment cell).

    \b
    Examples:
      vnet impair demo web1 0 --delay-ms 80 --jitter-ms 20 --loss-pct 5 --rate-mbit 10 --sandbox default
      vnet impair demo web1 0 --clear --sandbox default
    """
    from .. import ops
    from ..errors import LabFileError
    from ..lab import impair as impairs

    check_name(vm, "VM")
    values = {"delay_ms": delay_ms, "jitter_ms": jitter_ms, "loss_pct": loss_pct,
              "rate_mbit": rate_mbit}
    given = {k: v for k, v in values.items() if v is not None}
    if clear == bool(given):
        raise LabFileError("impair", "give --clear, or at least one of --delay-ms, "
                           "--jitter-ms, --loss-pct, --rate-mbit (not both)")
    impair = None if clear else impairs.build(given, f"vms.{vm}.nics[{nic}].impair")
    done = ops.labs.find(lab_name, sandbox_name, uri).set_impairment(lab_name, vm, nic, impair)
    click.echo(f"lab {lab_name}: {vm} NIC {nic}: applied {done['summary']}")


COMMANDS = [impair_cmd]
