"""A small TOML writer for configurations: tables of scalars, arrays and sub-tables.

``dumps(data, comments)`` writes the top-level scalars first, then each table as ``[name]`` (and
nested tables as ``[name.sub]``). Strings are basic strings with every control character
escaped; floats keep their shortest round-trip form (``inf``/``nan`` as TOML spells them);
``None`` has no TOML form, so such a key is written as a comment (``# key = (not set)``).
``comments`` maps a dotted key (``"run.steps"``) to a line written above it as ``# ...``.
Reading the output back with :mod:`tomllib` gives ``data`` without its ``None`` entries.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

_BARE = re.compile(r"[A-Za-z0-9_-]+")
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f",
            "\r": "\\r"}


def _string(text: str) -> str:
    out = []
    for ch in text:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _key(key: str) -> str:
    return key if _BARE.fullmatch(key) else _string(key)


def value(v: Any) -> str:
    """The TOML literal of a scalar or an array of scalars."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        text = repr(v)
        return text if any(c in text for c in ".en") else f"{text}.0"
    if isinstance(v, str):
        return _string(v)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(value(x) for x in v) + "]"
    if isinstance(v, Mapping):
        return "{ " + ", ".join(f"{_key(k)} = {value(x)}" for k, x in v.items()
                                if x is not None) + " }"
    raise TypeError(f"cannot write {type(v).__name__} as TOML")


def dumps(data: Mapping[str, Any], comments: Mapping[str, str] | None = None) -> str:
    """``data`` as a TOML document (see the module's rules)."""
    lines: list[str] = []
    _table(lines, data, (), comments or {})
    return "\n".join(lines).strip("\n") + "\n"


def _table(lines: list[str], data: Mapping[str, Any], path: tuple[str, ...],
           comments: Mapping[str, str]) -> None:
    if path:
        if lines:
            lines.append("")
        lines.append("[" + ".".join(_key(p) for p in path) + "]")
    for key, v in data.items():
        if isinstance(v, Mapping):
            continue
        note = comments.get(".".join((*path, key)))
        if note:
            lines.extend(f"# {line}" for line in note.splitlines())
        if v is None:
            lines.append(f"# {_key(key)} = (not set)")
        else:
            lines.append(f"{_key(key)} = {value(v)}")
    for key, v in data.items():
        if isinstance(v, Mapping):
            _table(lines, v, (*path, key), comments)
