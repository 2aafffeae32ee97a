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
