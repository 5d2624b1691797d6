"""Every range check of the config, in one table by dotted key (``RANGES``), plus the pairs of
keys that must be ordered (``ORDERED``) and the keys that only one choice of another key reads
(``USED_ONLY_WITH``). ``update_config`` applies them, so a config that exists is a config whose
values are in range and whose every setting has an effect.
"""

from __future__ import annotations

from saeinverse.config.tree import Bound, Section, above, at_least, between, flatten
from saeinverse.errors import ConfigError

RANGES: dict[str, Bound] = {
    "seed": between(0, 2**32 - 1),
    "hardware.threads": at_least(1),
    "model.n_ctx": at_least(2),
    "sae.train.d_sae": at_least(1),
    "sae.train.k": at_least(1),
    "sae.train.training_tokens": at_least(1),
    "sae.train.context_size": at_least(2),
    "sae.train.batch_size_tokens": at_least(1),
    "sae.train.lr": above(0),
    "data.n_prompts": at_least(1),
    "data.n_tokens": at_least(1),
    "data.max_length": at_least(2),
    "data.batch_size": at_least(1),
    "data.top_k_exemplars": at_least(1),
    "data.context_window": at_least(0),
    "data.histogram_bins": at_least(1),
    "data.filtering.sparsity_min": between(0, 1),
    "data.filtering.sparsity_max": between(0, 1),
    "data.filtering.entropy_threshold_low": between(0, 1),
    "data.filtering.entropy_threshold_high": between(0, 1),
    "data.filtering.min_token_entropy": at_least(0),
    "data.filtering.max_positional_share": between(0, 1),
    "data.filtering.positional_window": at_least(1),
    "clustering.umap.n_components": at_least(0),
    "clustering.umap.n_neighbors": at_least(2),
    "clustering.umap.min_dist": at_least(0),
    "clustering.hdbscan.min_cluster_size": at_least(2),
    "clustering.hdbscan.min_samples": at_least(1),
    "clustering.dbscan.eps": above(0),
    "clustering.dbscan.min_samples": at_least(1),
    "clustering.kmeans.n_clusters": at_least(1),
    "clustering.selection.features_per_cluster": at_least(1),
    "clustering.selection.feature_ids": at_least(0),
    "clustering.selection.max_features": at_least(1),
    "optimization.length": at_least(1),
    "optimization.max_length": at_least(0),
    "optimization.max_steps": at_least(0),
    "optimization.lr": above(0),
    "optimization.selectivity_weight": at_least(0),
    "optimization.embedding_distance_weight": at_least(0),
    "optimization.patience": at_least(1),
    "optimization.refine_steps": at_least(0),
    "optimization.refine_candidates": at_least(1),
    "optimization.merge_swaps": at_least(0),
    "optimization.fluency_weight": at_least(0),
    "optimization.refine_top_k": at_least(1),
    "optimization.fluency_candidates": at_least(1),
    "optimization.fluency_target": at_least(0),
    "optimization.fluency_quantile": between(0, 1),
    "optimization.fluency_windows": at_least(300),
    "optimization.fluent_share": between(0, 1),
    "optimization.population": at_least(1),
    "optimization.beam_width": at_least(0),
    "optimization.beam_proposals": at_least(2),
    "optimization.reference_tokens": at_least(1),
    "optimization.pareto_size": at_least(1),
    "optimization.max_sequences": at_least(1),
    "explanation.max_new_tokens": at_least(1),
    "explanation.n_heldout": at_least(1),
    "explanation.n_exemplars": at_least(1),
    "explanation.n_decile_samples": at_least(0),
    "explanation.n_top_tokens": at_least(1),
    "explanation.context_window": at_least(0),
    "explanation.request_timeout": above(0),
    "explanation.max_retries": at_least(0),
    "explanation.batch_size": at_least(1),
    "explanation.heldout_prompts": at_least(0),
    "explanation.explain_prompts": at_least(0),
    "explanation.n_bootstrap": at_least(100),
    "scale.workers": at_least(1),
    "scale.gpus_per_worker": at_least(0),
    "scale.threads_per_worker": at_least(1),
    "scale.shard_prompts": at_least(1),
    "scale.feature_batch": at_least(1),
}
"""Every range check of the config, by dotted key (a list value: each item). Checked by
``update_config``, so a config that exists is a config whose values are in range."""

ORDERED: list[tuple[str, str]] = [
    ("data.filtering.sparsity_min", "data.filtering.sparsity_max"),
    ("data.filtering.entropy_threshold_low", "data.filtering.entropy_threshold_high"),
]
"""Pairs of keys whose first value must not exceed the second."""


USED_ONLY_WITH: dict[str, tuple[tuple[str, ...], str]] = {
    "explanation.base_url": (("explanation.explainer", "explanation.scorer"), "openai"),
    "explanation.api_model": (("explanation.explainer", "explanation.scorer"), "openai"),
}
"""Keys that have an effect only when one of the given keys has the given value (checked when
set, i.e. not None)."""


def check_ranges(config: Section) -> None:
    """Raise ``ConfigError`` for the first value of ``config`` outside its range."""
    prefix = getattr(config, "_section_path", "")
    values = flatten(config, prefix)
    for key, bound in RANGES.items():
        if key not in values:
            continue
        value = values[key]
        items = value if isinstance(value, list | tuple) else [value]
        for item in items:
            if not bound.holds(item):
                raise ConfigError(f"config key {key} must be {bound.describe()}, got {item!r}")
    for low_key, high_key in ORDERED:
        if low_key in values and high_key in values and values[low_key] > values[high_key]:
            raise ConfigError(
                f"config key {low_key} ({values[low_key]!r}) must not exceed "
                f"{high_key} ({values[high_key]!r})"
            )
    for key, (users, value) in USED_ONLY_WITH.items():
        present = [u for u in users if u in values]
        if values.get(key) is not None and present and value not in [values[u] for u in present]:
            choice = ", ".join(f"{u}={values[u]!r}" for u in present)
            raise ConfigError(
                f"config key {key} has no effect with {choice}: only "
                + " or ".join(f"{u}={value}" for u in users)
                + " uses it"
            )
