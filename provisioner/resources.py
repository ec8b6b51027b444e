"""Where templates/ and playbooks/ live: inside the installed wheel (provisioner/_data/), or at
the top of a source checkout."""
from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path
from types import ModuleType

_PACKAGE = Path(__file__).resolve().parent


@lru_cache(maxsize=None)
def data_dir(kind: str) -> Path:
    """kind is "templates", "playbooks" or "vagrant" (the demos)."""
    for candidate in (_PACKAGE / "_data" / kind, _PACKAGE.parent / kind):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"vnet's {kind}/ directory is missing from this installation "
                            f"(looked in {_PACKAGE / '_data'} and {_PACKAGE.parent})")


def playbook_code(folder: str, name: str) -> ModuleType:
    """A Python file of playbooks/ (a guest module in library/, a controller plugin in
    action_plugins/), imported from that file: the same code Ansible runs."""
    path = data_dir("playbooks") / folder / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise FileNotFoundError(f"vnet's {path} is missing from this installation")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
