"""The argparse parser of every ``stress`` command: one-line errors, the closest option or
command for a mistyped one, and help that says a default only when it means something.

``stress run --devcies 3`` is ``stress run: error: unknown option --devcies; did you mean
--devices?`` (exit status 2): the suggestion is the closest of that command's own options, and
there is none when nothing is close.
"""

from __future__ import annotations

import argparse
import difflib
from collections.abc import Sequence
from typing import Any, NoReturn


def suggestion(word: str, known: Sequence[str]) -> str | None:
    """The one of ``known`` closest to ``word`` (dashes aside), or None when none is close."""
    names = {name.lstrip("-"): name for name in known}
    close = difflib.get_close_matches(word.lstrip("-"), list(names), n=1)
    return names[close[0]] if close else None


def shown_default(value: object) -> str | None:
    """A default as help shows it, or None when it says nothing: no value, an empty one, a
    switch that is off. What their absence means is for the flag's own help to say."""
    if value is None or value is False or value == argparse.SUPPRESS:
        return None
    if value is True:
        return "on"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (tuple, list)):
        return ",".join(shown for item in value if (shown := shown_default(item))) or None
    return str(value) or None


def _option_like(word: str) -> bool:
    """Whether ``word`` is written as an option (``-x``, ``--name=value``), not a number."""
    try:
        float(word)
    except ValueError:
        return word.startswith("-") and word != "-"
    return False


class HelpFormatter(argparse.HelpFormatter):
    """Adds ``(default: X)`` to a flag's help, unless its help says its default already
    (``default: ...``) or :func:`shown_default` finds nothing worth saying."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        shown = shown_default(action.default)
        if shown is None or not action.option_strings or "default:" in text:
            return text
        return f"{text} (default: {shown.replace('%', '%%')})"  # help text is %-formatted


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors: ``stress run: error: ... (see stress run --help)``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        """Print one line and exit 2."""
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def unknown(self, what: str, word: str, known: Sequence[str]) -> NoReturn:
        """``word`` is no ``what`` (option, command) of this parser: say so, with the closest."""
        close = suggestion(word, known)
        if close is None:
            self.error(f"unknown {what} {word}")
        self.exit(2, f"{self.prog}: error: unknown {what} {word}; did you mean {close}?\n")

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        # argparse's own check, which names every choice, is where a mistyped command ends
        if isinstance(action, argparse._SubParsersAction) and value not in action.choices:
            self.unknown("command", value, list(action.choices))
        super()._check_value(action, value)

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        """As argparse's, but what this command does not take ends it here, named by this
        command (argparse would name only ``stress``, after every subcommand had parsed)."""
        parsed, extras = super().parse_known_args(args, namespace)
        if extras:
            self.unexpected(extras)
        return parsed, extras

    def unexpected(self, extras: Sequence[str]) -> NoReturn:
        """The first option of ``extras`` that this parser does not know, else its first word."""
        before_end = extras[: extras.index("--")] if "--" in extras else extras
        for word in before_end:
            if _option_like(word):
                name = word.split("=", 1)[0]
                options = [option for action in self._actions for option in action.option_strings]
                self.unknown("option", name, options)
        self.error(f"unexpected argument {extras[0]}")
