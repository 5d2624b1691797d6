"""How evidence is drawn: which prompts explain a feature, which score it, and their activations.

For each feature, prompts from collection are chosen with the seed (``plan_feature``):

- **held-out positives**: up to ``n_heldout`` firing prompts, drawn across the deciles of the
  feature's per-prompt maximum (never more than half of its firing prompts);
- **held-out negatives**: ``n_heldout`` windows where the feature does not fire, from prompts
  where it never fires (else from weakly firing prompts, in a window with no firing token);
- **explaining side**: the top exemplars and ``n_decile_samples`` prompts per decile, all from
  prompts outside the held-out set; the refined prompts from inversion; the top tokens by
  activation mass over the corpus *minus the held-out prompts* (so nothing about them leaks).

The chosen prompts are forwarded once more (one batched forward to the SAE's hook, only the
selected features' columns kept) for per-token activations: a sequence is a window of
``2 * context_window + 1`` tokens around its peak, with every token's activation. The explainer
receives an ``ExplainEvidence`` only; the held-out part is a separate object it never gets.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from saeinverse.explain.evidence import (
    ExplainEvidence,
    FeatureEvidence,
    HeldoutEvidence,
    TokenSequence,
)

if TYPE_CHECKING:
    from saeinverse.collect.stats import FeatureStats
    from saeinverse.invert import Inversion

N_DECILES = 10
NEGATIVE_SPARE = 2
"""Silent prompts forwarded beyond ``n_heldout`` when drawing the negatives."""
FORWARD_BATCH = 16
"""Prompts per forward when recomputing per-token activations."""


@dataclass
class FeaturePlan:
    """Which prompts serve which role for one feature (prompt indices into the collection)."""

    heldout: list[int]
    negative_candidates: list[int]
    exemplars: list[tuple[int, int]]
    """(prompt, position) of the top exemplars shown to the explainer."""
    deciles: list[tuple[int, int]]
    """(prompt, decile) of the decile samples."""


# ----------------------------------------------------------------------------- planning


def plan_feature(
    stats: FeatureStats,
    feature_id: int,
    prompt_max: np.ndarray,
    *,
    n_heldout: int,
    n_exemplars: int,
    n_decile_samples: int,
    seed: int,
) -> FeaturePlan:
    """Choose the prompts for one feature (a pure function of its statistics and the seed)."""
    rng = np.random.default_rng([int(seed), int(feature_id)])
    firing = np.flatnonzero(prompt_max > 0)
    ascending = firing[np.argsort(prompt_max[firing], kind="stable")]
    deciles = [list(rng.permutation(d)) for d in np.array_split(ascending, N_DECILES) if len(d)]
    n_pos = min(int(n_heldout), len(firing) // 2)
    heldout: list[int] = []
    order = list(rng.permutation(len(deciles))) if deciles else []
    while len(heldout) < n_pos:
        for d in order:
            if deciles[d] and len(heldout) < n_pos:
                heldout.append(int(deciles[d].pop()))
    used = set(heldout)
    exemplars = []
    for ex in stats.top_exemplars(feature_id):
        if ex.prompt_index not in used and len(exemplars) < n_exemplars:
            exemplars.append((ex.prompt_index, ex.position))
            used.add(ex.prompt_index)
    samples = []
    for rank, bucket in enumerate(deciles):  # rank 0: the weakest decile
        picked = [int(p) for p in bucket if int(p) not in used][:n_decile_samples]
        samples += [(p, rank) for p in picked]
        used.update(picked)
    # Silent prompts give a silent window each (a couple spare, should a forward differ); only
    # when they run short are the weakest firing prompts searched for a silent window.
    silent = [int(p) for p in rng.permutation(np.flatnonzero(prompt_max <= 0))]
    weak = [int(p) for p in ascending if int(p) not in used]
    missing = max(0, n_heldout - len(silent))
    candidates = silent[: n_heldout + NEGATIVE_SPARE] + weak[: 2 * missing]
    return FeaturePlan(heldout, candidates, exemplars, samples)


# ----------------------------------------------------------------------------- forwards


def forward_features(
    model, sae, rows: Sequence[Sequence[int]], feature_ids: Sequence[int]
) -> list[Tensor]:
    """Per-token activations of ``feature_ids`` on each token row: Float[Tensor, "pos n_features"].

    Rows are right-padded in batches of similar length; the model runs only up to the SAE's hook.
    """
    from saeinverse.models.hooks import encode, hook_activations, sae_hook_name

    hook = sae_hook_name(sae)
    param = next(sae.parameters())
    columns = torch.tensor(list(feature_ids), dtype=torch.long, device=param.device)
    lengths = [len(r) for r in rows]
    order = sorted(range(len(rows)), key=lambda i: -lengths[i])
    out: list[Tensor | None] = [None] * len(rows)
    with torch.inference_mode():
        for lo in range(0, len(order), FORWARD_BATCH):
            chunk = order[lo : lo + FORWARD_BATCH]
            width = max(lengths[i] for i in chunk)
            tokens = torch.zeros((len(chunk), width), dtype=torch.long)
            for j, i in enumerate(chunk):
                tokens[j, : lengths[i]] = torch.as_tensor(list(rows[i]), dtype=torch.long)
            acts = hook_activations(model, tokens.to(model.cfg.device), hook)
            feats = encode(sae, acts)[..., columns]
            for j, i in enumerate(chunk):
                out[i] = feats[j, : lengths[i]].float().cpu()
    return out  # type: ignore[return-value]


# ----------------------------------------------------------------------------- building


def build_evidence(
    model,
    sae,
    feature_ids: Sequence[int],
    stats: FeatureStats | None,
    *,
    inversions: dict[int, Inversion] | None = None,
    n_heldout: int = 10,
    n_exemplars: int = 8,
    n_decile_samples: int = 1,
    n_top_tokens: int = 8,
    context_window: int | None = None,
    seed: int = 0,
) -> list[FeatureEvidence]:
    """Evidence for each feature (see the module docstring); one batched forward for them all.

    Without ``stats`` only the refined prompts are evidence and nothing is held out.
    """
    fids = [int(f) for f in feature_ids]
    inversions = inversions or {}
    window = int(
        context_window if context_window is not None else getattr(stats, "context_window", 8)
    )
    if stats is None:
        plans, prompt_acts = {}, {}
    else:
        dense = stats.prompt_feature_dense(fids).numpy()
        plans = {
            f: plan_feature(
                stats,
                f,
                dense[:, j],
                n_heldout=n_heldout,
                n_exemplars=n_exemplars,
                n_decile_samples=n_decile_samples,
                seed=seed,
            )
            for j, f in enumerate(fids)
        }
        prompt_acts = _prompt_activations(model, sae, stats, fids, plans)
    refined = _refined_sequences(model, sae, stats, fids, inversions)
    first = _first_position(model, stats) if stats is not None else 0
    evidence = []
    for j, fid in enumerate(fids):
        explain = ExplainEvidence(fid, refined=refined.get(fid, []))
        heldout = HeldoutEvidence()
        if stats is None:
            explain.top_tokens = _top_tokens_of(explain.refined, n_top_tokens)
        else:
            acts = {p: a[:, j] for p, a in prompt_acts.items()}
            seq = _SequenceMaker(stats, acts, window, first)
            _fill(explain, heldout, plans[fid], seq, n_heldout, n_top_tokens, seed)
        dataset_max = _dataset_max(stats, fid, inversions.get(fid))
        evidence.append(FeatureEvidence(fid, dataset_max, explain, heldout))
    return evidence


def _fill(explain, heldout, plan, seq, n_heldout: int, n_top_tokens: int, seed: int) -> None:
    """Cut one feature's planned windows into its explaining and held-out evidence (in place)."""
    fid = explain.feature_id
    explain.exemplars = [seq.around(p, "exemplar", pos) for p, pos in plan.exemplars]
    explain.decile_samples = [seq.around(p, f"decile:{d}") for p, d in plan.deciles]
    positives = (seq.around(p, "heldout") for p in plan.heldout)
    heldout.positives = [s for s in positives if s.max_activation > 0]
    heldout.negatives = seq.silent_windows(plan.negative_candidates, n_heldout, seed + fid)
    explain.top_tokens = _top_tokens_without(
        seq.stats, fid, plan.heldout, seq.acts, seq.first, n_top_tokens
    )


