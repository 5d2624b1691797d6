"""The configuration tree: typed sections, defaults, validated merges, YAML and dotted overrides.

Every section is a dataclass whose fields carry their own one-line documentation (the string
after each field). Sections read both ways: ``config.data.n_prompts`` and
``config["data"]["n_prompts"]``; a section passes straight to its stage function.
Configs are never changed in place: ``update_config`` returns a new tree.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from saeinverse.config.ranges import ORDERED, RANGES, check_ranges
from saeinverse.config.reads import read_values
from saeinverse.config.sections import (
    ClusteringConfig,
    Config,
    DataConfig,
    DBSCANConfig,
    ExplanationConfig,
    FilteringConfig,
    HardwareConfig,
    HDBSCANConfig,
    KMeansConfig,
    ModelConfig,
    OptimizationConfig,
    OutputConfig,
    PipelineConfig,
    SAEConfig,
    SAETrainConfig,
    ScaleConfig,
    SelectionConfig,
    UMAPConfig,
)
from saeinverse.config.tree import (
    Bound,
    S,
    Section,
    field_docs,
    mark_paths,
    merge,
    place_settings,
)
from saeinverse.errors import ConfigError

__all__ = [
    "ORDERED",
    "RANGES",
    "Bound",
    "ClusteringConfig",
    "Config",
    "DataConfig",
    "DBSCANConfig",
    "ExplanationConfig",
    "FilteringConfig",
    "HardwareConfig",
    "HDBSCANConfig",
    "KMeansConfig",
    "ModelConfig",
    "OptimizationConfig",
    "OutputConfig",
    "PipelineConfig",
    "SAEConfig",
    "SAETrainConfig",
    "ScaleConfig",
    "Section",
    "SelectionConfig",
    "UMAPConfig",
    "as_section",
    "check_ranges",
    "config_from_dict",
    "dump_config",
    "field_docs",
    "get_default_config",
    "load_config",
    "parse_overrides",
    "read_values",
    "section_path",
    "update_config",
    "yaml_problem",
]

# ----------------------------------------------------------------------------- public API


def get_default_config() -> Config:
    """A fresh default configuration tree."""
    return mark_paths(Config(), "")


def update_config(config: Config | Section, overrides: Mapping[str, Any]) -> Config:
    """Return a new config: ``config`` deep-merged with the nested dict ``overrides``, validated.

    A top-level key may also be a setting's own name when exactly one setting below ``config``
    has it (the flat form): ``{"n_prompts": 50, "max_steps": 100}`` sets ``data.n_prompts`` and
    ``optimization.max_steps``, checked as the nested form is. Flat and nested keys mix in one
    dict. Sections have no flat form. A name several settings share (``batch_size``,
    ``context_window``, ``lr``, ``min_samples``, ``name``, ``score``) raises ``ConfigError``
    listing their dotted paths, and so does one setting given both flat and nested.

    Unknown keys raise ``ConfigError`` naming the key, the valid keys at that level and the
    closest one; values of the wrong type raise ``ConfigError`` naming the key path and type.
    """
    if not isinstance(overrides, Mapping):
        raise ConfigError(f"overrides must be a nested dict, got {type(overrides).__name__}")
    path = config._path().replace("<root>", "")
    merged = merge(config, place_settings(config, overrides, path), path)
    merged = mark_paths(merged, getattr(config, "_section_path", ""))
    check_ranges(merged)
    return merged


def section_path(section_type: type[Section]) -> str:
    """The dotted key of the section of that type in the config tree (e.g. 'optimization')."""

    def find(section: Section, prefix: str) -> str | None:
        for name in section._field_names():
            child = getattr(section, name)
            if isinstance(child, Section):
                key = f"{prefix}.{name}" if prefix else name
                if type(child) is section_type:
                    return key
                found = find(child, key)
                if found:
                    return found
        return None

    path = find(Config(), "")
    if path is None:
        raise TypeError(f"{section_type.__name__} is not a section of the config tree")
    return path


def as_section(value: Any, section_type: type[S]) -> S:
    """A validated ``section_type`` from what a notebook passes to a stage function.

    ``value`` may be that section, the whole config, a (partial) dict of the section's keys, or
    None (the defaults). Dict keys and values are checked as ``update_config`` checks them.
    """
    if isinstance(value, section_type):
        return value
    if isinstance(value, Config):
        return _get(value, section_path(section_type))
    default = mark_paths(section_type(), section_path(section_type))
    if value is None:
        return default
    if isinstance(value, Section):
        value = value.to_dict()
    if not isinstance(value, Mapping):
        raise ConfigError(
            f"{section_path(section_type)} must be a config section or a dict, "
            f"got {type(value).__name__}"
        )
    return update_config(default, value)


def _get(config: Section, path: str) -> Any:
    node: Any = config
    for part in path.split("."):
        node = getattr(node, part)
    return node


def config_from_dict(data: Mapping[str, Any]) -> Config:
    """Build a full config from a (possibly partial) nested dict over the defaults."""
    return update_config(get_default_config(), data)


def load_config(path: str | Path) -> Config:
    """Read a YAML file (a partial tree is fine: missing keys keep their defaults)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as err:
        raise ConfigError(f"cannot read config file {path}: {err.strerror or err}") from err
    except UnicodeDecodeError as err:
        raise ConfigError(
            f"config file {path} is not UTF-8 text (byte offset {err.start}): is it a YAML file?"
        ) from err
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {yaml_problem(err)}") from err
    if not isinstance(data, Mapping):
        raise ConfigError(f"config file {path} must hold a mapping of sections, got {data!r}")
    return config_from_dict(data)


def dump_config(config: Section) -> str:
    """The config as YAML text (round-trips through ``load_config``)."""
    return yaml.safe_dump(config.to_dict(), sort_keys=False)


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """Turn CLI items like ``data.n_prompts=200`` into a nested dict (values parsed as YAML)."""
    nested: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} must look like section.key=value")
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as err:
            raise ConfigError(
                f"override {item!r}: the value is not valid YAML ({yaml_problem(err)}); "
                "quote text holding YAML punctuation, e.g. key='\"@text\"'"
            ) from err
        node = nested
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r} conflicts with an earlier one")
        node[parts[-1]] = value
    return nested


def yaml_problem(err: yaml.YAMLError) -> str:
    """A YAML error on one line: where (line, column) and what, without PyYAML's snippet."""
    mark = getattr(err, "problem_mark", None) or getattr(err, "context_mark", None)
    problem = getattr(err, "problem", None) or " ".join(str(err).split())
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return f"{where}{problem}"
