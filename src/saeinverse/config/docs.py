"""The config reference: every key with its default, type and one-line documentation.

``saeinverse config keys`` prints it; the README holds the same table (a test keeps them equal).
"""

from __future__ import annotations

import typing

from saeinverse.config import get_default_config
from saeinverse.config.tree import Section, describe_type, field_docs


def config_reference() -> str:
    """A Markdown table of every config key, in tree order."""
    rows = ["| key | default | type | meaning |", "|---|---|---|---|"]
    rows += _rows(get_default_config(), "")
    return "\n".join(rows) + "\n"


def _rows(section: Section, path: str) -> list[str]:
    kind = type(section)
    docs = field_docs(kind)
    hints = typing.get_type_hints(kind)
    rows: list[str] = []
    for name in kind._field_names():
        value = getattr(section, name)
        key = f"{path}.{name}" if path else name
        if isinstance(value, Section):
            rows += _rows(value, key)
        else:
            rows.append(
                f"| `{key}` | `{_show(value)}` | {describe_type(hints[name])} | {docs[name]} |"
            )
    return rows


def _show(value: typing.Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return repr(value) if isinstance(value, str) else str(value)
