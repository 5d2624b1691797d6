"""The machinery under the config tree: the ``Section`` base class, validated merges, type
coercion, range bounds and field documentation. The sections themselves, their defaults and every
range check live in ``saeinverse.config``.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from saeinverse.errors import ConfigError


class Section(Mapping):
    """Base of every config section: a frozen-by-convention dataclass that also reads as a dict."""

    def __getitem__(self, key: str) -> Any:
        if key not in self._field_names():
            raise unknown_key(key, self._field_names(), self._path())
        return getattr(self, key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._field_names())

    def __len__(self) -> int:
        return len(self._field_names())

    def __setitem__(self, key: str, value: Any) -> None:
        raise TypeError("config sections are read-only: use update_config(config, {...})")

    @classmethod
    def _field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    def _path(self) -> str:
        return getattr(self, "_section_path", "") or "<root>"

    def to_dict(self) -> dict[str, Any]:
        """A plain nested dict (YAML / JSON ready)."""
        return {
            name: value.to_dict() if isinstance(value, Section) else plain(value)
            for name, value in ((n, getattr(self, n)) for n in self._field_names())
        }


S = TypeVar("S", bound="Section")


def plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    return value


@dataclass(frozen=True)
class Bound:
    """A numeric range a config value must lie in (None: unbounded on that side)."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    """True: the value must be > low (else >= low)."""

    def holds(self, value: Any) -> bool:
        if value is None or isinstance(value, bool) or not isinstance(value, int | float):
            return True  # types are checked elsewhere; None means "not set" where allowed
        if value != value or value in (float("inf"), float("-inf")):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or value <= self.high

    def describe(self) -> str:
        def num(x: float) -> str:
            return str(int(x)) if float(x).is_integer() else f"{x:g}"

        if self.low is not None and self.high is not None:
            return f"in [{num(self.low)}, {num(self.high)}]"
        if self.low is not None:
            return f"{'>' if self.low_open else '≥'} {num(self.low)}"
        return f"≤ {num(self.high)}"


def at_least(low: float) -> Bound:
    return Bound(low=low)


def above(low: float) -> Bound:
    return Bound(low=low, low_open=True)


def between(low: float, high: float) -> Bound:
    return Bound(low=low, high=high)


def flatten(section: Section, prefix: str) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for name in section._field_names():
        value = getattr(section, name)
        key = f"{prefix}.{name}" if prefix else name
        if isinstance(value, Section):
            flat |= flatten(value, key)
        else:
            flat[key] = value
    return flat


def unknown_key(
    key: str, valid: list[str], where: str, settings: Mapping[str, str] | None = None
) -> ConfigError:
    """The unknown-key error: the valid keys at that level and the closest name, which may be
    one of ``settings`` (a unique setting name → its dotted path, the flat form)."""
    settings = settings or {}
    close = difflib.get_close_matches(str(key), [*valid, *settings], n=1)
    hint = ""
    if close:
        name = close[0]
        hint = f"; did you mean {name!r}"
        hint += f" ({settings[name]})?" if name not in valid else "?"
    return ConfigError(
        f"unknown config key {key!r} in {where}; valid keys: {', '.join(valid)}{hint}"
    )


def setting_paths(section: Section) -> dict[str, list[str]]:
    """Each setting's own name → the dotted paths (below ``section``) of the settings so named.

    Settings are the leaves of the tree; a section is never one.
    """
    paths: dict[str, list[str]] = {}
    for key in flatten(section, ""):
        paths.setdefault(key.rpartition(".")[2], []).append(key)
    return paths


def place_settings(section: Section, overrides: Mapping[Any, Any], path: str) -> dict[Any, Any]:
    """``overrides`` with each flat key moved to its nested place (the caller's dicts unchanged).

    A flat key is a top-level key that is no field of ``section`` but the name of exactly one
    setting below it: ``n_prompts`` → ``{"data": {"n_prompts": ...}}``. A name of several
    settings, a name of none, or a setting given both flat and nested raises ``ConfigError``.
    """
    names = section._field_names()
    nested = {key: value for key, value in overrides.items() if key in names}
    flat = {key: value for key, value in overrides.items() if key not in names}
    if not flat:
        return nested
    paths = setting_paths(section)

    def full(dotted: str) -> str:
        return f"{path}.{dotted}" if path else dotted

    for key, value in flat.items():
        found = paths.get(key, []) if isinstance(key, str) else []
        if not found:
            raise unknown_key(key, names, path or "<root>", _flat_hints(paths, full))
        if len(found) > 1:
            choices = " and ".join(full(dotted) for dotted in found)
            raise ConfigError(
                f"config key {key!r} is ambiguous: it names {choices}; set one under its section"
            )
        *parents, leaf = found[0].split(".")
        node = nested
        for depth, part in enumerate(parents, 1):
            given = node.get(part, {})
            node[part] = dict(section_mapping(given, full(".".join(parents[:depth]))))
            node = node[part]
        if leaf in node:
            raise ConfigError(
                f"config keys {key!r} and {full(found[0])} both set {full(found[0])}; give one"
            )
        node[leaf] = value
    return nested


def _flat_hints(paths: dict[str, list[str]], full: Callable[[str], str]) -> dict[str, str]:
    """Names an unknown flat key may have meant: unique settings and the sections inside."""
    inner_sections = {
        ".".join(dotted.split(".")[:depth])
        for found in paths.values()
        for dotted in found
        for depth in range(2, dotted.count(".") + 1)
    }
    hints = {key.rpartition(".")[2]: f"the section {full(key)}: nest it" for key in inner_sections}
    return hints | {name: full(found[0]) for name, found in paths.items() if len(found) == 1}


def section_mapping(value: Any, key_path: str) -> Mapping[Any, Any]:
    """The overrides given to the section at ``key_path``: a mapping, or a section's dict."""
    if isinstance(value, Section):
        return value.to_dict()
    if not isinstance(value, Mapping):
        raise ConfigError(f"{key_path} is a section; give it a mapping, not {value!r}")
    return value


def merge(section: Section, overrides: Mapping[str, Any], path: str) -> Section:
    hints = typing.get_type_hints(type(section))
    names = section._field_names()
    changes: dict[str, Any] = {}
    for key, value in overrides.items():
        if key not in names:
            raise unknown_key(key, names, path or "<root>")
        key_path = f"{path}.{key}" if path else key
        current = getattr(section, key)
        if isinstance(current, Section):
            changes[key] = merge(current, section_mapping(value, key_path), key_path)
        else:
            changes[key] = check_type(value, hints[key], key_path)
    return dataclasses.replace(section, **changes)


def check_type(value: Any, hint: Any, key_path: str) -> Any:
    ok, coerced = coerce(value, hint)
    if not ok:
        raise ConfigError(
            f"config key {key_path} expects {describe_type(hint)}, got {value!r} "
            f"({type(value).__name__})"
        )
    return coerced


def coerce(value: Any, hint: Any) -> tuple[bool, Any]:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        for arg in args:
            ok, coerced = coerce(value, arg)
            if ok:
                return True, coerced
        return False, value
    if hint is type(None):
        return value is None, value
    if origin is Literal:
        return value in args, value
    if origin is list:
        if not isinstance(value, list | tuple):
            return False, value
        items = [coerce(v, args[0]) for v in value]
        return all(ok for ok, _ in items), [v for _, v in items]
    if hint is bool:
        return isinstance(value, bool), value
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool), value
    if hint is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            try:
                return True, float(value)
            except OverflowError:  # an int beyond float's range
                return False, value
        return False, value
    if hint is str:
        return isinstance(value, str), value
    return isinstance(value, hint), value


def describe_type(hint: Any) -> str:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe_type(a) for a in args)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin is list:
        return f"a list of {describe_type(args[0])}"
    if hint is type(None):
        return "null"
    return getattr(hint, "__name__", str(hint))


def mark_paths(section: Section, path: str) -> Section:
    object.__setattr__(section, "_section_path", path)
    for name in section._field_names():
        child = getattr(section, name)
        if isinstance(child, Section):
            mark_paths(child, f"{path}.{name}" if path else name)
    return section


def field_docs(section_type: type[Section]) -> dict[str, str]:
    """Each field's one-line documentation (the string literal after it in the source)."""
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(section_type))
    body = tree.body[0].body
    docs: dict[str, str] = {}
    for node, nxt in zip(body, body[1:], strict=False):
        if isinstance(node, ast.AnnAssign) and isinstance(nxt, ast.Expr):
            if isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str):
                docs[node.target.id] = nxt.value.value
    return docs
