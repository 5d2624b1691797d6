"""The inversion stage: soft prompts → projection → a population of refinement rows → checked records.

``optimize_features`` inverts a batch of features together (each row its own feature), which is
what makes inversion affordable: one forward of 16 prompts costs far less than 16 forwards of
one. Per feature, the search is:

1. a soft prompt (``soft.optimize_soft``, PEZ-style), whose best projected prompt starts
2. two refinement rows run in the same batch (``refine.refine``): an **unconstrained** row
   (activation only), starting from the soft prompt, and, with ``fluency_weight > 0``, a
   **fluent** row (activation with a cross-entropy hinge at ``fluency_target``, by default the
   real-text bound), starting from real text: of ``FLUENT_START_SCREEN`` random windows among
   those the bound was measured on whose cross-entropy is within the hinge, the one closest to
   firing (highest key; the screening forwards count against the row). Without measured windows,
   or with ``fluent_start='soft'``, it starts from the soft prompt too; ``fluent_start='both'``
   runs two fluent rows, one from each start, with half of ``fluent_share`` each;
3. a check: every prompt either row accepted or put on its front, and the projected prompt, is
   re-scored by a fresh forward (activation, and the model's own cross-entropy); the **front** is
   their Pareto set, the **headline** the most active of them at or below the bound, and the
   **unconstrained best** the most active of all.

**Budget.** ``max_sequences`` bounds the whole search of a feature: the soft stage
(``max_steps`` + 1 sequences) and every refinement row (the rest, split by ``fluent_share``). A
config whose soft stage and one refinement step per row do not fit is refused with a
``ConfigError`` (the check's re-scoring forwards are counted apart, as ``check``).

**Independence.** Every random draw comes from a generator seeded by (``seed``, feature id,
stream), every stopping rule is per row, and the prefix sharing does not depend on the batch: a
feature gets the same inversion whether it is inverted alone or with others (up to the last bits
of batched matrix products), so batches can be fanned out to workers and concatenated.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from saeinverse.config import OptimizationConfig, as_section
from saeinverse.errors import ConfigError
from saeinverse.invert.fluency import Fluency, FluencyBound, default_bound
from saeinverse.invert.front import ParetoPoint, spread, update_pareto
from saeinverse.invert.objective import FeatureTarget, allowed_token_mask
from saeinverse.invert.project import Vocabulary, score_prompts
from saeinverse.invert.refine import Population, refine, start_cost, step_cost
from saeinverse.invert.result import Inversion
from saeinverse.invert.soft import initial_ids, optimize_soft
from saeinverse.invert.starts import (
    FLUENT,
    FLUENT_SOFT,
    FLUENT_START_SCREEN,
    FLUENT_STREAMS,
    SOFT,
    TRAJECTORY_NAMES,
    UNCONSTRAINED,
    fluent_starts,
    generator,
)

logger = logging.getLogger(__name__)


def _check_feature_ids(feature_ids: Sequence[int], d_sae: int) -> list[int]:
    ids = [int(f) for f in feature_ids]
    bad = [f for f in ids if not 0 <= f < d_sae]
    if bad:
        raise ConfigError(
            f"feature id(s) {bad} out of range: this SAE has {d_sae} features, valid ids 0..{d_sae - 1}"
        )
    return ids


def _per_feature(values: Any, feature_ids: list[int], aligned: bool = False) -> list[Any]:
    """A per-feature list from a dict keyed by feature id, a tensor / list indexed by id, or None.

    ``aligned``: a list as long as ``feature_ids`` is taken as aligned with it.
    """
    if values is None:
        return [None] * len(feature_ids)
    if isinstance(values, Mapping):
        return [values.get(f) for f in feature_ids]
    if isinstance(values, torch.Tensor):
        values = values.tolist()
    if aligned and len(values) == len(feature_ids):
        return list(values)
    return [values[f] for f in feature_ids]


def _decode(model, ids: list[int]) -> str:
    tokenizer = getattr(model, "tokenizer", None)
    return tokenizer.decode(ids) if tokenizer is not None else " ".join(map(str, ids))


# ----------------------------------------------------------------------------- the budget


@dataclass
class BudgetPlan:
    """How one feature's ``max_sequences`` is spent: soft steps, and each refinement row's share."""

    soft_steps: int
    rows: list[tuple[int, int | None]]
    """(stream, budget) per refinement row: ``UNCONSTRAINED`` / ``FLUENT`` and its sequences."""


def _from_text(s: OptimizationConfig) -> bool:
    """Whether the ``FLUENT`` row starts from real text (and pays for screening the windows)."""
    return s.fluent_start != "soft"


def plan_budget(s: OptimizationConfig, share_prefix: bool = True) -> BudgetPlan:
    """Split ``max_sequences`` between the soft stage and the refinement rows, or refuse it."""
    fluent = s.fluency_weight > 0
    shares = [(UNCONSTRAINED, 1.0 - s.fluent_share if fluent else 1.0)]
    if fluent and s.fluent_start == "both":
        shares += [(FLUENT, s.fluent_share / 2), (FLUENT_SOFT, s.fluent_share / 2)]
    elif fluent:
        shares.append((FLUENT, s.fluent_share))
    shares = [(stream, share) for stream, share in shares if share > 0]
    if s.max_sequences is None:
        return BudgetPlan(s.max_steps, [(stream, None) for stream, _ in shares])
    soft = s.max_steps + 1
    rest = s.max_sequences - soft
    n_fluent = min(s.fluency_candidates, s.refine_candidates)
    rows = []
    for stream, share in shares:
        is_fluent = stream in FLUENT_STREAMS
        screen = stream == FLUENT and _from_text(s)
        need = start_cost(is_fluent) + (FLUENT_START_SCREEN if screen else 0)
        if s.refine_steps > 0:
            need += step_cost(s.refine_candidates, n_fluent, is_fluent, share_prefix)
        budget = int(rest * share)
        if budget < need:
            kind = "fluent" if is_fluent else "unconstrained"
            raise ConfigError(
                f"optimization.max_sequences={s.max_sequences} cannot hold the search: the soft "
                f"stage takes max_steps + 1 = {soft} sequences and the {kind} row's share "
                f"({share:g} of the rest = {budget}) is under one refinement step ({need}); "
                f"raise max_sequences to at least {soft + int(need / share) + 1} or lower "
                "max_steps / refine_candidates"
            )
        rows.append((stream, budget))
    return BudgetPlan(s.max_steps, rows)


# ----------------------------------------------------------------------------- public API


def optimize_features(
    model,
    sae,
    feature_ids: Sequence[int],
    opt_cfg: Any = None,
    *,
    seed: int = 0,
    dataset_max: Mapping[int, float] | Sequence[float] | torch.Tensor | None = None,
    reference_max: Mapping[int, float] | Sequence[float] | torch.Tensor | None = None,
    reference_tokens: int | None = None,
    exemplar_tokens: Mapping[int, Sequence[int]] | Sequence[Sequence[int]] | None = None,
    exemplar_windows: Mapping[int, Sequence[Sequence[int]]] | None = None,
    fluency_bound: FluencyBound | None = None,
    exclude_bos: bool = True,
    progress: bool = True,
) -> list[Inversion]:
    """Invert every feature in ``feature_ids`` in one batch; one ``Inversion`` per feature, in order.

    ``opt_cfg`` is ``config.optimization``, the whole config, a dict of its keys, or None.
    ``dataset_max`` (the run's collection maximum) and ``reference_max`` (the maximum over
    ``reference_tokens`` corpus tokens, what ratios divide by) are indexed by feature id (dict,
    or a tensor / list over all features); ``exemplar_tokens`` gives each feature's top exemplar
    tokens ending at its peak (dict by id, or a list aligned with ``feature_ids``) and is
    required by ``init='exemplar'``. ``exemplar_windows`` gives each feature's top exemplar
    windows of ``length`` tokens (dict by id; ``inputs.exemplar_windows``): the fluent row starts
    from the best of them, and each is re-scored beside the search's prompts, so the headline is
    never below the best exemplar window within the bound. ``fluency_bound`` is the real-text
    bound (measured from the default corpus when not given); ``exclude_bos`` must be collection's
    ``data.exclude_bos``.
    """
    s = as_section(opt_cfg, OptimizationConfig)
    ids = _check_feature_ids(feature_ids, int(sae.cfg.d_sae))
    if not ids:
        return []
    plan = plan_budget(s)
    maxima = _per_feature(dataset_max, ids)
    references = _per_feature(reference_max, ids)
    windows = [
        [list(w) for w in ws or () if len(w) == s.length]
        for ws in _per_feature(exemplar_windows, ids)
    ]
    exemplars = None
    if s.init == "exemplar":
        if exemplar_tokens is None:
            raise ConfigError(
                "optimization.init='exemplar' needs exemplar tokens (exemplar_tokens); none given"
            )
        exemplars = _per_feature(exemplar_tokens, ids, aligned=True)
        missing = [f for f, e in zip(ids, exemplars, strict=True) if not e]
        if missing:
            logger.warning("no usable exemplar for features %s: they start at random", missing)

    start = time.perf_counter()
    target = FeatureTarget(model, sae, s.position, exclude_bos)
    vocab = Vocabulary(model, allowed_token_mask(model))
    bound = fluency_bound or default_bound(target, s, seed)
    fids = torch.tensor(ids, device=target.device)
    bar = tqdm(
        total=plan.soft_steps + s.refine_steps,
        unit="step",
        desc=f"invert {len(ids)} features",
        disable=not progress,
        leave=False,
    )
    try:
        init = initial_ids(vocab, s.length, [generator(seed, f, SOFT) for f in ids], exemplars)
        soft = optimize_soft(target, vocab, fids, init, s, max_steps=plan.soft_steps, progress=bar)
        scale = [
            r if r else m if m else max(1.0, a)
            for r, m, a in zip(references, maxima, soft.soft_activation, strict=True)
        ]
        owners = [i for i in range(len(ids)) for _ in plan.rows]
        streams = [stream for _ in ids for stream, _ in plan.rows]
        hinge = s.fluency_target if s.fluency_target is not None else bound.cross_entropy
        starts, screened = (
            fluent_starts(target, bound, hinge, ids, seed, windows)
            if FLUENT in streams and _from_text(s)
            else (None, [0] * len(ids))
        )
        init = soft.best_ids[owners].clone()
        budgets = [budget for _ in ids for _, budget in plan.rows]
        for row, (o, st) in enumerate(zip(owners, streams, strict=True)):
            if st == FLUENT and starts is not None:
                init[row] = starts[o]
                budgets[row] = None if budgets[row] is None else budgets[row] - screened[o]
        pop = Population(
            feature_ids=fids[owners],
            init_ids=init,
            generators=[generator(seed, ids[o], st) for o, st in zip(owners, streams, strict=True)],
            scale=[float(scale[o]) for o in owners],
            hinge=[hinge if st in FLUENT_STREAMS else None for st in streams],
            budget=budgets,
        )
        refined = refine(target, vocab, pop, s, progress=bar)
    finally:
        bar.close()
    if starts is None:
        screened = [0] * len(ids)
    records = _checked_records(model, target, ids, maxima, references, soft, refined, owners,
                               streams, s, bound, reference_tokens, screened, windows)  # fmt: skip
    seconds = (time.perf_counter() - start) / len(ids)
    for record in records:
        record.seconds = seconds
    logger.info(
        "inverted %d features in %.1f s: unconstrained median %.3g, headline within %.2f nats/byte "
        "for %d of %d",
        len(ids), seconds * len(ids),
        float(torch.tensor([r.refined_activation for r in records]).median()),
        bound.cross_entropy, sum(r.headline is not None for r in records), len(records),
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
    reference_max: float | None = None,
    reference_tokens: int | None = None,
    exemplar_tokens: Sequence[int] | None = None,
    fluency_bound: FluencyBound | None = None,
    exclude_bos: bool = True,
    progress: bool = False,
) -> Inversion:
    """Invert one feature (``optimize_features`` with a batch of one)."""
    f = int(feature_id)
    (record,) = optimize_features(
        model, sae, [f], opt_cfg, seed=seed,
        dataset_max=None if dataset_max is None else {f: float(dataset_max)},
        reference_max=None if reference_max is None else {f: float(reference_max)},
        reference_tokens=reference_tokens,
        exemplar_tokens=None if exemplar_tokens is None else [list(exemplar_tokens)],
        fluency_bound=fluency_bound, exclude_bos=exclude_bos, progress=progress,
    )  # fmt: skip
    return record


# ----------------------------------------------------------------------------- the check


def _candidates(i, soft, refined, owners, streams, size) -> list[list[int]]:
    """The prompts of feature ``i`` worth re-scoring: projected, accepted and front prompts."""
    prompts = [soft.best_ids[i].tolist()]
    for row, owner in enumerate(owners):
        if owner != i:
            continue
        accepted = [ids for ids, _ in refined.accepted[row]]
        prompts += spread(accepted, size) + [p.ids for p in refined.front[row]]
        prompts.append(refined.ids[row].tolist())
    unique: dict[tuple[int, ...], list[int]] = {}
    for p in prompts:
        unique.setdefault(tuple(p), p)
    return list(unique.values())


def _checked_records(
    model,
    target,
    ids,
    maxima,
    references,
    soft,
    refined,
    owners,
    streams,
    s,
    bound,
    ref_tokens,
    screened,
    windows,
) -> list[Inversion]:
    """Re-score every candidate prompt (and each feature's exemplar windows) with fresh forwards
    and build the records."""
    n = len(ids)
    searched = [_candidates(i, soft, refined, owners, streams, s.pareto_size) for i in range(n)]
    per_feature = [
        found + [w for w in windows[i] if w not in found] for i, found in enumerate(searched)
    ]
    flat = [p for prompts in per_feature for p in prompts]
    features = [ids[i] for i, prompts in enumerate(per_feature) for _ in prompts]
    acts = score_prompts(model, None, features, flat, s.position, target=target)
    ce = Fluency(target).cross_entropy(torch.tensor(flat, device=target.device)).tolist()
    records, cursor = [], 0
    for i in range(n):
        count = len(per_feature[i])
        points = [ParetoPoint(flat[j], acts[j], ce[j]) for j in range(cursor, cursor + count)]
        cursor += count
        best = max(points, key=lambda p: p.activation)
        within = [p for p in points if p.cross_entropy <= bound.cross_entropy and p.activation > 0]
        headline = max(within, key=lambda p: p.activation) if within else None
        exemplars = [p for p in within if p.ids in windows[i]]
        exemplar = max(exemplars, key=lambda p: p.activation) if exemplars else None
        keep = [best.ids] + ([headline.ids] if headline else [])
        front = update_pareto([], points, s.pareto_size, keep=keep)
        rows = [r for r, o in enumerate(owners) if o == i]
        passes = {
            "soft": soft.forward_passes[i],
            "refine": sum(refined.forward_passes[r] for r in rows) + screened[i],
            "check": 2 * count,  # one activation forward, one full forward per prompt
        }
        trajectory = {
            "soft_objective": soft.trajectory[i]["objective"],
            "soft_activation": soft.trajectory[i]["activation"],
        }
        for r in rows:
            name = TRAJECTORY_NAMES[streams[r]]
            trajectory[f"{name}_activation"] = refined.trajectory[r]["activation"]
            trajectory[f"{name}_cross_entropy"] = refined.trajectory[r]["cross_entropy"]
        records.append(
            Inversion(
                feature_id=ids[i],
                soft_activation=float(soft.soft_activation[i]),
                projected_tokens=points[0].ids,
                projected_text=_decode(model, points[0].ids),
                projected_activation=points[0].activation,
                refined_tokens=best.ids,
                refined_text=_decode(model, best.ids),
                refined_activation=best.activation,
                refined_cross_entropy=best.cross_entropy,
                dataset_max=None if maxima[i] is None else float(maxima[i]),
                position=s.position,
                pareto=[_point(model, p) for p in front],
                headline=None if headline is None else _point(model, headline),
                exemplar_window=None if exemplar is None else _point(model, exemplar),
                fluency_bound=bound.to_dict(),
                reference_max=None if references[i] is None else float(references[i]),
                reference_tokens=None if references[i] is None else ref_tokens,
                forward_passes=sum(passes.values()),
                forward_passes_by_stage=passes,
                trajectory=trajectory,
            )
        )
    return records


def _point(model, p: ParetoPoint) -> dict[str, Any]:
    return {
        "tokens": p.ids,
        "text": _decode(model, p.ids),
        "activation": p.activation,
        "cross_entropy": p.cross_entropy,
    }
