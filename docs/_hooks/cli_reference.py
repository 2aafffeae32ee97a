"""mkdocs hook: the CLI reference, generated from the Typer application at build time.

``docs/cli.md`` holds the marker ``<!-- gradflow-cli-reference -->``; this hook replaces it with
the output of ``python -m typer gradflow_cli.app utils docs --name gradflow`` (every command,
argument and option with its help), headings moved one level down, so the reference can never
drift from the code. It needs gradflow installed in the environment that builds the docs.
"""

from __future__ import annotations

import subprocess
import sys

MARKER = "<!-- gradflow-cli-reference -->"
_cache: dict[str, str] = {}


def _reference() -> str:
    if "text" not in _cache:
        proc = subprocess.run(
            [sys.executable, "-m", "typer", "gradflow_cli.app", "utils", "docs",
             "--name", "gradflow"],
            capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"generating the CLI reference failed: {proc.stderr.strip()}")
        lines = [f"#{line}" if line.startswith("#") else line
                 for line in proc.stdout.splitlines()]
        _cache["text"] = "\n".join(lines[1:]).strip() + "\n"  # drop the `# gradflow` title
    return _cache["text"]


def on_page_markdown(markdown: str, page, config, files) -> str:
    """mkdocs event: fill the marker of the page that has it (``page``, ``config`` and
    ``files`` are part of the event's signature)."""
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, _reference())
