"""How evidence is drawn: which prompts explain a feature, which score it, and their activations.

For each feature, the run's prompts are split with the seed (``plan_feature``):

- **held-out positives**: up to ``n_heldout`` firing prompts, drawn across the deciles of the
  feature's per-prompt maximum (never more than half of its firing prompts). When the run holds
  too few, bundled-corpus prompts the run never collected top them up (``pool.draw_extra_prompts``,
  at most ``heldout_prompts`` of them, forwarded once for all features);
- **held-out negatives**, from the held-out side only (half of the prompts where the feature never
  fires, chosen with the seed, and the extra prompts): ``n_heldout`` random silent windows, and
  ``n_heldout`` *hard* ones: silent windows around one of the feature's top tokens
  ('hard:token'), then, when those run short, silent windows from the genre of its exemplars
  ('hard:genre');
- **explaining side**: the top exemplars and ``n_decile_samples`` prompts per decile, all from
  prompts outside the held-out set, and up to ``FIT_PROMPTS`` of the other firing prompts there
  (windows a rule is fitted on, never shown to a language model); the refined prompts from
  inversion; the top tokens by activation mass over the corpus *minus the held-out prompts*
  (``n_top_tokens`` shown, ``CANDIDATE_TOKENS`` for rules); ``FIT_SILENT`` silent windows of
  each kind: random ones from the other half of the silent prompts; ones around a top token
  from those, then from the explaining side's firing prompts, as the held-out hard negatives
  (a rule must tell a top token that fires from one that does not). When a
  feature has fewer than ``FIT_PROMPTS`` other firing prompts, the extra prompts top them up
  (``explain_prompts`` prompts in all, the run's included: a small run's explaining side sees as
  many prompts as a large run's). One draw of extra prompts serves both sides: for each feature,
  its first firing extra prompts go to the held-out side, the next ones to the explaining side,
  and those never serve as its held-out negatives.

A window is ``2 * context_window + 1`` tokens around its peak (positives), a random silent
stretch (random negatives) or the stretch around a top token (hard negatives), with every
token's activation. The explainer receives an ``ExplainEvidence`` only; the held-out part is a
separate object it never gets.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from saeinverse.config import ExplanationConfig, as_section
from saeinverse.explain.evidence import (
    ExplainEvidence,
    FeatureEvidence,
    HeldoutEvidence,
    TokenSequence,
    normalise,
)
from saeinverse.explain.pool import (
    PromptSet,
    draw_extra_prompts,
    forward_features,
    run_prompts,
    token_strings,
)

if TYPE_CHECKING:
    from saeinverse.collect.stats import FeatureStats
    from saeinverse.invert import Inversion

N_DECILES = 10
NEGATIVE_SPARE = 2
"""Weakly firing prompts searched per missing silent prompt."""
FIT_PROMPTS = 150
"""Other firing prompts of the explaining side forwarded for a rule to be fitted on."""
FIT_SILENT = 100
"""Silent windows of the explaining side, of each kind (random, around a candidate token)."""
CANDIDATE_TOKENS = 24
"""Top tokens a rule may draw its targets from (``ExplainEvidence.candidate_tokens``)."""


@dataclass
class FeaturePlan:
    """Which of the run's prompts serve which role for one feature (prompt indices)."""

    heldout: list[int]
    negative_candidates: list[int]
    """Held-out side: prompts where it never fires, then weakly firing ones."""
    explain_silent: list[int]
    """Explaining side: prompts where it never fires."""
    exemplars: list[tuple[int, int]]
    """(prompt, position) of the top exemplars shown to the explainer."""
    deciles: list[tuple[int, int]]
    """(prompt, decile) of the decile samples."""
    explain_firing: list[int]
    """Other firing prompts of the explaining side (at most ``FIT_PROMPTS``, in a seeded order)."""


# ----------------------------------------------------------------------------- planning


