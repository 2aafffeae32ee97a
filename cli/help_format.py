"""How ``gradflow --help`` and ``gradflow COMMAND --help`` read: paragraphs that reflow to the
terminal's width, and metavars that are words.

Every command of the application is built with :class:`Command` (its groups with :class:`Group`):

* the help text (a command's docstring) is reflowed: the docstring's own line breaks inside a
  paragraph are dropped, so Rich wraps each paragraph to the width of the terminal; paragraphs
  stay apart (a blank line), and the text is taken literally (never as Rich markup);
* an option shows the metavar it declares (``NAME``, ``N``, ``FILE``...) — one that declares none
  shows its own name in capitals, never Typer's type placeholder (``<str>``, ``<int>``...); a
  boolean flag and ``--help`` show none;
* an argument shows its metavar, in the options panel and in the usage line (``ESTIMATOR``,
  ``[FILE]``, ``RUN_DIR...``), not Typer's ``{estimator}`` and type placeholder.
"""

from __future__ import annotations

import inspect
from typing import Any

from rich.markup import escape
from typer import _click
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

#: ``-h`` works as ``--help`` on the application and every command
CONTEXT_SETTINGS: dict[str, Any] = {"help_option_names": ["-h", "--help"]}


def reflow(text: str | None) -> str | None:
    """``text`` with each paragraph on one line (a paragraph ends at a blank line), Rich markup
    escaped: a terminal of any width wraps it where it needs to."""
    if not text:
        return text
    paragraphs = inspect.cleandoc(text).split("\n\n")
    joined = [" ".join(paragraph.split()) for paragraph in paragraphs]
    return escape("\n\n".join(p for p in joined if p))


class WordArgument(TyperArgument):
    """An argument shown by its metavar (``ESTIMATOR``, ``[FILE]``, ``RUN_DIR...``)."""

    def display_type_rich(self, ctx: _click.Context) -> str | None:
        return None if self.metavar is not None else super().display_type_rich(ctx)

    def _usage_display_name(self) -> str:
        if self.metavar is None:
            return super()._usage_display_name()
        name = self.metavar
        if self.nargs != 1 and not name.endswith("..."):
            name += "..."
        return name if self.required else f"[{name}]"


def _words(params: list[_click.Parameter]) -> None:
    for param in params:
        if getattr(param, "help", None):
            param.help = escape(param.help)  # type: ignore[attr-defined]  # literal text
        if isinstance(param, TyperArgument):
            param.__class__ = WordArgument
            if param.metavar is None:
                param.metavar = (param.name or "value").upper()
        elif isinstance(param, TyperOption):
            if param.is_flag:
                param.metavar = ""  # a flag takes no value: nothing to show
            elif param.metavar is None:
                param.metavar = (param.name or "value").upper()


class _ReadableHelp:
    """What a command and a group share: reflowed help texts, word metavars, and a help option
    shown without a metavar."""

    params: list[_click.Parameter]

    @staticmethod
    def _reflowed(attrs: dict[str, Any]) -> dict[str, Any]:
        attrs["help"] = reflow(attrs.get("help"))
        attrs["short_help"] = reflow(attrs.get("short_help"))
        return attrs

    def get_help_option(self, ctx: _click.Context) -> TyperOption | None:
        option = super().get_help_option(ctx)  # type: ignore[misc]
        if option is not None:
            option.metavar = ""
        return option


class Command(_ReadableHelp, TyperCommand):
    """A command whose help reads as described in the module's docstring."""

    def __init__(self, name: str | None, **attrs: Any) -> None:
        super().__init__(name, **self._reflowed(attrs))
        _words(self.params)


class Group(_ReadableHelp, TyperGroup):
    """A group of commands whose help reads as described in the module's docstring."""

    def __init__(self, **attrs: Any) -> None:
        super().__init__(**self._reflowed(attrs))
        _words(self.params)
