"""The package's shape (README, "How the code is laid out"): no import cycles, a CLI that does
not know the backends, and command modules that never import `main` back. Read from the source
with ast, so nothing is imported."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "provisioner"


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        if "files" in path.relative_to(PACKAGE).parts:      # the guest's own files
            continue
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Every provisioner module `name` imports, anywhere in the file."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:
                for candidate in (f"{target}.{alias.name}", target):
                    if candidate in modules and candidate != name:
                        out.add(candidate)
                        break
        elif isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name in modules}
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def test_there_are_no_import_cycles():
    graph = _graph()
    state: dict[str, int] = {}          # 1: on the path, 2: done
    cycles = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2
    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, cycles


def test_the_cli_knows_no_backend_and_no_command_module_imports_main():
    graph = _graph()
    for name, imported in graph.items():
        if name.startswith("provisioner.cli"):
            assert not any(m.startswith(("provisioner.drivers.libvirt",
                                         "provisioner.drivers.virtualbox")) for m in imported), name
    for path in (PACKAGE / "cli").glob("*.py"):
        if path.name != "__init__.py":
            assert "import main" not in path.read_text() and "main," not in path.read_text(), path


MAX_LINES = 400     # README, "How the code is laid out": a module a reader takes in at once


def test_no_module_is_over_the_line_limit():
    long = {name: n for name, path in _modules().items()
            if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, f"split these modules (over {MAX_LINES} lines): {long}"