def _first_position(model, stats: FeatureStats) -> int:
    """First position shown: never the start token."""
    from saeinverse.models.hooks import start_token_id

    return max(int(stats.first_position), int(start_token_id(model) is not None))


def _dataset_max(stats, fid: int, inversion) -> float | None:
    if stats is not None:
        return float(stats.max_activation[fid])
    return None if inversion is None else inversion.dataset_max


def _prompt_activations(model, sae, stats, fids, plans) -> dict[int, Tensor]:
    prompts = sorted(
        {p for plan in plans.values() for p in plan.heldout + plan.negative_candidates}
        | {p for plan in plans.values() for p, _ in plan.exemplars + plan.deciles}
    )
    rows = [stats.tokens[p, : int(stats.lengths[p])].tolist() for p in prompts]
    return dict(zip(prompts, forward_features(model, sae, rows, fids), strict=True))


def _refined_sequences(model, sae, stats, fids, inversions) -> dict[int, list[TokenSequence]]:
    from saeinverse.models.hooks import start_token_id

    start = start_token_id(model)
    wanted = [(f, inversions[f]) for f in fids if f in inversions and inversions[f].refined_tokens]
    if not wanted:
        return {}
    rows = [([start] if start is not None else []) + list(inv.refined_tokens) for _, inv in wanted]
    acts = forward_features(model, sae, rows, [f for f, _ in wanted])
    offset = 0 if start is None else 1
    found = {}
    for j, ((fid, inv), act) in enumerate(zip(wanted, acts, strict=True)):
        ids = [int(i) for i in inv.refined_tokens]
        strings = token_strings(model, stats, ids)
        values = act[offset:, j].tolist()
        found[fid] = [TokenSequence(strings, ids, values, "refined", None, offset)]
    return found


