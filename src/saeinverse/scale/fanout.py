"""Inversion and explanation fanned out in batches of ``scale.feature_batch``: over Ray workers,
or (``pool``: ``saeinverse.scale.local.LocalPool``) in this process, one batch after another.

Each batch is the local stage function on those features (``optimize_features``,
``generate_explanations``); results are concatenated in the order of the feature ids.

What depends on the batching: inversion draws each feature's randomness from its own stream
(seed and feature id), so a feature gets the same start alone or in a batch; the batched
forward passes may still differ from a lone one in float32 rounding, as may a worker's thread
count (``scale.threads_per_worker``) from the local process's, which can tip a discrete token
choice (tested: equal to a local one-thread run on the tiny model). Explanations are per feature,
except the shuffled baseline, which pairs each feature with another feature *of its batch*:
with more features than ``scale.feature_batch`` the baseline partners differ from one local
batch (each still a different feature's explanation). ``whole_when_scored`` (the local engine)
keeps the baseline as one call: when explanations are scored, all features form one unit.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from saeinverse.config import Config, update_config
from saeinverse.scale.engine import Unit, UnitStore, WorkerPool, plan_hash, run_units, split
from saeinverse.scale.sharded import ensure_default_sae

logger = logging.getLogger(__name__)


PER_FEATURE = ("dataset_max", "reference_max", "exemplar_tokens")
"""``optimize_features`` arguments given per feature: each batch gets its features' entries."""


def invert_fanned(
    config: Config,
    folder: str | Path,
    feature_ids: Sequence[int],
    *,
    progress: bool = True,
    on_unit: Callable[[WorkerPool, int], None] | None = None,
    pool: Any = None,
    **invert_kwargs: Any,
):
    """``optimize_features(feature_ids, **invert_kwargs)`` on Ray workers; one ``Inversion`` per
    id, in order. Finished batches are saved under ``<folder>/units/``.

    ``dataset_max``, ``reference_max`` and ``exemplar_tokens`` are read per feature (dicts by id,
    tensors / lists over all features, or for ``exemplar_tokens`` a list aligned with the ids);
    the other keyword arguments (``seed``: ``config.seed`` by default) go to every batch as they
    are; the settings are ``config.optimization``. Without a ``fluency_bound`` one worker
    measures the default bound once and every batch uses it. ``pool``: see ``run_units``.
    """
    from saeinverse.invert import load_inversions, save_inversions
    from saeinverse.invert.result import INVERSIONS_FILE

    ids = [int(f) for f in feature_ids]
    invert_kwargs.pop("progress", None)  # the driver's bar stands for the workers'
    invert_kwargs.setdefault("seed", config.seed)
    per_feature = {
        key: _by_id(invert_kwargs.pop(key), ids, aligned=key == "exemplar_tokens")
        for key in PER_FEATURE
        if invert_kwargs.get(key) is not None
    }
    units = [
        Unit(i, len(b), (b, {**invert_kwargs, **_subsets(per_feature, b)}))
        for i, b in enumerate(split(ids, config.scale.feature_batch))
    ]
    plan = plan_hash(
        "invert", config.optimization.to_dict(), ids, per_feature,
        {k: getattr(v, "to_dict", lambda v=v: v)() for k, v in invert_kwargs.items()},
        *_model_part(config, pool),
    )  # fmt: skip
    store = UnitStore(folder, plan, "batch", INVERSIONS_FILE, save_inversions, load_inversions)
    if pool is None:  # a local pool holds its models already
        ensure_default_sae(config)

    def with_bound(pool: WorkerPool) -> tuple:
        if invert_kwargs.get("fluency_bound") is None:
            exclude_bos = bool(invert_kwargs.get("exclude_bos", True))
            seed = int(invert_kwargs["seed"])
            bound = pool.call("fluency_bound", config, exclude_bos, seed)
            for unit in units:
                unit.args[1]["fluency_bound"] = bound
        return ()

    results = run_units(
        config, store, units, "invert", shared=with_bound,
        desc="invert", unit_name="feature", progress=progress, on_unit=on_unit, pool=pool,
    )  # fmt: skip
    return [record for batch in results for record in batch]


