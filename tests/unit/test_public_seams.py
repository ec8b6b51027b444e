"""Tests use public seams (issue 16, point 6): a test fakes the Driver contract, the ops layer,
an explicit dependency parameter (verify.run.ProbeSources, `bring_up=`, `create=`...) or an
outside boundary (host/runner.py's one subprocess call, the libvirt module), never a private
function of vnet. This reads every test with ast and fails on a monkeypatch of a `_name` on
anything imported from provisioner."""
from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]

# (test file, attribute): why it cannot be done through a public seam. Keep this short.
ALLOWED: dict[tuple[str, str], str] = {
    ("unit/test_capture_drivers.py", "_terminal"):
        "`vnet capture -w -` refuses a terminal on stdout; click's CliRunner always gives a "
        "pipe, and the refusal is an isatty() of the real sys.stdout",
}


def _provisioner_names(tree: ast.AST) -> set[str]:
    """Local names bound to provisioner modules or objects (`from provisioner... import x`)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "provisioner":
            names |= {a.asname or a.name for a in node.names}
        elif isinstance(node, ast.Import):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names
                      if a.name.split(".")[0] == "provisioner"}
    return names


def _root(node: ast.AST) -> str | None:
    while isinstance(node, (ast.Attribute, ast.Call, ast.Subscript)):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else None


def private_patches(source: str) -> list[tuple[int, str]]:
    """(line, attribute) of every setattr/delattr of a private name on a provisioner object:
    monkeypatch.setattr(module, "_x", ...), monkeypatch.setattr("provisioner.a._x", ...)
    and `module._x = ...`."""
    tree = ast.parse(source)
    ours = _provisioner_names(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and node.func.attr in ("setattr", "delattr") and node.args:
            first = node.args[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                dotted = first.value           # the "package.module.attr" form
                attr = dotted.rsplit(".", 1)[-1]
                if dotted.startswith("provisioner.") and _private(attr):
                    found.append((node.lineno, attr))
            elif len(node.args) >= 2 and isinstance(node.args[1], ast.Constant) \
                    and isinstance(node.args[1].value, str) and _private(node.args[1].value) \
                    and _root(first) in ours:
                found.append((node.lineno, node.args[1].value))
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Attribute) and _private(target.attr) \
                        and _root(target.value) in ours:
                    found.append((node.lineno, target.attr))
    return sorted(found)


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def test_no_test_patches_a_private_name_of_vnet():
    offenders = []
    for path in sorted(TESTS.rglob("test_*.py")):
        rel = str(path.relative_to(TESTS))
        for line, attr in private_patches(path.read_text()):
            if (rel, attr) not in ALLOWED:
                offenders.append(f"{rel}:{line} patches {attr}")
    assert not offenders, ("fake a public seam instead (README, 'How the code is laid out'):\n"
                           + "\n".join(offenders))


def test_the_guard_sees_each_form_of_a_private_patch():
    """The guard itself can fail: each way of patching a private name is found, a public name
    or a non-vnet object is not."""
    source = '''
from provisioner.verify import run as verifier
from provisioner.drivers.libvirt.connection import LibvirtDriver
import provisioner.host.sandbox
probe = object()

def test(monkeypatch):
    monkeypatch.setattr(verifier, "_ansible", None)
    monkeypatch.setattr(verifier.forwardcheck, "_ssh_login", None)
    monkeypatch.setattr(LibvirtDriver, "_lookup", None)
    monkeypatch.setattr("provisioner.host.sandbox._down", None)
    monkeypatch.delattr(provisioner.host.sandbox, "_up")
    verifier._sandbox = None
    monkeypatch.setattr(verifier, "verify", None)
    monkeypatch.setattr(probe, "_sys", None)
    monkeypatch.setattr(verifier, "__doc__", None)
'''
    assert [attr for _, attr in private_patches(source)] == [
        "_ansible", "_ssh_login", "_lookup", "_down", "_up", "_sandbox"]
