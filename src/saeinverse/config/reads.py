"""Which config values a computation reads, as dotted paths, and their values.

A list of paths covers a leaf by the longest path that is the leaf or one of its sections;
``-path`` uncovers: ``("data", "-data.filtering", "data.filtering.positional_window")`` is every
data setting but the filtering ones, except the positional window. Stage hashes and cache keys
are digests of ``read_values``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from saeinverse.config.tree import Section


def read_values(config: Section, paths: Sequence[str]) -> dict[str, Any]:
    """``{dotted path: value}`` of every config leaf the paths cover: a leaf is covered by the
    longest path that is it or one of its sections; ``-path`` uncovers."""
    covered = {}
    for path in paths:
        covered[path.lstrip("-")] = not path.startswith("-")
    values = {}
    for leaf, value in _leaves(config.to_dict()):
        parts = leaf.split(".")
        prefixes = (".".join(parts[:n]) for n in range(len(parts), 0, -1))
        if next((covered[p] for p in prefixes if p in covered), False):
            values[leaf] = value
    return values


def _leaves(tree: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value
