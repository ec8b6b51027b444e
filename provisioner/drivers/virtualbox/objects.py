"""What VirtualBox has right now: its VMs with vnet's tags (vnet/lab, vnet/owner), the running
ones, and which object a plan line creates. Every question goes through the backend (api.py)."""
from __future__ import annotations

import re
import shlex
import sys
from collections.abc import Sequence

from ...errors import quote
from ...lab.model import is_name
from .context import OWNER_KEY, TAG_KEY


def vm_tags(be) -> dict[str, str | None]:
    """Every registered VM -> its vnet/lab tag (None: untagged)."""
    tags = {name: value_of(be.run(("VBoxManage", "getextradata", name, TAG_KEY), check=False))
            for name in vm_ids(be)}
    return {name: _valid_tag(name, tag) for name, tag in tags.items()}


def vm_ids(be, which: str = "vms") -> dict[str, str]:
    """Every registered VM (`which`: "runningvms", the running ones) -> its UUID
    (`VBoxManage list vms`: "name" {uuid})."""
    return dict(re.findall(r'^"(.*)" \{([^}]*)\}$', be.run(("VBoxManage", "list", which)).stdout,
                           re.M))


def _valid_tag(vm: str, tag: str | None) -> str | None:
    """A tag read back from extradata counts only if it is a valid lab name (it names the state
    directory); anything else is treated as untagged, so vnet never touches that VM."""
    if tag is None or is_name(tag):
        return tag
    print(f"vnet: warning: ignoring VM {quote(vm)}: its {TAG_KEY} {quote(tag)} is not a valid "
          "lab name", file=sys.stderr)
    return None


def vm_owners(be, tags: dict[str, str | None]) -> dict[str, str | None]:
    """Every vnet-tagged VM -> its vnet/owner (None: tagged by an older vnet, no owner)."""
    return {name: value_of(be.run(("VBoxManage", "getextradata", name, OWNER_KEY), check=False))
            for name, tag in tags.items() if tag is not None}


def running_vms(be) -> set[str]:
    return set(vm_ids(be, "runningvms"))


def value_of(result) -> str | None:
    """`Value: x` -> x; `No value set!` or a failure -> None."""
    if result.returncode != 0 or not result.stdout.startswith("Value: "):
        return None
    return result.stdout[len("Value: "):].rstrip("\n")


def verb_of(argv: Sequence[str]) -> str:
    return argv[1] if argv[1] in ("createvm", "controlvm", "unregistervm") else " ".join(argv[1:3])


def object_of(argv: Sequence[str]) -> tuple[str, str] | None:
    """The VirtualBox object a create or teardown line is about: ("vm", name),
    ("natnetwork", name), ("hostonlyif", token), ("hostonlynet", name), ("dhcpserver", token)."""
    verb = verb_of(argv)
    if verb == "createvm":
        return "vm", _option(argv, "--name")
    if verb in ("controlvm", "unregistervm"):
        return "vm", argv[2]
    kind = argv[1]
    if kind == "natnetwork":
        return kind, _option(argv, "--netname")
    if kind == "hostonlynet":
        return kind, _option(argv, "--name")
    if kind == "dhcpserver":
        return kind, _option(argv, "--interface")
    if verb == "hostonlyif remove":
        return "hostonlyif", argv[3]
    return None


def option_of(argv: Sequence[str], name: str) -> str | None:
    """The value of `name` on a VBoxManage line (`--uuid U` or `--uuid=U`), None without it."""
    try:
        return _option(argv, name)
    except ValueError:
        return None


def _option(argv: Sequence[str], name: str) -> str:
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg[len(name) + 1:]
    raise ValueError(f"{name} missing in {shlex.join(argv)}")
