"""A sandbox's extra hypervisor hosts (`vnet sandbox up S --hosts N`): hv1 is the sandbox's
host namespace as before; hv2..hvN are namespaces vnet-S-hvI on the sandbox LAN, each with its
own private libvirtd (sandbox_setup.start_libvirtd, run for that host's state directory).

    vnet-S-host (hv1)  bridge lan0 198.51.100.2 --+-- lan-out 198.51.100.1  vnet-S-inet
                                                  +-- hvI-lan ==veth== lan0 198.51.100.(I+1)  vnet-S-hvI

hv2 also runs an SSH server (dropbear) and plays a remote host: its forced command
(sandbox_files/ssh_forced_command.py) relays a libvirt session to its libvirtd's socket, so
`qemu+ssh://` is exercised for real (ssh_uri), and runs only the host-side commands vnet sends
to a remote host (host/hostaccess.py), logging each. vnet generates the client key and the
host key for the sandbox; the ssh client runs in hv1's namespace (the "management host")
through a wrapper named by libvirt's `command=` URI parameter
(https://libvirt.org/uri.html#ssh-transport).
"""
from __future__ import annotations

import os
import re
import sys
from dataclasses import replace
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Callable

from . import procs, runner
from ..errors import VnetError
from .netns import NETNS_DIR, add_owned_netns, netns_argv, run_in_netns
from . import sandbox_setup as setup

MAX_HOSTS = 8
SSH_HOST = 2                    # the host that runs the SSH server
HOST_DIR_RE = re.compile(r"hv([2-9])")
SSH_PID = "dropbear.pid"
RELAY = setup.FILES / "libvirt_relay.py"
FORCED_COMMAND = setup.FILES / "ssh_forced_command.py"
REMOTE_ROOT = "remote-root"     # a host's hostaccess.REMOTE_DIR (the launchers mount it there)
SSH_LAUNCHER = setup.FILES / "sshd-launcher.sh"


def host_name(index: int) -> str:
    return f"hv{index}"


def host_view(sb, index: int):
    """The Sandbox as seen from host `index`: its namespace, state directory and libvirt URI
    (index 1 is the sandbox itself), so sandbox_setup's steps run unchanged for each host."""
    if index == 1:
        return sb
    d = sb.state_dir / host_name(index)
    return replace(sb, state_dir=d, host_netns=f"vnet-{sb.name}-{host_name(index)}",
                   uri=f"qemu:///system?socket={d}/run/libvirt-sock")


def underlay_ip(sb, index: int) -> IPv4Address:
    """hv1 keeps the sandbox host's LAN address; hvI takes the I-th after the LAN gateway."""
    return IPv4Network(sb.lan_subnet).network_address + 1 + index


def lab_hosts(sb) -> tuple[tuple[str, str, IPv4Address], ...]:
    """(name, uri, underlay address) of hv1..hvMAX: fixed by the sandbox's name, so a lab file
    resolves without the sandbox up; preflight finds a host that is not there. hv2 is named by
    its qemu+ssh:// URI, so a lab on it takes the remote path (SSH, the image upload)."""
    return tuple((host_name(i), ssh_uri(sb, i) if i == SSH_HOST else host_view(sb, i).uri,
                  underlay_ip(sb, i)) for i in range(1, MAX_HOSTS + 1))


def present(sb) -> list[int]:
    """Indexes >= 2 of the extra hosts that left a trace: a state directory or a namespace."""
    found: set[int] = set()
    if sb.state_dir.is_dir():
        found.update(int(m.group(1)) for p in sb.state_dir.iterdir()
                     if (m := HOST_DIR_RE.fullmatch(p.name)))
    if os.path.isdir(NETNS_DIR):
        for ns in os.listdir(NETNS_DIR):
            if m := re.fullmatch(rf"vnet-{re.escape(sb.name)}-hv([2-9])", ns):
                found.add(int(m.group(1)))
    return sorted(found)


def extra_netns(sb) -> list[str]:
    return [host_view(sb, i).host_netns for i in present(sb)]


def pid_files(sb) -> list[Path]:
    """The pid files `down` reads in the extra hosts' directories."""
    return [host_view(sb, i).state_dir / name for i in present(sb)
            for name in ("libvirtd.pid", "libvirtd.spawn.pid", SSH_PID)]


def check_count(count: object) -> int:
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= MAX_HOSTS:
        raise VnetError(f"--hosts: {count!r} is not a number of hosts from 1 to {MAX_HOSTS}")
    return count


# ------------------------------------------------------------------------------ building

