"""What of a sandbox runs, by what proves it vnet's, and how `sandbox down` ends it: the
processes of its pid files whose command line names its state dir, and libvirt's children
(QEMU, dnsmasq) in its namespaces; those namespaces only where they carry this state root's
owner tag or none exists yet (netns.untagged_namespaces: an untagged one is not provably
vnet's, so nothing in it is ended)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from . import ovs, procs, sandbox_hosts
from .netns import pids_in_netns, untagged_namespaces

PID_FILES = ("libvirtd.pid", "libvirtd.spawn.pid", "http.pid", *ovs.PID_FILES)   # state dir's
LIBVIRT_CHILDREN = ("libvirtd", "dnsmasq", "passt", "libvirt_leaseshelper")
STOP_TIMEOUT = 5.0


def namespaces(sb, all_names: bool = False) -> list[str]:
    """The namespaces of the sandbox, its extra hypervisor hosts' too; unless `all_names`,
    without those that exist untagged."""
    names = [sb.host_netns, sb.inet_netns, *sandbox_hosts.extra_netns(sb)]
    return names if all_names else [ns for ns in names if ns not in untagged_namespaces(names)]


def pid_paths(sb) -> list[Path]:
    return [sb.state_dir / name for name in PID_FILES] + sandbox_hosts.pid_files(sb)


def our_processes(sb, labs: Path, owned: list[str]) -> dict[int, str]:
    """pid -> label for everything `down` may stop (labs: the state dir of the sandbox's labs,
    which names the lab proxies whose record is lost; owned: namespaces(sb), looked up once)."""
    state = str(sb.state_dir)
    victims: dict[int, str] = {}
    for path in pid_paths(sb):
        if pid := procs.running(path, state):
            victims[pid] = path.name.split(".")[0]
    for pid, argv in pids_in_netns(owned).items():
        prog = os.path.basename(argv[0])
        if prog.startswith("qemu-system-") or prog in LIBVIRT_CHILDREN \
                or procs.mentions(argv, state) or procs.mentions(argv, str(labs)):
            victims.setdefault(pid, prog)
    return victims


def stop_all(sb, labs: Path, owned: list[str], progress: Callable[[str], None]) -> None:
    """End them all; a second and third look catch a child started while libvirtd stopped.
    Each is recognised once more after its pidfd is held (procs.terminate's `still`)."""
    for _ in range(3):
        if not (victims := our_processes(sb, labs, owned)):
            return
        progress("stopping " + ", ".join(f"{what} ({pid})"
                                        for pid, what in sorted(victims.items())))
        again: dict[int, str] | None = None      # one rescan, once every pidfd is held

        def still(pid: int) -> bool:
            nonlocal again
            if again is None:
                again = our_processes(sb, labs, owned)
            return pid in again
        procs.terminate(list(victims), STOP_TIMEOUT, still=still)
