"""HTML from text: escaping (with bidirectional controls neutralised), numbers and small tables.

Every piece of text from an artifact or the config reaches the page through ``esc``: HTML
special characters are escaped, and Unicode bidirectional controls (a right-to-left override
in a run name or a prompt would reorder the text around it) are shown as visible ``<U+202E>``
marks instead of acting.
"""

from __future__ import annotations

import html
import re
from typing import Any

BIDI_CONTROLS = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
"""Characters that change the display order of the text around them."""


def neutralise_bidi(text: str) -> str:
    """``text`` with each bidirectional control replaced by a visible ``<U+XXXX>`` mark."""
    return BIDI_CONTROLS.sub(lambda m: f"<U+{ord(m.group()):04X}>", text)


def esc(value: Any) -> str:
    """HTML-escape any value's text (quotes included, so it is safe in attributes too)."""
    return html.escape(neutralise_bidi(str(value)), quote=True)


def fmt(value: Any, digits: int = 4) -> str:
    """A number for a table cell: 4 significant digits, '–' for missing."""
    if value is None:
        return "–"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return esc(value)
    return esc(f"{value:.{digits}g}")


def kv_table(rows: list[tuple[str, Any]]) -> str:
    """A two-column table; values are escaped unless they are already ``Markup``."""
    cells = "".join(f"<tr><th>{esc(k)}</th><td>{_cell(v)}</td></tr>" for k, v in rows)
    return f'<table class="kv">{cells}</table>'


class Markup(str):
    """Text that is already HTML (built here from escaped parts)."""


def _cell(value: Any) -> str:
    if isinstance(value, Markup):
        return str(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return fmt(value)
    return esc("–" if value is None else value)
