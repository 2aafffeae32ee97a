"""The documentation: the site builds with `mkdocs build --strict` (no broken link, no warning), its
maths renders offline with the KaTeX vendored in docs/assets/katex/, and README.md's catalogue
names every built-in plugin."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import gradflow
from gradflow.registry.discovery import PLUGIN_KINDS
from tests.helpers import plugin_registered

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
KATEX = DOCS / "assets" / "katex"
MKDOCS = Path(sys.executable).parent / "mkdocs"
HAVE_MKDOCS = shutil.which("mkdocs") is not None or MKDOCS.exists()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site, built once for the tests of this module."""
    if not HAVE_MKDOCS:
        pytest.skip("mkdocs is not installed (pip install -e '.[docs]')")
    out = tmp_path_factory.mktemp("docs") / "site"
    exe = str(MKDOCS) if MKDOCS.exists() else "mkdocs"
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    proc = subprocess.run([exe, "build", "--strict", "--site-dir", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


def test_mkdocs_build_strict(site: Path) -> None:
    assert (site / "index.html").exists()
    assert (site / "performance" / "index.html").exists()
    for page in ("influence", "brackets", "add", "check"):  # the experiments are in the nav
        assert (site / "experiments" / page / "index.html").exists()


# -- maths -------------------------------------------------------------------------------------

def _mkdocs_config() -> dict:
    yaml = pytest.importorskip("yaml")
    return yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))


def test_maths_assets_are_local() -> None:
    """Nothing is loaded from a CDN: every extra stylesheet and script is a file of docs/, and
    every font that KaTeX's stylesheet asks for first (woff2, then woff) is vendored."""
    config = _mkdocs_config()
    assets = [*config.get("extra_css", []), *config.get("extra_javascript", [])]
    assert "assets/katex/katex.min.js" in assets
    for asset in assets:
        path = asset if isinstance(asset, str) else asset["path"]
        assert "//" not in path, f"{path}: the site must build and render offline"
        assert (DOCS / path).is_file(), path
    css = (KATEX / "katex.min.css").read_text(encoding="utf-8")
    fonts = set(re.findall(r"url\((fonts/[^)]+\.woff2?)\)", css))
    assert fonts, "katex.min.css names its fonts"
    assert not [font for font in sorted(fonts) if not (KATEX / font).is_file()]
    assert (KATEX / "LICENSE").is_file()
    assert {"pymdownx.arithmatex": {"generic": True}} in config["markdown_extensions"]


def _formulas(site: Path) -> list[tuple[str, str, bool]]:
    """(page, TeX, display) for every formula that pymdownx.arithmatex left in the site."""
    found = []
    pattern = re.compile(r'<(span|div) class="arithmatex">(.*?)</\1>', re.S)
    entities = {"&lt;": "<", "&gt;": ">", "&quot;": '"', "&#39;": "'", "&amp;": "&"}
    for html in sorted(site.rglob("*.html")):
        for _, body in pattern.findall(html.read_text(encoding="utf-8")):
            tex = re.sub("|".join(entities), lambda m: entities[m.group()], body).strip()
            assert tex[:2] in ("\\(", "\\[") and tex[-2:] in ("\\)", "\\]"), (html, tex)
            found.append((str(html.relative_to(site)), tex[2:-2], tex[:2] == "\\["))
    return found


def test_estimator_pages_have_rendered_maths(site: Path) -> None:
    pages = {page for page, _, _ in _formulas(site)}
    for name in ("rtrl", "tbptt", "uoro", "nobacktrack", "kalman-nobacktrack"):
        assert f"estimators/{name}/index.html" in pages
    for name in ("online-learning", "estimators", "models"):
        assert f"concepts/{name}/index.html" in pages
    assert (site / "assets" / "katex" / "katex.min.js").is_file()
    assert (site / "assets" / "katex-init.js").is_file()


_RENDER = """
const katex = require(process.argv[1]);
const formulas = JSON.parse(require("fs").readFileSync(0, "utf8"));
const bad = [];
for (const [page, tex, display] of formulas) {
  try { katex.renderToString(tex, {displayMode: display, throwOnError: true}); }
  catch (e) { bad.push(`${page}: ${e.message}`); }
}
console.log(JSON.stringify(bad));
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_every_formula_parses_with_katex(site: Path) -> None:
    """The vendored KaTeX, run by node, renders every formula of the site without an error."""
    formulas = _formulas(site)
    assert formulas
    proc = subprocess.run(["node", "-e", _RENDER, str(KATEX / "katex.min.js")],
                          input=json.dumps(formulas), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []


# -- README ------------------------------------------------------------------------------------

def _readme_catalogue() -> dict[str, set[str]]:
    """The names of README.md's "What is inside" table, by kind (first column), each name in
    backticks in the second column."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## What is inside\n", 1)[1].split("\n## ", 1)[0]
    names: dict[str, set[str]] = {}
    for line in section.splitlines():
        if not line.startswith("|"):
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        name = re.fullmatch(r"`([^`]+)`", cells[1]) if len(cells) > 2 else None
        if name:
            names.setdefault(cells[0], set()).add(name.group(1))
    return names


def test_readme_catalogue_names_every_builtin_plugin() -> None:
    """A new built-in estimator, model, task or logger cannot be forgotten in the README."""
    catalogue = _readme_catalogue()
    assert set(catalogue) <= set(PLUGIN_KINDS), sorted(catalogue)
    registry = gradflow.get_registry()
    for kind in PLUGIN_KINDS:
        builtin = {name for name, info in registry.entries[kind].items()
                   if info.plugin == "builtin"}
        assert catalogue.get(kind, set()) == builtin, kind


def test_the_plugin_guides_logger_example_runs(tmp_path: Path) -> None:
    """The logger of docs/plugins.md §7, registered in-process: its copy equals metrics.jsonl."""
    guide = (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")
    code = re.search(r"```python\n(import json\n\nimport gradflow\n\nclass JsonlCopy.*?)```",
                     guide, re.S)
    assert code is not None, "the logger example of docs/plugins.md §7 is gone"
    namespace: dict = {}
    exec(code.group(1), namespace)

    with plugin_registered("docs-logger-test", loggers=[namespace["JsonlCopy"]]):
        run = gradflow.train(sets=["run.steps=2000", 'run.loggers=["copy"]',
                                   "model.n_hidden=4"], out=tmp_path / "run",
                             handle_signals=False)
    lines = (run.path / "metrics.jsonl").read_text().splitlines()
    copy = (run.path / "metrics-copy.jsonl").read_text().splitlines()
    assert len(lines) == 2 and [json.loads(x) for x in copy] == [json.loads(x) for x in lines]
