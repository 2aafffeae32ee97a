"""mkdocs hook: Sphinx cross-reference roles in docstrings, shown as plain code.

gradflow's docstrings name other objects the Sphinx way (``:class:`~gradflow.Trainer```,
``:func:`train```). mkdocstrings renders them as ``:class:<code>~gradflow.Trainer</code>``; this
hook drops the role and, as Sphinx does for a leading ``~``, shows only the last component.
"""

from __future__ import annotations

import re

_ROLE = re.compile(r":(?:py:)?(?:func|class|meth|mod|attr|data|exc|obj|const):"
                   r"<code>(~?)([^<]+)</code>")


def _plain(match: re.Match[str]) -> str:
    tilde, target = match.groups()
    return f"<code>{target.rsplit('.', 1)[-1] if tilde else target}</code>"


def on_page_content(html: str, page, config, files) -> str:
    """mkdocs event: rewrite the rendered page (``page``, ``config`` and ``files`` are part of
    the event's signature)."""
    return _ROLE.sub(_plain, html)
