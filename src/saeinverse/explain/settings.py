"""The explanation settings, read from ``config.explanation`` (a section or a plain dict).

Keys missing from the config fall back to the defaults below, so the stage runs whichever
version of the config tree it is given.
"""

from __future__ import annotations

import types
from collections.abc import Mapping
from typing import Any

DEFAULTS: dict[str, Any] = {
    "explainer": "tokens",
    "scorer": None,
    "llm_name": "smollm2-135m",
    "base_url": None,
    "api_model": None,
    "api_key_env": "OPENAI_API_KEY",
    "max_new_tokens": 48,
    "n_heldout": 10,
    "n_exemplars": 8,
    "n_decile_samples": 1,
    "n_top_tokens": 8,
    "context_window": None,
    "score": True,
    "request_timeout": 30.0,
    "max_retries": 3,
    "retry_backoff": 0.5,
    "batch_size": 8,
}
"""Every setting the stage reads, with its default (see the README's config reference)."""

_MISSING = object()


def resolve_settings(cfg: Any = None) -> types.SimpleNamespace:
    """A namespace of every setting in ``DEFAULTS``: the config's value where it has one.

    ``cfg`` is ``config.explanation``, a dict of its keys, None, or the whole config tree.
    """
    section = getattr(cfg, "explanation", None)
    if section is not None and not isinstance(section, str):  # the whole config tree was given
        cfg = section
    values = dict(DEFAULTS)
    for key in DEFAULTS:
        value = _read(cfg, key)
        if value is not _MISSING:
            values[key] = value
    return types.SimpleNamespace(**values)


def _read(cfg: Any, key: str) -> Any:
    if cfg is None:
        return _MISSING
    if isinstance(cfg, types.SimpleNamespace) or hasattr(cfg, "_field_names"):
        return getattr(cfg, key, _MISSING)  # a config Section: unknown keys are absent
    if isinstance(cfg, Mapping):
        return cfg.get(key, _MISSING)
    return getattr(cfg, key, _MISSING)
