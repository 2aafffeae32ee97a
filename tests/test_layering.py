"""Layering: gradflow_cli -> gradflow_plugins -> gradflow; the core imports neither.

Built-in plugins use only the public API: they import ``gradflow`` (top level) and each other,
never ``gradflow.<submodule>``, which is what a third-party plugin is told to do too.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_core_never_imports_plugins_or_cli() -> None:
    files = sorted((ROOT / "gradflow").rglob("*.py"))
    assert files
    for path in files:
        bad = {m for m in _imports(path)
               if m.split(".")[0] in ("gradflow_plugins", "gradflow_cli")}
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_plugins_use_only_the_public_api() -> None:
    files = sorted((ROOT / "plugins").rglob("*.py"))
    assert files
    for path in files:
        bad = {m for m in _imports(path)
               if m.split(".")[0] == "gradflow_cli"
               or (m.startswith("gradflow.") and not m.startswith("gradflow.testing"))}
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)} (use `gradflow`)"


def test_importing_gradflow_loads_neither_plugins_nor_cli() -> None:
    code = ("import sys, gradflow; "
            "print(sorted(m for m in sys.modules if m.startswith(('gradflow_plugins', "
            "'gradflow_cli'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"


#: the core's layers, lowest first: a module may import its own layer and the layers before it
LAYERS = ("contracts", "registry", "runfiles", "training", "verification", "tools")
#: modules directly in gradflow/ that are not a layer: the public faces (they import any layer)
#: and the version (imports nothing)
FACES = {"__init__", "testing", "version"}


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "gradflow" else None


def _import_nodes(path: Path) -> list[ast.ImportFrom | ast.Import]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [n for n in ast.walk(tree) if isinstance(n, ast.Import | ast.ImportFrom)]


def test_the_tree_is_the_layers() -> None:
    """gradflow/ holds the layers as subpackages and, beside them, only the public faces."""
    top = {p.stem for p in (ROOT / "gradflow").glob("*.py")}
    packages = {p.parent.name for p in (ROOT / "gradflow").glob("*/__init__.py")}
    assert top == FACES
    assert packages == set(LAYERS)


def test_layers_import_only_the_layers_below() -> None:
    for path in sorted((ROOT / "gradflow").rglob("*.py")):
        rel = path.relative_to(ROOT / "gradflow")
        if len(rel.parts) == 1:
            continue  # a public face
        own = LAYERS.index(rel.parts[0])
        for node in _import_nodes(path):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if node.level == 0 else [])
            for module in names:
                if module == "gradflow" or module in ("gradflow.testing", "gradflow.__init__"):
                    raise AssertionError(f"gradflow/{rel} imports {module}: a layer imports the "
                                         "layers below it, not the public face")
                layer = _layer(module)
                if layer is None or layer == "version":
                    continue
                assert layer in LAYERS, f"gradflow/{rel} imports {module}: not a layer"
                assert LAYERS.index(layer) <= own, (
                    f"gradflow/{rel} ({LAYERS[own]}) imports {module} ({layer}), a higher layer")


def test_no_private_names_cross_modules() -> None:
    """No module of the core imports another module's private (underscore) names."""
    for path in sorted((ROOT / "gradflow").rglob("*.py")):
        for node in _import_nodes(path):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("gradflow"):
                private = [a.name for a in node.names
                           if a.name.startswith("_") and not a.name.endswith("__")]
                assert not private, (f"{path.relative_to(ROOT)} imports private names "
                                     f"{private} from {node.module}")