def token_strings(model, stats, ids: Sequence[int]) -> list[str]:
    """Each id's string: from the collection's table, else decoded by the model's tokenizer."""
    table = getattr(stats, "token_strings", None) or {}
    tokenizer = getattr(model, "tokenizer", None)
    out = []
    for i in ids:
        if i in table:
            out.append(table[i])
        elif tokenizer is not None:
            out.append(tokenizer.decode([i], clean_up_tokenization_spaces=False))
        else:
            out.append(f"<{i}>")
    return out


class _SequenceMaker:
    """Cuts windows of one feature's per-token activations out of collection prompts."""

    def __init__(self, stats, acts: dict[int, Tensor], window: int, first: int):
        self.stats, self.acts, self.window, self.first = stats, acts, window, first

    def _make(self, prompt: int, lo: int, hi: int, source: str) -> TokenSequence:
        ids = self.stats.tokens[prompt, lo:hi].tolist()
        strings = [self.stats.token_strings.get(i, f"<{i}>") for i in ids]
        values = self.acts[prompt][lo:hi].tolist()
        return TokenSequence(strings, ids, values, source, prompt, lo)

    def around(self, prompt: int, source: str, position: int | None = None) -> TokenSequence:
        """The window centred on ``position`` (default: the prompt's peak), clipped to the prompt."""
        length = int(self.stats.lengths[prompt])
        if position is None:
            position = self.first + int(self.acts[prompt][self.first : length].argmax())
        lo = max(self.first, position - self.window)
        hi = min(length, lo + 2 * self.window + 1)
        lo = max(self.first, min(lo, hi - 2 * self.window - 1))
        return self._make(prompt, lo, hi, source)

    def silent_windows(self, candidates: list[int], n: int, seed: int) -> list[TokenSequence]:
        """Up to ``n`` windows with no firing token, one per candidate prompt, in candidate order."""
        rng = np.random.default_rng(seed)
        found = []
        size = 2 * self.window + 1
        for prompt in candidates:
            if len(found) >= n:
                break
            length = int(self.stats.lengths[prompt])
            firing = (self.acts[prompt][:length] > 0).numpy()
            starts = [
                lo
                for lo in range(self.first, max(self.first, length - size) + 1)
                if not firing[lo : lo + size].any()
            ]
            if starts:
                lo = int(rng.choice(starts))
                found.append(self._make(prompt, lo, min(length, lo + size), "negative"))
        return found


def _top_tokens_without(stats, fid, heldout, acts, first, n) -> list[tuple[str, float]]:
    """Top tokens by the feature's activation mass over the corpus minus the held-out prompts."""
    mass = {tok: share for tok, _, share in stats.top_tokens(fid, n=stats.d_vocab)}
    total = float(stats.activation_sum[fid])
    mass = {tok: share * total for tok, share in mass.items()}
    for prompt in heldout:
        length = int(stats.lengths[prompt])
        ids = stats.tokens[prompt, first:length].tolist()
        for tok, value in zip(ids, acts[prompt][first:length].tolist(), strict=True):
            if value > 0 and tok in mass:
                mass[tok] -= value
    remaining = sum(max(v, 0.0) for v in mass.values())
    ranked = sorted(((v, t) for t, v in mass.items() if v > 1e-9 * max(total, 1e-30)), reverse=True)
    if remaining <= 0 or not math.isfinite(remaining):
        return []
    return [(stats.token_strings.get(t, f"<{t}>"), v / remaining) for v, t in ranked[:n]]


def _top_tokens_of(sequences: list[TokenSequence], n: int) -> list[tuple[str, float]]:
    """Top tokens by activation mass over the given sequences."""
    mass: dict[str, float] = {}
    for seq in sequences:
        for token, value in zip(seq.tokens, seq.activations, strict=True):
            if value > 0:
                mass[token] = mass.get(token, 0.0) + value
    total = sum(mass.values())
    ranked = sorted(mass.items(), key=lambda kv: -kv[1])[:n]
    return [(t, v / total) for t, v in ranked] if total > 0 else []
