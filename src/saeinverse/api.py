"""The seed's notebook call for stages 1–2: collect (or reuse) statistics, filter, return arrays.

`collect_and_filter_data(model, sae, config["data"])` returns the prompts × kept-features matrix
of per-prompt maximum activations, the kept SAE feature ids, and the prompts (its rows).
With `cache_dir`, the `FeatureStats` and `FeatureSet` are saved there, and with
`data.use_cached_data` a saved `FeatureStats` is reused when its cache key matches: a hash of
the collection settings, the prompts, and the model's and SAE's identity (names, shapes and a
strided sample of every weight).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import Tensor

from saeinverse.collect.activations import collect_activations
from saeinverse.collect.stats import FeatureStats, read_stats_meta
from saeinverse.data.sources import load_prompts
from saeinverse.errors import ArtifactError
from saeinverse.filter import filter_features
from saeinverse.models.from_config import weights_fingerprint

if TYPE_CHECKING:
    from sae_lens import SAE
    from transformer_lens import HookedTransformer

logger = logging.getLogger(__name__)

_NOT_IN_KEY = ("filtering", "use_cached_data", "batch_size")
"""Data keys that do not change the collected statistics (filtering runs after collection)."""


def collect_and_filter_data(
    model: HookedTransformer,
    sae: SAE,
    data_cfg: Mapping[str, Any],
    *,
    seed: int = 0,
    prompts: Sequence[str] | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> tuple[Tensor, Tensor, list[str]]:
    """`(filtered_acts, original_indices, prompts)` as the seed's notebook returns them.

    - filtered_acts: Float[Tensor, "n_prompts n_features"], each prompt's max activation of each
      kept feature (dense).
    - original_indices: Int64[Tensor, "n_features"], the kept features' SAE ids.
    - prompts: the prompts, one per row (prompts too short to use are dropped).

    `prompts` defaults to `load_prompts(data_cfg, seed)`.
    """
    prompts = list(prompts) if prompts is not None else load_prompts(data_cfg, seed)
    stats = collect_or_load(
        model, sae, prompts, data_cfg, seed=seed, cache_dir=cache_dir, progress=progress
    )
    feature_set = filter_features(stats, data_cfg["filtering"])
    if cache_dir is not None:
        feature_set.save(cache_dir)
    return stats.prompt_feature_dense(feature_set.kept), feature_set.kept, list(stats.prompts)


def collect_or_load(
    model: HookedTransformer,
    sae: SAE,
    prompts: Sequence[str],
    data_cfg: Mapping[str, Any],
    *,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    progress: bool = True,
) -> FeatureStats:
    """`collect_activations`, reusing / saving the result in `cache_dir` (see module docstring)."""
    key = collection_key(model, sae, prompts, data_cfg)
    if cache_dir is not None and data_cfg["use_cached_data"]:
        meta = read_stats_meta(cache_dir) or {}
        if meta.get("cache_key") == key:
            try:
                stats = FeatureStats.load(cache_dir)
                logger.info("reusing the feature statistics in %s", cache_dir)
                return stats
            except ArtifactError as err:
                logger.warning("cached statistics unusable (%s): collecting again", err)
    stats = collect_activations(model, sae, prompts, data_cfg, seed=seed, progress=progress)
    stats.meta["cache_key"] = key
    if cache_dir is not None:
        stats.save(cache_dir)
    return stats


def collection_key(
    model: HookedTransformer, sae: SAE, prompts: Sequence[str], data_cfg: Mapping[str, Any]
) -> str:
    """A hash of what the collected statistics depend on."""
    settings = {k: data_cfg[k] for k in data_cfg if k not in _NOT_IN_KEY}
    digest = hashlib.sha256()
    digest.update(json.dumps(settings, sort_keys=True, default=str).encode())
    digest.update(json.dumps(list(prompts)).encode())
    digest.update(json.dumps([model.cfg.model_name, weights_fingerprint(model)]).encode())
    sae_cfg = {k: v for k, v in sae.cfg.to_dict().items() if k != "device"}
    digest.update(json.dumps([sae_cfg, weights_fingerprint(sae)], default=str).encode())
    return digest.hexdigest()[:16]
