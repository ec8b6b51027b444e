"""`vnet capture`: parse, call provisioner.ops.capture, print, exit. Registered on the main group
by provisioner/cli/__init__.py."""
from __future__ import annotations

import json
import sys

import click

from .common import handle_errors, lab_name_arg, target_options


@click.command("capture")
@click.argument("lab_name", callback=lab_name_arg)
@click.argument("spec", metavar="VM[:NIC]")
@click.option("-w", "write", metavar="FILE.pcap",
              help="Write the pcap here; '-' streams it to stdout (default: the lab's "
                   "directory, capture-VM-NIC.pcap).")
@click.option("--filter", "bpf", default="", metavar="BPF",
              help="A pcap-filter(7) expression, e.g. 'udp port 4789'.")
@click.option("--count", type=click.IntRange(min=1), help="Stop after this many frames.")
@click.option("--duration", type=click.FloatRange(min=0, min_open=True), metavar="SECONDS",
              help="Stop after this many seconds.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              help="json: also print a summary (frames, bytes, start latency) on stdout; not with -w -.")
@target_options
@click.option("--backend", type=click.Choice(["libvirt", "virtualbox"]), default=None,
              help="The lab's backend (default: the one its record names).")
@handle_errors
def capture_cmd(lab_name, spec, write, bpf, count, duration, fmt, uri, sandbox_name, backend):
    """Capture one NIC of a running lab on the host side (its tap; in a sandbox, inside the
    sandbox host's namespace) and write a pcap, or stream it for Wireshark. NIC is the index of
    the VM's NIC in the lab file (default 0). Runs until --count, --duration or Ctrl-C.

    A NIC on a nat network (libvirt: QEMU user networking) has no host-side interface and is
    refused with what to use instead; on VirtualBox the hypervisor writes the trace itself
    (controlvm nictraceN), without --filter or --count.

    \b
    Examples:
      vnet capture two a:0 --sandbox default -w a.pcap --count 20
      vnet capture two a --sandbox default --filter 'tcp port 7' -w - | wireshark -k -i -
    """
    from .. import ops
    from ..host import capture as hostcapture
    from ..ops import capture

    if write == "-" and fmt == "json":
        raise click.UsageError("--format json prints to stdout, where -w - streams the pcap")
    if write == "-" and _terminal(sys.stdout):
        raise click.UsageError("-w - streams binary pcap: pipe it, e.g. | wireshark -k -i -")
    vm, nic = capture.parse_spec(spec)
    driver = ops.labs.find(lab_name, sandbox_name, uri, backend)
    driver.link_nic(lab_name, vm, nic)        # a wrong VM or NIC: exit 2, nothing started
    hostcapture.check_filter(bpf)
    pcap = write if write == "-" else str(
        hostcapture.pcap_path(write) if write else capture.default_pcap(driver, lab_name, vm, nic))
    req = capture.Request(lab_name, vm, nic, pcap, bpf, count, duration)
    summary = capture.run(driver, req, lambda m: click.echo(f"vnet: {m}", err=True),
                          stdout=sys.stdout.fileno() if pcap == "-" else None)
    if fmt == "json":
        click.echo(json.dumps(summary, indent=2))


def _terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


COMMANDS = (capture_cmd,)
