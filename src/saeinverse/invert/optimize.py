"""The inversion stage: soft prompts → projection → discrete refinement → checked ``Inversion``s.

``optimize_features`` inverts a batch of features together (each row its own feature), which is
what makes inversion affordable: one forward of 16 prompts costs far less than 16 forwards of
one. Its unit of work is a pure function of (model, SAE, feature ids, settings, seed), so
batches of features can be fanned out to other workers and their records concatenated.
Randomness is per feature (seeded by ``seed`` and the feature id), so a feature gets the same
start whether it is inverted alone or in a batch.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import types
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from saeinverse.config import OptimizationConfig, Section
from saeinverse.errors import ConfigError
from saeinverse.invert.objective import FeatureTarget, allowed_token_mask
from saeinverse.invert.project import Vocabulary, score_prompts
from saeinverse.invert.refine import Fluency, ParetoPoint, refine, update_pareto
from saeinverse.invert.result import Inversion
from saeinverse.invert.soft import initial_ids, optimize_soft

logger = logging.getLogger(__name__)


def resolve_settings(opt_cfg: Any) -> types.SimpleNamespace:
    """One flat view of the inversion settings from a section, a full config or a plain dict."""
    if opt_cfg is None:
        opt_cfg = OptimizationConfig()
    if isinstance(opt_cfg, Section) and not isinstance(opt_cfg, OptimizationConfig):
        opt_cfg = opt_cfg.optimization  # a full Config
    values = {f.name: f.default for f in dataclasses.fields(OptimizationConfig)}
    if isinstance(opt_cfg, Section):
        values |= {name: getattr(opt_cfg, name) for name in values}
    elif isinstance(opt_cfg, Mapping):
        unknown = sorted(set(opt_cfg) - set(values))
        if unknown:
            raise ConfigError(
                f"unknown optimization key(s) {unknown}; valid keys: {', '.join(values)}"
            )
        values |= dict(opt_cfg)
    else:
        raise ConfigError(
            f"opt_cfg must be config.optimization or a dict, got {type(opt_cfg).__name__}"
        )
    settings = types.SimpleNamespace(**values)
    _validate(settings)
    return settings


def _validate(s: types.SimpleNamespace) -> None:
    for name in ("length", "refine_candidates", "refine_top_k", "patience"):
        if int(getattr(s, name)) < 1:
            raise ConfigError(f"optimization.{name} must be ≥ 1, got {getattr(s, name)!r}")
    for name in ("max_steps", "refine_steps"):
        if int(getattr(s, name)) < 0:
            raise ConfigError(f"optimization.{name} must be ≥ 0, got {getattr(s, name)!r}")
    if s.position not in ("max", "last"):
        raise ConfigError(f"optimization.position must be 'max' or 'last', got {s.position!r}")
    if s.init not in ("random", "exemplar"):
        raise ConfigError(f"optimization.init must be 'random' or 'exemplar', got {s.init!r}")


def _check_feature_ids(feature_ids: Sequence[int], d_sae: int) -> list[int]:
    ids = [int(f) for f in feature_ids]
    bad = [f for f in ids if not 0 <= f < d_sae]
    if bad:
        raise ConfigError(
            f"feature id(s) {bad} out of range: this SAE has {d_sae} features, valid ids 0..{d_sae - 1}"
        )
    return ids


def _per_feature(values: Any, feature_ids: list[int], what: str) -> list[Any]:
    """A per-feature list from a dict keyed by feature id, a tensor / list indexed by id, or None."""
    if values is None:
        return [None] * len(feature_ids)
    if isinstance(values, Mapping):
        return [values.get(f) for f in feature_ids]
    if isinstance(values, torch.Tensor):
        values = values.tolist()
    if what == "exemplar_tokens" and len(values) == len(feature_ids):
        return list(values)
    return [values[f] for f in feature_ids]


def _generator(seed: int, feature_id: int) -> torch.Generator:
    return torch.Generator().manual_seed((int(seed) * 1_000_003 + int(feature_id)) % (2**63))


def _decode(model, ids: list[int]) -> str:
    tokenizer = getattr(model, "tokenizer", None)
    return tokenizer.decode(ids) if tokenizer is not None else " ".join(map(str, ids))


# ----------------------------------------------------------------------------- public API


def optimize_features(
    model,
    sae,
    feature_ids: Sequence[int],
    opt_cfg: Any = None,
    *,
    seed: int = 0,
    dataset_max: Mapping[int, float] | Sequence[float] | torch.Tensor | None = None,
    exemplar_tokens: Mapping[int, Sequence[int]] | Sequence[Sequence[int]] | None = None,
    progress: bool = True,
) -> list[Inversion]:
    """Invert every feature in ``feature_ids`` in one batch; one ``Inversion`` per feature, in order.

    ``opt_cfg`` is ``config.optimization`` (or a dict of its keys). ``dataset_max`` is indexed by
    feature id (dict, or a tensor / list over all features); ``exemplar_tokens`` gives each
    feature's top exemplar tokens ending at its peak (dict by id, or a list aligned with
    ``feature_ids``) and is required by ``init='exemplar'``. Runs on the model's device.
    """
    s = resolve_settings(opt_cfg)
    ids = _check_feature_ids(feature_ids, int(sae.cfg.d_sae))
    if not ids:
        return []
    maxima = _per_feature(dataset_max, ids, "dataset_max")
    exemplars = (
        _per_feature(exemplar_tokens, ids, "exemplar_tokens") if s.init == "exemplar" else None
    )
    if exemplars is not None and any(not e for e in exemplars):
        missing = [f for f, e in zip(ids, exemplars, strict=True) if not e]
        raise ConfigError(
            f"optimization.init='exemplar' needs exemplar tokens; none for features {missing}"
        )

    start = time.perf_counter()
    target = FeatureTarget(model, sae, s.position)
    vocab = Vocabulary(model, allowed_token_mask(model))
    fids = torch.tensor(ids, device=target.device)
    generators = [_generator(seed, f) for f in ids]
    refine_bound = int(s.refine_steps)
    if s.max_sequences is not None:  # the budget ends the search first
        refine_bound = min(refine_bound, int(s.max_sequences) // (1 + int(s.refine_candidates)))
    bar = tqdm(
        total=int(s.max_steps) + refine_bound,
        unit="step",
        desc=f"invert {len(ids)} features",
        disable=not progress,
        leave=False,
    )
    try:
        init = initial_ids(vocab, int(s.length), generators, exemplars)
        soft = optimize_soft(
            target, vocab, fids, init,
            max_steps=int(s.max_steps), lr=float(s.lr), patience=int(s.patience),
            project=bool(s.project_in_loop), selectivity_weight=float(s.selectivity_weight),
            embedding_distance_weight=float(s.embedding_distance_weight), progress=bar,
        )  # fmt: skip
        scale = [
            m if m and m > 0 else max(1.0, a)
            for m, a in zip(maxima, soft.soft_activation, strict=True)
        ]
        budget = None if s.max_sequences is None else int(s.max_sequences)
        refined = refine(
            target, vocab, fids, soft.best_ids, generators,
            steps=int(s.refine_steps), candidates=int(s.refine_candidates), top_k=int(s.refine_top_k),
            patience=int(s.patience), selectivity_weight=float(s.selectivity_weight),
            fluency_weight=float(s.fluency_weight), fluency_candidates=int(s.fluency_candidates),
            fluency_target=None if s.fluency_target is None else float(s.fluency_target),
            scale=scale, max_sequences=None if budget is None else [budget - p for p in soft.forward_passes],
            pareto_size=int(s.pareto_size), progress=bar,
        )  # fmt: skip
    finally:
        bar.close()
    records = _checked_records(model, sae, target, vocab, ids, maxima, soft, refined, s)
    seconds = (time.perf_counter() - start) / len(ids)
    for record in records:
        record.seconds = seconds
    logger.info(
        "inverted %d features in %.1f s: refined activation median %.3g",
        len(ids), seconds * len(ids), float(torch.tensor([r.refined_activation for r in records]).median()),
    )  # fmt: skip
    return records


def optimize_feature(
    model,
    sae,
    feature_id: int,
    opt_cfg: Any = None,
    *,
    seed: int = 0,
    dataset_max: float | None = None,
    exemplar_tokens: Sequence[int] | None = None,
    progress: bool = False,
) -> Inversion:
    """Invert one feature (``optimize_features`` with a batch of one)."""
    (record,) = optimize_features(
        model, sae, [feature_id], opt_cfg, seed=seed,
        dataset_max=None if dataset_max is None else {int(feature_id): float(dataset_max)},
        exemplar_tokens=None if exemplar_tokens is None else [list(exemplar_tokens)],
        progress=progress,
    )  # fmt: skip
    return record


# ----------------------------------------------------------------------------- the check


def _checked_records(model, sae, target, vocab, ids, maxima, soft, refined, s) -> list[Inversion]:
    """Re-score every reported hard prompt with a fresh forward and build the records."""
    n = len(ids)
    projected = [soft.best_ids[i].tolist() for i in range(n)]
    final = [refined.ids[i].tolist() for i in range(n)]
    prompts: list[list[int]] = []
    owners: list[int] = []
    for i in range(n):
        for p in [projected[i], final[i], *[pt.ids for pt in refined.pareto[i]]]:
            prompts.append(p)
            owners.append(i)
    acts = score_prompts(model, sae, [ids[o] for o in owners], prompts, s.position, target=target)
    fluency = Fluency(target, vocab.allowed, 1)
    ce = fluency.cross_entropy(torch.tensor(prompts, device=target.device)).tolist()
    checks = [0] * n
    for o in owners:
        checks[o] += 2  # one activation forward, one full forward for the cross-entropy
    records = []
    cursor = 0
    for i in range(n):
        count = 2 + len(refined.pareto[i])
        points = [ParetoPoint(prompts[j], acts[j], ce[j]) for j in range(cursor, cursor + count)]
        front = update_pareto([], points, int(s.pareto_size), keep=[final[i]])
        passes = {
            "soft": soft.forward_passes[i],
            "refine": refined.forward_passes[i],
            "check": checks[i],
        }
        records.append(
            Inversion(
                feature_id=ids[i],
                soft_activation=float(soft.soft_activation[i]),
                projected_tokens=projected[i],
                projected_text=_decode(model, projected[i]),
                projected_activation=points[0].activation,
                refined_tokens=final[i],
                refined_text=_decode(model, final[i]),
                refined_activation=points[1].activation,
                refined_cross_entropy=points[1].cross_entropy,
                dataset_max=None if maxima[i] is None else float(maxima[i]),
                position=s.position,
                pareto=[
                    {
                        "tokens": p.ids,
                        "text": _decode(model, p.ids),
                        "activation": p.activation,
                        "cross_entropy": p.cross_entropy,
                    }
                    for p in front
                ],
                forward_passes=sum(passes.values()),
                forward_passes_by_stage=passes,
                trajectory={
                    "soft_objective": soft.trajectory[i]["objective"],
                    "soft_activation": soft.trajectory[i]["activation"],
                    "refine_activation": refined.trajectory[i]["activation"],
                    "refine_cross_entropy": refined.trajectory[i]["cross_entropy"],
                },
            )
        )
        cursor += count
    return records
