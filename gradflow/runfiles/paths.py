"""Where files named by a configuration may be written.

A config file can come from elsewhere (a colleague, a paper's repository, a downloaded sweep). The
only path in a training config that gradflow writes to is ``run.out``, the run directory; when it
comes from a file, it must be a relative path that stays below the current directory — no
absolute path, no ``..`` that climbs out, no symbolic link that leads out — and not the current
directory itself (whose files ``--force`` would replace). Naming the directory on the command
line (``--out DIR`` or ``--set run.out=DIR``) is the user asking, and may point anywhere. The
other outputs (``gradflow plot --out``, ``gradflow sweep --out``, ``gradflow config schema
--out``) exist only as command-line options; a sweep's runs are named by the sweep from sanitised
values, inside its directory. Paths that are only read (``task.path`` of ``text``) are not
restricted.
"""

from __future__ import annotations

from pathlib import Path

from gradflow.contracts.errors import PathPolicyError


def is_below(path: str | Path, root: str | Path) -> bool:
    """True if ``path`` (relative to ``root`` unless absolute), with every symbolic link of its
    existing part resolved, is strictly below ``root``."""
    base = Path(root).resolve()
    target = (base / Path(path)).resolve()
    return base in target.parents


def check_config_path(value: str, key: str, source: str, root: str | Path | None = None) -> None:
    """Raise :class:`PathPolicyError` unless ``value`` (the ``key`` of the config file
    ``source``) is a relative path strictly below ``root`` (default: the current directory)."""
    root = Path.cwd() if root is None else Path(root)
    if Path(value).is_absolute():
        why = "an absolute path"
    elif (Path(root) / value).resolve() == Path(root).resolve():
        why = "the current directory itself"
    elif not is_below(value, root):
        why = "outside the current directory"
    else:
        return
    raise PathPolicyError(
        f"config file {source!r} sets {key} = {value!r}, {why}; a config file may only name a "
        f"directory below the current one: pass --out {value} to write there")