def plan_feature(
    stats: FeatureStats,
    feature_id: int,
    prompt_max: np.ndarray,
    cfg: ExplanationConfig,
    seed: int,
) -> FeaturePlan:
    """Choose the prompts for one feature (a pure function of its statistics and the seed)."""
    rng = np.random.default_rng([int(seed), int(feature_id)])
    n_heldout = int(cfg.n_heldout)
    firing = np.flatnonzero(prompt_max > 0)
    ascending = firing[np.argsort(prompt_max[firing], kind="stable")]
    deciles = [list(rng.permutation(d)) for d in np.array_split(ascending, N_DECILES) if len(d)]
    n_pos = min(n_heldout, len(firing) // 2)
    heldout: list[int] = []
    order = list(rng.permutation(len(deciles))) if deciles else []
    while len(heldout) < n_pos:
        for d in order:
            if deciles[d] and len(heldout) < n_pos:
                heldout.append(int(deciles[d].pop()))
    used = set(heldout)
    exemplars = []
    for ex in stats.top_exemplars(feature_id):
        if ex.prompt_index not in used and len(exemplars) < cfg.n_exemplars:
            exemplars.append((ex.prompt_index, ex.position))
            used.add(ex.prompt_index)
    samples = []
    for rank, bucket in enumerate(deciles):  # rank 0: the weakest decile
        picked = [int(p) for p in bucket if int(p) not in used][: cfg.n_decile_samples]
        samples += [(p, rank) for p in picked]
        used.update(picked)
    silent = [int(p) for p in rng.permutation(np.flatnonzero(prompt_max <= 0))]
    held_silent, explain_silent = silent[::2], silent[1::2]
    weak = [int(p) for p in ascending if int(p) not in used]
    missing = max(0, n_heldout - len(held_silent))
    candidates = held_silent + weak[: NEGATIVE_SPARE * missing]
    taken = used | set(candidates)
    others = [int(p) for p in rng.permutation(firing) if int(p) not in taken][:FIT_PROMPTS]
    return FeaturePlan(heldout, candidates, explain_silent, exemplars, samples, others)


# ----------------------------------------------------------------------------- building


def build_evidence(
    model,
    sae,
    feature_ids: Sequence[int],
    stats: FeatureStats | None,
    cfg: Any = None,
    *,
    inversions: dict[int, Inversion] | None = None,
    seed: int = 0,
    progress: bool = False,
    avoid_texts: Collection[str] | None = None,
) -> list[FeatureEvidence]:
    """Evidence for each feature (see the module docstring); batched forwards for them all.

    ``cfg``: ``config.explanation`` (or a dict of its keys). Without ``stats`` only the refined
    prompts are evidence and nothing is held out. ``avoid_texts`` (``data.corpus.text_hash``):
    never drawn as extra prompts; default: the inversions' ``window_texts``.
    """
    cfg = as_section(cfg, ExplanationConfig)
    fids = [int(f) for f in feature_ids]
    inversions = inversions or {}
    if avoid_texts is None:
        avoid_texts = {t for inv in inversions.values() for t in inv.window_texts}
    refined = _refined_sequences(model, sae, stats, fids, inversions)
    if stats is None:
        return [
            FeatureEvidence(
                fid,
                _dataset_max(None, fid, inversions.get(fid)),
                ExplainEvidence(
                    fid,
                    refined=refined.get(fid, []),
                    top_tokens=_top_tokens_of(refined.get(fid, []), cfg.n_top_tokens),
                ),
                HeldoutEvidence(),
            )
            for fid in fids
        ]
    window = int(cfg.context_window if cfg.context_window is not None else stats.context_window)
    first = _first_position(model, stats)
    dense = stats.prompt_feature_dense(fids).numpy()
    plans = [plan_feature(stats, f, dense[:, j], cfg, seed) for j, f in enumerate(fids)]
    forward = {p for plan in plans for p in plan.heldout}
    forward |= {p for plan in plans for p, _ in plan.exemplars + plan.deciles}
    forward |= {p for plan in plans for p in plan.explain_firing}
    # A prompt where collection saw the feature never fire needs no forward: it reads as silent.
    forward |= {p for j, plan in enumerate(plans) for p in plan.negative_candidates
                if dense[p, j] > 0}  # fmt: skip
    run = run_prompts(model, sae, stats, fids, forward)
    extra = _extra_prompts(model, sae, stats, fids, plans, cfg, first, seed, progress, avoid_texts)
    evidence = []
    for j, (fid, plan) in enumerate(zip(fids, plans, strict=True)):
        cut = _Windows(window, first, j, np.random.default_rng([int(seed), fid, 1]))
        heldout = HeldoutEvidence()
        heldout.positives = [s for s in (cut.around(run, p, "heldout") for p in plan.heldout)
                             if s.max_activation > 0]  # fmt: skip
        held_side = [(run, p) for p in plan.negative_candidates]
        held_extra, fit_extra = [], []
        if extra is not None:  # its firing prompts: first the held-out's, then the explaining's
            fires = cut.firing_prompts(extra)
            n_held = cfg.n_heldout - len(heldout.positives) if cfg.heldout_prompts > 0 else 0
            held_extra = fires[: max(n_held, 0)]
            fit_extra = fires[len(held_extra) :][: FIT_PROMPTS - len(plan.explain_firing)]
            heldout.positives += [cut.around(extra, p, "heldout") for p in held_extra]
            if cfg.heldout_prompts > 0:
                held_side += [(extra, p) for p in range(len(extra)) if p not in set(fit_extra)]
        explain = ExplainEvidence(fid, refined=refined.get(fid, []))
        explain.exemplars = [cut.around(run, p, "exemplar", pos) for p, pos in plan.exemplars]
        explain.decile_samples = [cut.around(run, p, f"decile:{d}") for p, d in plan.deciles]
        explain.firing = [cut.around(run, p, "firing") for p in plan.explain_firing]
        explain.firing += [cut.around(extra, p, "firing") for p in fit_extra]
        ranked = _top_tokens_without(stats, fid, plan.heldout, run, j, first)
        explain.top_tokens = [(s, share) for _, s, share in ranked[: cfg.n_top_tokens]]
        n_candidates = max(CANDIDATE_TOKENS, cfg.n_top_tokens)
        explain.candidate_tokens = [(s, share) for _, s, share in ranked[:n_candidates]]
        top_ids = _surface_ids(stats, [s for _, s, _ in ranked[: cfg.n_top_tokens]])
        explain.silent = _explain_silent(cut, plan, run, extra, fit_extra, top_ids, cfg)
        heldout.negatives = cut.silent(held_side, cfg.n_heldout, "negative")
        heldout.hard_negatives = cut.around_tokens(held_side, top_ids, cfg.n_heldout, "hard:token")
        genre = _main_genre(run, [p for p, _ in plan.exemplars])
        if genre is not None and len(heldout.hard_negatives) < cfg.n_heldout:
            taken = {(s.origin, s.prompt_index) for s in heldout.hard_negatives}
            same = [(ps, p) for ps, p in held_side
                    if ps.genres.get(p) == genre and (ps.origin, p) not in taken]  # fmt: skip
            heldout.hard_negatives += cut.silent(
                same, cfg.n_heldout - len(heldout.hard_negatives), "hard:genre"
            )
        dataset_max = _dataset_max(stats, fid, inversions.get(fid))
        evidence.append(FeatureEvidence(fid, dataset_max, explain, heldout))
    return evidence


class _Windows:
    """Cuts one feature's windows (column ``column`` of a prompt set's activations)."""

    def __init__(self, window: int, first: int, column: int, rng: np.random.Generator):
        self.window, self.first, self.column, self.rng = window, first, column, rng
        self.size = 2 * window + 1

    def make(self, ps: PromptSet, prompt: int, lo: int, hi: int, source: str) -> TokenSequence:
        ids = ps.tokens[prompt, lo:hi].tolist()
        values = ps.activations(prompt, self.column)[lo:hi].tolist()
        strings = [ps.strings(i) for i in ids]
        genre = ps.genres.get(prompt)
        return TokenSequence(strings, ids, values, source, prompt, lo, genre, ps.origin)

    def bounds(self, length: int, centre: int) -> tuple[int, int]:
        lo = max(self.first, centre - self.window)
        hi = min(length, lo + self.size)
        return max(self.first, min(lo, hi - self.size)), hi

    def around(
        self, ps: PromptSet, prompt: int, source: str, position: int | None = None
    ) -> TokenSequence:
        """The window centred on ``position`` (default: the prompt's peak), clipped to the prompt."""
        length = int(ps.lengths[prompt])
        if position is None:
            acts = ps.activations(prompt, self.column)
            position = self.first + int(acts[self.first : length].argmax())
        return self.make(ps, prompt, *self.bounds(length, position), source)

    def firing_prompts(self, ps: PromptSet) -> list[int]:
        """The forwarded prompts where the feature fires, in order."""
        return [p for p in range(len(ps))
                if ps.acts.get(p) is not None and ps.activations(p, self.column).max() > 0]  # fmt: skip

    def silent(
        self, candidates: Iterable[tuple[PromptSet, int]], n: int, source: str
    ) -> list[TokenSequence]:
        """Up to ``n`` windows with no firing token, one per candidate prompt, in order."""
        found = []
        for ps, prompt in candidates:
            if len(found) >= n:
                break
            length = int(ps.lengths[prompt])
            firing = (ps.activations(prompt, self.column)[:length] > 0).numpy()
            starts = [
                lo
                for lo in range(self.first, max(self.first, length - self.size) + 1)
                if not firing[lo : lo + self.size].any()
            ]
            if starts:
                lo = int(self.rng.choice(starts))
                found.append(self.make(ps, prompt, lo, min(length, lo + self.size), source))
        return found

    def around_tokens(
        self, candidates: list[tuple[PromptSet, int]], token_ids: set[int], n: int, source: str
    ) -> list[TokenSequence]:
        """Up to ``n`` silent windows centred on one of ``token_ids``, one per prompt, in order."""
        holding: dict[int, set[int]] = {}
        for ps in {id(ps): ps for ps, _ in candidates}.values():
            holding[id(ps)] = set(ps.holding(token_ids, self.first).tolist())
        found = []
        for ps, prompt in candidates:
            if len(found) >= n:
                break
            if prompt not in holding[id(ps)]:
                continue
            length = int(ps.lengths[prompt])
            firing = (ps.activations(prompt, self.column)[:length] > 0).numpy()
            row = ps.tokens[prompt, :length]
            for position in range(self.first, length):
                if int(row[position]) in token_ids:
                    lo, hi = self.bounds(length, position)
                    if not firing[lo:hi].any():
                        found.append(self.make(ps, prompt, lo, hi, source))
                        break
        return found


def _explain_silent(
    cut: _Windows, plan: FeaturePlan, run: PromptSet, extra: PromptSet | None,
    fit_extra: list[int], top_ids: set[int], cfg: ExplanationConfig,
) -> list[TokenSequence]:  # fmt: skip
    """The explaining side's silent windows: random ones from its never-firing prompts, then
    ones around a top token from those and from its firing prompts (silent there, firing
    elsewhere in the prompt), as the held-out hard negatives are drawn."""
    n = max(FIT_SILENT, cfg.n_heldout)
    silent = [(run, p) for p in plan.explain_silent]
    firing = [(run, p) for p in plan.explain_firing]
    firing += [(extra, p) for p in fit_extra if extra is not None]
    firing += [(run, p) for p, _ in plan.exemplars + plan.deciles]
    windows = cut.silent(silent, n, "silent")
    return windows + cut.around_tokens(silent + firing, top_ids, n, "silent:token")


def _extra_prompts(model, sae, stats, fids, plans, cfg, first, seed, progress, avoid=()):
    """Bundled-corpus texts the run never collected (None when no feature needs any), drawn
    until each feature fires in as many as its held-out positives and its explaining side's
    other firing prompts lack (``n_heldout``, ``FIT_PROMPTS``), at most the larger of
    ``heldout_prompts`` and ``explain_prompts`` minus the run's prompts."""
    held_limit, fit_limit = int(cfg.heldout_prompts), int(cfg.explain_prompts) - stats.n_prompts
    needed = np.zeros(len(plans), dtype=np.int64)
    if held_limit > 0:
        needed += [max(0, cfg.n_heldout - len(plan.heldout)) for plan in plans]
    if fit_limit > 0:
        needed += [max(0, FIT_PROMPTS - len(plan.explain_firing)) for plan in plans]
    if not needed.any():
        return None
    return draw_extra_prompts(
        model, sae, stats, fids, needed, limit=max(held_limit, fit_limit), first=first,
        seed=seed, progress=progress, avoid_texts=avoid,
    )  # fmt: skip


# ----------------------------------------------------------------------------- helpers


def _first_position(model, stats: FeatureStats) -> int:
    """First position shown: never the start token."""
    from saeinverse.models.hooks import start_token_id

    return max(int(stats.first_position), int(start_token_id(model) is not None))


def _dataset_max(stats, fid: int, inversion) -> float | None:
    if stats is not None:
        return float(stats.max_activation[fid])
    return None if inversion is None else inversion.dataset_max


def _main_genre(run: PromptSet, prompts: list[int]) -> str | None:
    """The most common genre among the prompts (None when none of them has one)."""
    counts = Counter(run.genres[p] for p in prompts if p in run.genres)
    return counts.most_common(1)[0][0] if counts else None


def _surface_ids(stats, tokens: list[str]) -> set[int]:
    """Every token id whose string reads as one of ``tokens`` (case and spaces aside)."""
    wanted = {normalise(t) for t in tokens}
    return {i for i, s in stats.token_strings.items() if normalise(s) in wanted}


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


def _top_tokens_without(stats, fid, heldout, run: PromptSet, column, first):
    """(id, string, share) of the top tokens by the feature's activation mass over the corpus
    minus the held-out prompts, largest first."""
    mass = {tok: share for tok, _, share in stats.top_tokens(fid, n=stats.d_vocab)}
    total = float(stats.activation_sum[fid])
    mass = {tok: share * total for tok, share in mass.items()}
    for prompt in heldout:
        ids = run.row(prompt)[first:]
        values = run.activations(prompt, column)[first:].tolist()
        for tok, value in zip(ids, values, strict=True):
            if value > 0 and tok in mass:
                mass[tok] -= value
    remaining = sum(max(v, 0.0) for v in mass.values())
    ranked = sorted(((v, t) for t, v in mass.items() if v > 1e-9 * max(total, 1e-30)), reverse=True)
    if remaining <= 0 or not math.isfinite(remaining):
        return []
    return [(t, stats.token_strings.get(t, f"<{t}>"), v / remaining) for v, t in ranked]


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
