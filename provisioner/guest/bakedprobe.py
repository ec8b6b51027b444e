"""The probe module (playbooks/library/vnet_probe.py) baked into the tiny image, precompiled.

Why: under TCG every guest-side step of a verify costs. Run as a plain Ansible module, the
probe takes six SSH round trips per guest (make a temp dir, copy the module, copy its
arguments, chmod, run, clean up), and Python compiles its source on every run, since a script
is never cached. The image carries the module's bytecode instead, in a directory named by a
hash of its source, and the controller-side action plugin (playbooks/action_plugins/
vnet_probe.py) runs it in ONE SSH call, arguments on stdin. That run leaves a warm copy behind
on the guest's loopback, which the next run (a second task, the next `vnet verify`) is handed
to, so Python's start, the largest part of what is left, is paid once per guest; each request
runs in a child it forks. A guest without that exact bytecode (another image, or one built
from another version of the module) gets the module the usual way: the hash in the path means
a stale copy is never run.

The image builder (guest/buildtree.py) writes the source to `source_rel()` and compiles it with
the guest's stdlib; the plugin asks for `baked_path()` through `command()`."""
from __future__ import annotations

import hashlib
import json
import shlex

from ..resources import data_dir

GUEST_PYTHON_TAG = "cpython-311"     # the image's python3.11 (guest/debs.py)
MISSING = "VNET-PROBE-NOT-BAKED"     # what the guest prints when it lacks this bytecode
WARM_PORT = 7099     # the warm copy's port on the guest's loopback (vnet_probe.py stay_warm)
WARM_ACCEPTED = "VNET-WARM-ACCEPTED"    # its first line when it takes a run (vnet_probe.py)


def probe_source() -> bytes:
    """The module Ansible would copy (ANSIBLE_LIBRARY is playbooks/library)."""
    return (data_dir("playbooks") / "library" / "vnet_probe.py").read_bytes()


def _directory(source: bytes) -> str:
    return f"usr/lib/vnet/probe-{hashlib.sha256(source).hexdigest()[:16]}"


def source_rel(source: bytes) -> str:
    """Where the builder writes the source, relative to the image's root."""
    return f"{_directory(source)}/vnet_probe.py"


def baked_path(source: bytes) -> str:
    """The bytecode compileall makes of source_rel(source), as an absolute guest path."""
    return f"/{_directory(source)}/__pycache__/vnet_probe.{GUEST_PYTHON_TAG}.pyc"


def command(path: str, python: str, port: int = WARM_PORT) -> str:
    """The one shell command that runs the baked probe at `path` with its arguments on stdin:
    through the warm copy an earlier run left on the guest's loopback `port`, if one of this
    exact bytecode answers there, else a fresh Python on that bytecode, which stays warm after
    (vnet_probe.py stay_warm). Prints MISSING when this guest lacks the bytecode. A warm copy
    that took the run (WARM_ACCEPTED first) is the answer, even if it ends without a result:
    the probes never run twice. Anything else there (refused, reset, another version, another
    program) means a fresh run."""
    quoted, python = shlex.quote(path), shlex.quote(python)
    died = json.dumps({"failed": True, "msg": "the warm probe copy took the run and ended "
                                              "without a result"})
    # -I -S: no environment, no user or site directories; the probe needs only the stdlib
    return "\n".join([
        "a=$(cat)",
        f"[ -f {quoted} ] || {{ echo {MISSING}; exit 0; }}",
        f"r=$(printf '%s\\n%s\\n' {quoted} \"$a\" | nc 127.0.0.1 {int(port)} 2>/dev/null)",
        'case "$r" in',
        f"  {WARM_ACCEPTED}*)",
        f"    r=${{r#{WARM_ACCEPTED}}}; r=${{r#?}}",
        f"    [ -n \"$r\" ] || r={shlex.quote(died)}",
        "    printf '%s\\n' \"$r\"; exit 0 ;;",
        "esac",
        f"printf '%s\\n' \"$a\" | exec {python} -I -S {quoted} - {int(port)}"])