def explain_fanned(
    config: Config,
    folder: str | Path,
    targets: Any,
    *,
    stats: Any = None,
    inversions: Sequence[Any] | None = None,
    progress: bool = True,
    on_unit: Callable[[WorkerPool, int], None] | None = None,
    pool: Any = None,
    whole_when_scored: bool = False,
):
    """``generate_explanations(targets)`` on Ray workers; one result per feature, in order.

    ``targets``: feature ids, a ``Selection`` or ``Inversion`` records; ``stats`` is put in
    Ray's object store once and read by every batch. ``pool``: see ``run_units``;
    ``whole_when_scored``: one unit of all features when ``explanation.score`` is on (the
    shuffled baseline then pairs features across the whole set, as one local call does).
    """
    from saeinverse.explain import load_explanations, save_explanations
    from saeinverse.explain.stage import EXPLANATIONS_FILE, feature_ids_of
    from saeinverse.invert import Inversion

    ids = feature_ids_of(targets)
    if inversions is None and isinstance(targets, Sequence):
        inversions = [t for t in targets if isinstance(t, Inversion)]
    by_id = {int(inv.feature_id): inv for inv in inversions or []}
    size = config.scale.feature_batch
    if whole_when_scored and config.explanation.score:
        size = max(1, len(ids))
    units = [
        Unit(i, len(b), (b, [by_id[f] for f in b if f in by_id]))
        for i, b in enumerate(split(ids, size))
    ]
    stats_key = None if stats is None else _stats_digest(stats)
    plan = plan_hash(
        "explain",
        config.explanation.to_dict(),
        ids,
        sorted((f, inv.refined_tokens) for f, inv in by_id.items()),
        stats_key,
        size,
        *_model_part(config, pool),
    )
    store = UnitStore(
        folder, plan, "batch", EXPLANATIONS_FILE, save_explanations, load_explanations
    )
    if pool is None:
        ensure_default_sae(config)
    results = run_units(
        config, store, units, "explain",
        shared=lambda pool: (pool.put(stats),),
        desc="explain", unit_name="feature", progress=progress, on_unit=on_unit, pool=pool,
    )  # fmt: skip
    return [record for batch in results for record in batch]


def _stats_digest(stats: Any) -> str:
    """A digest of the statistics explanations read (so new statistics make a new plan)."""
    import hashlib

    digest = hashlib.sha256(f"{stats.n_tokens} {stats.n_prompts}".encode())
    for tensor in (stats.firing_count, stats.max_activation, stats.exemplar_prompt):
        digest.update(tensor.contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def _by_id(values: Any, ids: list[int], aligned: bool) -> dict[int, Any]:
    """A dict by feature id from a dict, a tensor / list over all features, or an aligned list."""
    if isinstance(values, Mapping):
        return {int(k): _plain(v) for k, v in values.items()}
    values = values.tolist() if hasattr(values, "tolist") else list(values)
    if aligned and len(values) == len(ids):
        return {f: _plain(v) for f, v in zip(ids, values, strict=True)}
    return {f: _plain(values[f]) for f in ids}


def _plain(value: Any) -> Any:
    return value.tolist() if hasattr(value, "tolist") else value


def _subsets(per_feature: Mapping[str, Mapping[int, Any]], ids: Sequence[int]) -> dict[str, Any]:
    return {key: {f: v[f] for f in ids if f in v} for key, v in per_feature.items()}


def _model_part(config: Config, pool: Any) -> tuple[Any, ...]:
    from saeinverse.models.from_config import sae_identity

    return (
        config.seed,
        config.scale.feature_batch,
        config.model.to_dict(),
        sae_identity(config),
        config.hardware.dtype,
        getattr(pool, "identity", None),  # a local pool's models (weights passed in)
    )


def inverter(config: Config, folder: str | Path, pool: Any = None) -> Callable[..., list]:
    """``optimize_features`` with its signature, run by ``invert_fanned`` (units in ``folder``).

    The model and SAE arguments are not used (each worker, or ``pool``, has its own from
    ``config``); an ``opt_cfg`` other than ``config.optimization`` replaces it.
    """

    def invert(model, sae, feature_ids, opt_cfg=None, **kwargs):
        del model, sae
        return invert_fanned(
            _with_section(config, "optimization", opt_cfg),
            folder,
            feature_ids,
            pool=pool,
            **kwargs,
        )

    return invert


def explainer(
    config: Config, folder: str | Path, pool: Any = None, whole_when_scored: bool = False
) -> Callable[..., list]:
    """``generate_explanations`` with its signature, run by ``explain_fanned`` (units in ``folder``).

    The model, SAE and explanation LM arguments are not used (each worker, or ``pool``, has its
    own from ``config``); an ``explanation_cfg`` other than ``config.explanation`` replaces it.
    """

    def explain(model, sae, feature_results, lm=None, tokenizer=None, explanation_cfg=None, *,
                stats=None, inversions=None, seed=None, progress=True, **unused):  # fmt: skip
        del model, sae, lm, tokenizer
        if unused:
            raise TypeError(f"the Ray engine cannot pass {sorted(unused)} to its workers")
        cfg = _with_section(config, "explanation", explanation_cfg)
        if seed is not None and seed != cfg.seed:
            cfg = update_config(cfg, {"seed": int(seed)})
        return explain_fanned(
            cfg, folder, feature_results, stats=stats, inversions=inversions, progress=progress,
            pool=pool, whole_when_scored=whole_when_scored,
        )  # fmt: skip

    return explain


def _with_section(config: Config, name: str, section: Any) -> Config:
    if section is None or section is config[name]:
        return config
    values = section.to_dict() if hasattr(section, "to_dict") else dict(section)
    return update_config(config, {name: values})
