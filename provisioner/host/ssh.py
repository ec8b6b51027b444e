"""The SSH control masters Ansible keeps per lab: where their sockets live (a short directory
under the state root, since unix socket paths are short) and how they are ended, so no ssh
process outlives a verification or a lab."""
from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

from . import runner
from .paths import state_root
from .state import Target


def control_dir(target: Target, lab: str) -> Path:
    """A short per-lab directory for SSH control sockets (unix socket paths are short)."""
    key = hashlib.sha256(f"{target.key}/{lab}".encode()).hexdigest()[:12]
    path = state_root() / "cp" / key
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


# Inventory variables that shape a connection beyond host, port, user and key: such a guest is
# left to Ansible, whose connection vnet would not reproduce exactly.
SHAPED = ("ansible_ssh_common_args", "ansible_ssh_extra_args", "ansible_ssh_args",
          "ansible_ssh_pass", "ansible_password", "ansible_connection", "ansible_control_path")
# A master whose parent was killed ends once its guest stops answering (15 s), not hours later
KEEPALIVE = ["-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3"]


def master_socket(directory: Path, host: dict) -> Path:
    """A guest's master socket: a short name (unix socket paths are short, and ssh adds a
    17-character suffix while it makes one) from what identifies the connection."""
    ident = f"{host['ansible_host']}-{host.get('ansible_port') or 22}-" \
            f"{host.get('ansible_user', 'root')}"
    return directory / hashlib.sha256(ident.encode()).hexdigest()[:10]


def open_masters(hosts: dict[str, dict], directory: Path) \
        -> tuple[dict[str, dict], list[subprocess.Popen]]:
    """Open each guest's SSH master now, while ansible-playbook starts (half a second of
    controller CPU during which the guests sit idle): the key exchange, 0.1-0.3 s of a TCG
    guest's CPU, is then done when Ansible's first task connects through the master. Returns
    the hosts, each one with a master told its socket (ansible_control_path), and the
    processes, for stop_masters. Nothing is proven by a master: one that fails, or loses the
    race for its socket to Ansible's own, changes only who connects."""
    hosts, started = dict(hosts), []
    try:
        for name, host in hosts.items():
            key = host.get("ansible_ssh_private_key_file")
            if not host.get("ansible_host") or not key or any(v in host for v in SHAPED):
                continue
            sock = master_socket(directory, host)
            login = guest_argv(key, host["ansible_host"], "", host.get("ansible_user", "root"),
                               host.get("ansible_port"))[1:-1]     # options and user@host
            started.append(runner.start_quiet(
                ["ssh", "-N", "-o", "ControlMaster=yes", "-o", "ControlPersist=no",
                 "-o", f"ControlPath={sock}", *KEEPALIVE, *login]))
            # Ansible %-formats the path (with its control dir as "directory")
            hosts[name] = {**host, "ansible_control_path": str(sock).replace("%", "%%")}
    except BaseException:
        stop_masters(started)
        raise
    return hosts, started


def stop_masters(started: list[subprocess.Popen]) -> None:
    """End the masters open_masters started (by their own PIDs): one that lost the race for
    its socket runs on as a plain connection until here."""
    for proc in started:
        if proc.poll() is None:
            proc.terminate()
    for proc in started:
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def close_masters(directory: Path) -> None:
    """End the SSH control masters Ansible left, so no process outlives the verification, and
    remove their directory: every Ansible run makes it again (control_dir), and a lab that no
    `vnet destroy` ends (a Vagrant demo's, VirtualBox's) must not leave it behind."""
    for sock in (p for p in directory.glob("*") if p.is_socket()):
        runner.run(["ssh", "-o", f"ControlPath={sock}", "-O", "exit", "vnet"], check=False,
                   timeout=10)
        sock.unlink(missing_ok=True)
    try:
        directory.rmdir()
    except OSError:          # gone already; or holding something that is not a master's socket
        pass


def guest_argv(key: str, address: str, command: str, user: str = "root",
               port: int | None = None) -> list[str]:
    """ssh argv that runs `command` on a guest over its control path with the lab's own key
    (no host key kept: every lab's guests are new)."""
    return ["ssh", "-i", str(key), "-o", "BatchMode=yes", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "StrictHostKeyChecking=no", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=10",
            *(["-p", str(port)] if port else []), f"{user}@{address}", command]
