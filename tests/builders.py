"""Test builders: the package's tiny random model and SAE, the trained tiny SAE saved in
``tests/fixtures/tiny_sae``, and the one tiny run configuration in its three forms.

The tiny run is ``tiny-char`` (``saeinverse.models.tiny``) with the saved SAE (``sae.path``), 30
prompts of the bundled corpus, a few optimisation steps and light explanation settings (no
judge, no held-out top-up, the fewest bootstraps the config allows, a 2,000-token reference
maximum). Build it as

- ``tiny_overrides(**changes)``: the nested overrides dict (``changes`` are merged into it by
  section, e.g. ``tiny_overrides(explanation={"judge": True})``);
- ``tiny_config(**changes)``: the validated ``Config``;
- ``tiny_run_args(**changes)`` / ``TINY_RUN``: ``KEY=VALUE`` items for the CLI.

``tiny_overrides(sae={"path": None})`` and ``TINY_RUN_TRAINING`` name no SAE: the run trains the
default one at ``sae.train`` on first use, as the package does for the embedded default.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from saeinverse.models.tiny import (  # noqa: F401
    CHARACTERS,
    SPECIAL_TOKENS,
    START_TOKEN,
    TINY_MODEL_NAME,
    TINY_VOCAB,
    char_tokenizer,
    tiny_model,
    tiny_model_config,
    tiny_sae,
)

if TYPE_CHECKING:
    from saeinverse.config import Config

TINY_SAE_DIR = Path(__file__).resolve().parent / "fixtures" / "tiny_sae"
"""The tiny run's SAE (SAELens folder: cfg.json + sae_weights.safetensors), trained by the
package's trainer at ``TINY_SAE_TRAIN``; ``python -m tests.fixtures.make_tiny_sae`` remakes it."""

TINY_SAE_TRAIN: dict[str, Any] = {
    "hook_name": "blocks.0.hook_resid_post",
    "d_sae": 64,
    "k": 4,
    "training_tokens": 4096,
    "context_size": 32,
    "batch_size_tokens": 256,
}
"""``sae.train`` of the tiny run: what the saved SAE was trained with, and what a run that names
no SAE trains on first use."""

_TINY: dict[str, Any] = {
    "model": {"name": TINY_MODEL_NAME},
    "sae": {"path": str(TINY_SAE_DIR), "train": TINY_SAE_TRAIN},
    "data": {
        "n_prompts": 30,
        "max_length": 24,
        "filtering": {"sparsity_max": 0.9, "entropy_threshold_low": 0.0},
    },
    "clustering": {"hdbscan": {"min_cluster_size": 3}, "selection": {"max_features": 2}},
    "optimization": {
        "length": 4,
        "max_steps": 8,
        "refine_steps": 2,
        "reference_tokens": 2000,
    },
    "explanation": {
        "judge": False,
        "fit_sentence": False,
        "heldout_prompts": 0,
        "explain_prompts": 0,
        "n_heldout": 10,
        "n_bootstrap": 100,
    },
}


def merged(base: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``changes`` merged in, dict by dict (a non-dict value replaces)."""
    out = copy.deepcopy(dict(base))
    for key, value in changes.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def tiny_overrides(**changes: Any) -> dict[str, Any]:
    """The tiny run's nested overrides, with ``changes`` (by section) merged in."""
    return merged(_TINY, changes)


def tiny_config(**changes: Any) -> Config:
    """The tiny run's validated config, with ``changes`` (by section) merged in."""
    from saeinverse.config import get_default_config, update_config

    return update_config(get_default_config(), tiny_overrides(**changes))


def cli_items(overrides: Mapping[str, Any], prefix: str = "") -> list[str]:
    """``KEY=VALUE`` items (values as YAML reads them back) for every leaf of ``overrides``."""
    items = []
    for key, value in overrides.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            items += cli_items(value, dotted + ".")
        elif isinstance(value, str) and yaml.safe_load(value) == value:
            items.append(f"{dotted}={value}")
        else:
            items.append(f"{dotted}={json.dumps(value)}")
    return items


def tiny_run_args(**changes: Any) -> list[str]:
    """The tiny run as CLI ``KEY=VALUE`` items, with ``changes`` (by section) merged in."""
    return cli_items(tiny_overrides(**changes))


TINY_RUN = tiny_run_args()
"""``saeinverse run`` items of the tiny run (the saved SAE)."""
TINY_RUN_TRAINING = [item for item in TINY_RUN if not item.startswith("sae.path=")]
"""The tiny run naming no SAE: the default one (``TINY_SAE_TRAIN``) is trained on first use."""
