"""The forced command of a vnet sandbox host's SSH server (dropbear -c): what a remote
hypervisor host lets vnet do over SSH, and nothing else.

- a libvirt session (the `sh -c '...virt-ssh-helper...nc -U...'` line libvirt's ssh transport
  sends, src/rpc/virnetclient.c virNetClientSSHHelperCommand): relayed to the host's libvirtd
  socket by libvirt_relay.py, as before;
- exactly the host-side commands vnet sends (provisioner/host/hostaccess.py, vxlan.py): the
  VXLAN devices (ip/bridge), the underlay echo (ping), and mkdir/cat/ls/test/rm/rmdir of a lab's
  serial-log directory under the fixed vnet directory (rm of its serial logs one by one, never
  recursive; rmdir of it and of the emptied directories above it, up to the vnet directory);
- anything else: refused (exit 126).

The client's command arrives in SSH_ORIGINAL_COMMAND as one shell-quoted line; it is split
with shlex, matched token by token against the shapes below, and run without a shell. Several
commands joined by `&&` (as a login shell would run them) each must match; they run in order
and the first that fails ends the line with its status.
Every decision is appended to LOG as a JSON line, so a test can see what the host ran.
Run as `python3 -I THIS HOST_DIR LIBVIRT_SOCKET RELAY`; stdlib only (it runs on the host).
"""
import ipaddress
import json
import os
import re
import shlex
import shutil
import subprocess
import sys

REMOTE_DIR = "/var/lib/libvirt/vnet"          # provisioner/host/hostaccess.py REMOTE_DIR
LOG = "ssh-commands.log"
NAME = r"[a-z](?:[a-z0-9-]{0,22}[a-z0-9])?"   # a lab or VM name (lab/model.py NAME_RE)
OWNER = r"[0-9a-f]{16}"
TOKENS = {
    "<dev>": re.compile(r"v[nx][0-9a-f]{10}"),      # bridges and VXLAN devices (lab/naming.py)
    "<vx>": re.compile(r"vx[0-9a-f]{10}"),
    "<int>": re.compile(r"[0-9]{1,8}"),
    "<tag>": re.compile(rf"vnet:{OWNER}:{NAME}:{NAME}"),   # provisioner/host/vxlan.py
    "<ownerdir>": re.compile(rf"{REMOTE_DIR}/{OWNER}"),
    "<labdir>": re.compile(rf"{REMOTE_DIR}/{OWNER}/{NAME}"),
    "<log>": re.compile(rf"{REMOTE_DIR}/{OWNER}/{NAME}/{NAME}\.serial\.log"),
}
SHAPES = [s.split() for s in (
    "ip link add <vx> type vxlan id <int> local <ip> dstport <int> nolearning",
    "ip link set <vx> alias <tag>",
    "ip link set <dev> mtu <int>",
    "ip link set <vx> master <dev>",
    "ip link set <vx> up",
    "bridge fdb append 00:00:00:00:00:00 dev <vx> dst <ip>",
    "ip -j -d link show type vxlan",
    "ip link del <vx>",
    "ping -c 1 -W <int> <ip>",
    "mkdir -p -m 0755 -- <labdir>",
    "cat -- <log>",
    "ls -1 -- <ownerdir>",
    "ls -1 -- <labdir>",
    "test -d <labdir>",
    "rm -f -- <log>",
    "rmdir --ignore-fail-on-non-empty -- <labdir>",
    "rmdir --ignore-fail-on-non-empty -- <ownerdir>",
    f"rmdir --ignore-fail-on-non-empty -- {REMOTE_DIR}",
)]


def _token_ok(pattern: str, word: str) -> bool:
    if pattern == "<ip>":
        try:
            return str(ipaddress.IPv4Address(word)) == word
        except ValueError:
            return False
    if pattern in TOKENS:
        return TOKENS[pattern].fullmatch(word) is not None
    return pattern == word


def allowed(argv: list) -> bool:
    return any(len(shape) == len(argv) and all(map(_token_ok, shape, argv))
               for shape in SHAPES)


def is_libvirt_session(line: str) -> bool:
    """libvirt's own ssh helper line (netcat or virt-ssh-helper), nothing vnet sends."""
    return line.startswith("sh -c 'which virt-ssh-helper ") or \
        re.fullmatch(r"sh -c '.*\bnc\b.* -U /\S+'", line) is not None


def _log(host_dir: str, verdict: str, line: str) -> None:
    with open(os.path.join(host_dir, LOG), "a") as f:
        f.write(json.dumps({"verdict": verdict, "command": line}) + "\n")


def main(host_dir: str, socket_path: str, relay: str) -> None:
    line = os.environ.get("SSH_ORIGINAL_COMMAND", "")
    if is_libvirt_session(line):
        _log(host_dir, "libvirt", line)
        os.execv(sys.executable, [sys.executable, "-I", relay, socket_path])
    if not permitted(line):
        _log(host_dir, "refused", line)
        print(f"vnet host: refused: {line!r}", file=sys.stderr)
        sys.exit(126)
    for argv in split(line):
        _log(host_dir, "ran", shlex.join(argv))
        if argv[0] == "ping" and shutil.which("ping") is None:
            argv = ["busybox", *argv]                # the machine may have only busybox's
        status = subprocess.run(argv).returncode
        if status:
            sys.exit(status)


def permitted(line: str) -> bool:
    commands = split(line)
    return bool(commands) and all(map(allowed, commands))


def split(line: str) -> list:
    """The argv of each command of a `A && B && ...` line ([] when it does not parse)."""
    try:
        words = shlex.split(line)
    except ValueError:
        return []
    commands, current = [], []
    for word in words + ["&&"]:
        if word == "&&":
            if not current:
                return []
            commands.append(current)
            current = []
        else:
            current.append(word)
    return commands


if __name__ == "__main__":
    main(*sys.argv[1:4])