def create(sb, count: int, progress: Callable[[str], None]) -> None:
    """Hosts hv2..hvCOUNT beside the sandbox's own host (which `up` built first)."""
    for i in range(2, count + 1):
        view = host_view(sb, i)
        progress(f"creating hypervisor host {host_name(i)} ({view.host_netns}, "
                 f"{underlay_ip(sb, i)})")
        setup.write_state(view)
        if i == SSH_HOST:           # it plays a remote host: its own REMOTE_DIR (launchers)
            (view.state_dir / REMOTE_ROOT).mkdir(mode=0o755, exist_ok=True)
        _create_network(sb, i)
        setup.start_libvirtd(view, progress)
    if count >= SSH_HOST:
        start_ssh(sb, SSH_HOST, progress)


def _create_network(sb, index: int) -> None:
    ns, port = host_view(sb, index).host_netns, f"{host_name(index)}-lan"
    add_owned_netns(ns)
    for where, *args in (
            [sb.host_netns, "link", "add", port, "type", "veth", "peer", "name", "lan0",
             "netns", ns],
            [sb.host_netns, "link", "set", port, "master", sb.lan_bridge],
            [sb.host_netns, "link", "set", port, "up"],
            [ns, "addr", "add", f"{underlay_ip(sb, index)}/{IPv4Network(sb.lan_subnet).prefixlen}",
             "dev", "lan0"],
            [ns, "link", "set", "lo", "up"],
            [ns, "link", "set", "lan0", "up"],
            [ns, "route", "add", "default", "via", sb.lan_gateway]):
        runner.run(["ip", "-n", where, *args])
    run_in_netns(ns, setup._write_sysctls, {"net.ipv4.ip_forward": "1"})


# ------------------------------------------------------------------------ the SSH path

def ssh_dir(sb) -> Path:
    return sb.state_dir / "ssh"


def ssh_uri(sb, index: int = SSH_HOST) -> str:
    """libvirt over SSH to host `index`: vnet's key, vnet's known_hosts (through the wrapper),
    and the remote socket named for clarity (the server's forced command relays to it)."""
    view, keys = host_view(sb, index), ssh_dir(sb)
    return (f"qemu+ssh://root@{underlay_ip(sb, index)}/system?keyfile={keys}/id_ed25519"
            f"&command={keys}/ssh&socket={view.state_dir}/run/libvirt-sock")


def start_ssh(sb, index: int, progress: Callable[[str], None]) -> None:
    view, keys = host_view(sb, index), ssh_dir(sb)
    keys.mkdir(mode=0o700, exist_ok=True)
    home = view.state_dir / "ssh-home" / ".ssh"
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    runner.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"vnet-{sb.name}",
                "-f", str(keys / "id_ed25519")])
    host_key = view.state_dir / "ssh_host_ed25519_key"
    out = runner.run(["dropbearkey", "-t", "ed25519", "-f", str(host_key)]).stdout
    public = next(ln for ln in out.splitlines() if ln.startswith("ssh-ed25519 "))
    (keys / "known_hosts").write_text(f"{underlay_ip(sb, index)} {public}\n")
    (home / "authorized_keys").write_text((keys / "id_ed25519.pub").read_text())
    (home / "authorized_keys").chmod(0o600)
    wrapper = keys / "ssh"
    # libvirt runs `command` as its ssh; it reaches the host from hv1's namespace and trusts
    # only the host key vnet made (no prompt, nothing written to root's ~/.ssh).
    wrapper.write_text("#!/bin/sh\n" + " ".join(netns_argv(sb.host_netns, [
        "ssh", "-F", "none", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
        "-o", f"UserKnownHostsFile={keys}/known_hosts", "-o", "GlobalKnownHostsFile=/dev/null",
    ])) + ' "$@"\n')
    wrapper.chmod(0o700)
    relay = (f"{sys.executable} -I {FORCED_COMMAND} {view.state_dir} "
             f"{view.state_dir}/run/libvirt-sock {RELAY}")
    argv = netns_argv(view.host_netns, ["unshare", "--mount", "--propagation", "private", "sh",
                                        str(SSH_LAUNCHER), str(view.state_dir), relay])
    log = view.state_dir / "dropbear.log"
    proc = procs.spawn(argv, view.state_dir / SSH_PID, str(view.state_dir), log_path=str(log))
    progress(f"starting an SSH server on {host_name(index)} ({underlay_ip(sb, index)}:22, "
             f"pid {proc.pid})")
    setup._wait_until(lambda: run_in_netns(sb.host_netns, setup._tcp_answers,
                                           str(underlay_ip(sb, index)), 22),
                      10.0, "the SSH server", proc, log)
