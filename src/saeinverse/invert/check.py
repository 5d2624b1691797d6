"""The check: every prompt a search produced, re-scored by fresh forwards, becomes a record.

Per feature, the projected prompt, every prompt a refinement row accepted (spread over its
path) or put on its front, each row's final prompt and the most active candidate it screened,
the beam's final prompts and the feature's exemplar windows are re-scored: the activation by a
forward to the SAE's hook, the cross-entropy (nats per byte) by a full forward. The **front** is
their Pareto set, the **headline** the most active of them at or below the real-text bound, the
**unconstrained best** the most active of all, and the **exemplar window** the most active
exemplar window within the bound (which the headline, chosen among the same prompts, can never
be under).
"""

from __future__ import annotations

from typing import Any

import torch

from saeinverse.invert.cost import Cost
from saeinverse.invert.fluency import Fluency
from saeinverse.invert.front import ParetoPoint, best_within, spread, update_pareto
from saeinverse.invert.project import score_prompts
from saeinverse.invert.result import Inversion


def _decode(model, ids: list[int]) -> str:
    tokenizer = getattr(model, "tokenizer", None)
    return tokenizer.decode(ids) if tokenizer is not None else " ".join(map(str, ids))


def _candidates(i, soft, refined, owners, size) -> list[list[int]]:
    """The prompts of feature ``i`` worth re-scoring: projected, accepted, front and final
    prompts, and each row's most active screened candidate."""
    prompts = [soft.best_ids[i].tolist()]
    for row, owner in enumerate(owners):
        if owner != i:
            continue
        accepted = [ids for ids, _ in refined.accepted[row]]
        prompts += spread(accepted, size) + [p.ids for p in refined.front[row]]
        prompts.append(refined.ids[row].tolist())
        if refined.best_seen and refined.best_seen[row] is not None:
            prompts.append(refined.best_seen[row])
    unique: dict[tuple[int, ...], list[int]] = {}
    for p in prompts:
        unique.setdefault(tuple(p), p)
    return list(unique.values())


def checked_records(
    model,
    target,
    ids,
    maxima,
    references,
    soft,
    refined,
    owners,
    names,
    s,
    bound,
    ref_tokens,
    screened,
    windows,
    beams,
) -> list[Inversion]:
    """Re-score every candidate prompt (and each feature's beam prompts and exemplar windows)
    with fresh forwards and build the records (see the module docstring); ``names`` are the
    refinement rows' trajectory names."""
    n = len(ids)
    cost = Cost.of(target, s.length)
    searched = [_candidates(i, soft, refined, owners, s.pareto_size) for i in range(n)]
    per_feature = []
    for i, found in enumerate(searched):
        for extra in (beams[i], windows[i]):
            found += [w for w in extra if w not in found]
        per_feature.append(found)
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
        keep = [best.ids, *([headline.ids] if headline else []), *best_within(points, (bound.p90,))]
        front = update_pareto([], points, s.pareto_size, keep=keep)
        rows = [r for r, o in enumerate(owners) if o == i]
        passes = {
            "soft": soft.forward_passes[i],
            "refine": sum(refined.forward_passes[r] for r in rows) + screened[i],
            "check": count * (cost.sequence + cost.full),  # activation, then cross-entropy
        }
        trajectory = {
            "soft_objective": soft.trajectory[i]["objective"],
            "soft_activation": soft.trajectory[i]["activation"],
        }
        for r in rows:
            name = names[r]
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
                forward_passes=round(sum(passes.values()), 2),
                forward_passes_by_stage={k: round(v, 2) for k, v in passes.items()},
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
