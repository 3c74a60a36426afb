"""Compose's variable interpolation, for checking docker-compose.yml without Docker.

Compose interpolates every string value (not keys) of the file before validating it:

* ``$$`` is a literal ``$``;
* ``$NAME`` and ``${NAME}`` are the value, or ``""`` when unset;
* ``${NAME:-default}`` is ``default`` when NAME is unset or empty; ``${NAME-default}`` only when unset;
* ``${NAME:?message}`` is an error when NAME is unset or empty; ``${NAME?message}`` only when unset;
* ``${NAME:+other}`` is ``other`` when NAME is set and non-empty; ``${NAME+other}`` when set.

Defaults, messages and replacements may themselves contain interpolations. Any other ``$``
(a lone ``$``, ``${}``, ``${1X}``, an unclosed brace) is an error.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_OPERATORS = (":-", ":?", ":+", "-", "?", "+")


class InterpolationError(ValueError):
    """A template is malformed, or a required variable has no value."""


@dataclass(frozen=True)
class Reference:
    """One ``$NAME`` or ``${NAME<operator><argument>}`` in a template."""

    name: str
    operator: str  # "" for $NAME and ${NAME}
    argument: tuple[str | Reference, ...]


Template = tuple[str | Reference, ...]


def parse_template(text: str) -> Template:
    """Split ``text`` into literal strings and references."""
    parts, end = _parse(text, 0, inside_braces=False)
    assert end == len(text)
    return parts


def _parse(text: str, pos: int, *, inside_braces: bool) -> tuple[Template, int]:
    """Parse from ``pos`` up to the end, or up to the ``}`` closing a braced argument."""
    parts: list[str | Reference] = []
    literal: list[str] = []
    while pos < len(text):
        char = text[pos]
        if char == "}" and inside_braces:
            break
        if char != "$":
            literal.append(char)
            pos += 1
            continue
        following = text[pos + 1 : pos + 2]
        if following == "$":
            literal.append("$")
            pos += 2
            continue
        if literal:
            parts.append("".join(literal))
            literal = []
        reference, pos = _parse_reference(text, pos)
        parts.append(reference)
    if literal:
        parts.append("".join(literal))
    return tuple(parts), pos


def _parse_reference(text: str, pos: int) -> tuple[Reference, int]:
    """Parse the reference starting at the ``$`` at ``pos``."""
    if text[pos + 1 : pos + 2] != "{":
        name = _NAME.match(text, pos + 1)
        if name is None:
            raise InterpolationError(f"invalid interpolation in {text!r}: write a literal '$' as '$$'")
        return Reference(name.group(), "", ()), name.end()
    name = _NAME.match(text, pos + 2)
    if name is None:
        raise InterpolationError(f"invalid variable name after '${{' in {text!r}")
    pos = name.end()
    operator = next((op for op in _OPERATORS if text.startswith(op, pos)), "")
    argument, pos = _parse(text, pos + len(operator), inside_braces=True)
    if pos >= len(text):
        raise InterpolationError(f"unclosed '${{' in {text!r}")
    if not operator and argument:
        raise InterpolationError(f"invalid interpolation '${{{name.group()}...}}' in {text!r}")
    return Reference(name.group(), operator, argument), pos + 1


def evaluate(template: Template, env: Mapping[str, str]) -> str:
    """Substitute ``env`` into a parsed template, the way Compose does."""
    out: list[str] = []
    for part in template:
        if isinstance(part, str):
            out.append(part)
        else:
            out.append(_evaluate_reference(part, env))
    return "".join(out)


def _evaluate_reference(ref: Reference, env: Mapping[str, str]) -> str:
    value = env.get(ref.name)
    is_set = value is not None
    has_value = bool(value)
    match ref.operator:
        case "":
            return value or ""
        case ":-" | "-":
            use_value = has_value if ref.operator == ":-" else is_set
            return value if use_value and value is not None else evaluate(ref.argument, env)
        case ":?" | "?":
            if has_value if ref.operator == ":?" else is_set:
                return value or ""
            message = evaluate(ref.argument, env)
            raise InterpolationError(f"required variable {ref.name} is missing a value: {message}")
        case _:  # ":+" | "+"
            use_other = has_value if ref.operator == ":+" else is_set
            return evaluate(ref.argument, env) if use_other else ""


def interpolate(text: str, env: Mapping[str, str]) -> str:
    return evaluate(parse_template(text), env)


def interpolate_tree(node: Any, env: Mapping[str, str]) -> Any:
    """Interpolate every string value of a loaded YAML document; keys stay as they are."""
    if isinstance(node, dict):
        return {key: interpolate_tree(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate_tree(item, env) for item in node]
    if isinstance(node, str):
        return interpolate(node, env)
    return node


def iter_references(template: Template) -> Iterator[Reference]:
    """Every reference, including those nested in defaults and messages."""
    for part in template:
        if isinstance(part, Reference):
            yield part
            yield from iter_references(part.argument)


def iter_strings(node: Any) -> Iterator[str]:
    """Every string value of a loaded YAML document (keys excluded, as Compose does)."""
    if isinstance(node, dict):
        for value in node.values():
            yield from iter_strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from iter_strings(item)
    elif isinstance(node, str):
        yield node


def references_in(node: Any) -> list[Reference]:
    return [ref for text in iter_strings(node) for ref in iter_references(parse_template(text))]
