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


def _strings(node: ast.AST) -> list[str] | None:
    """The strings of a literal string or collection of strings (frozenset({...}) too)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
            and node.func.id in ("frozenset", "set", "tuple", "list") and len(node.args) == 1:
        return _strings(node.args[0])
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        found: list[str] = []
        for element in node.elts:
            inner = _strings(element)
            if inner is None:
                return None
            found += inner
        return found
    return None


def _is_mode(node: ast.AST) -> bool:
    """net.mode, mode, mode_name, mode.name, x["mode"], x.get("mode")."""
    if isinstance(node, ast.Attribute):
        return node.attr == "mode" or (node.attr == "name" and _is_mode(node.value))
    if isinstance(node, ast.Name):
        return node.id in ("mode", "mode_name")
    if isinstance(node, ast.Subscript):
        return isinstance(node.slice, ast.Constant) and node.slice.value == "mode"
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
        and node.func.attr == "get" and bool(node.args) \
        and isinstance(node.args[0], ast.Constant) and node.args[0].value == "mode"


def mode_name_uses(source: str, mode_names: set[str]) -> list[str]:
    """A mode compared by name (`net.mode == "nat"`, `mode.name in ("a", "b")`), or a
    module-level collection of mode names (what such a comparison would test against)."""
    tree = ast.parse(source)
    found = []
    for node in tree.body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
            if set(_strings(node.value) or ()) & mode_names:
                found.append(f"{node.lineno}: {ast.unparse(node)}")
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            if any(_is_mode(o) for o in operands) \
                    and any(set(_strings(o) or ()) & mode_names for o in operands):
                found.append(f"{node.lineno}: {ast.unparse(node)}")
    return found


def test_no_mode_is_known_by_name_outside_lab_modes():
    """What differs per mode is data on the mode (lab/modes/): adding a mode is one file. The
    VirtualBox adapters and libvirt interface types that share a mode's name are not modes."""
    from provisioner.lab import modes

    names = set(modes.names())
    offenders = {}
    for name, path in _modules().items():
        if not name.startswith("provisioner.lab.modes"):
            if uses := mode_name_uses(path.read_text(), names):
                offenders[name] = uses
    assert not offenders, offenders


def test_the_mode_check_sees_each_way_of_naming_a_mode():
    names = {"natnetwork", "bridged", "internal"}
    source = '''
STATIC = frozenset({"natnetwork"})
KINDS = ("bridged", "internal")
ADAPTERS = {"natnetwork": 1}
def f(net, mode, n):
    if net.mode == "bridged" or mode.name != "internal" or n.get("mode") in ("natnetwork",):
        pass
    if adapter(net) == "natnetwork" or net.mode in modes.MODES:
        pass
'''
    assert mode_name_uses(source, names) == [
        "2: STATIC = frozenset({'natnetwork'})", "3: KINDS = ('bridged', 'internal')",
        "6: net.mode == 'bridged'", "6: mode.name != 'internal'",
        "6: n.get('mode') in ('natnetwork',)"]       # not the adapter, not the registry lookup
