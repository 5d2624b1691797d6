"""Discrete refinement: gradient-guided single-token swaps (the GCG / EPO family), batched.

Each step, for every still-active row (one target feature each):

1. one forward + backward on the current prompt gives the gradient of the objective with respect
   to the one-hot tokens (``grad_embeds @ W_E.T``); its ``topk`` tokens per position are the
   promising swaps;
2. ``candidates`` single swaps are drawn (positions in turn, tokens from the gradient's top-k;
   with fluency on, half of them from the model's own top next-token predictions at that
   position instead), and every candidate of every row is evaluated exactly by batched forwards
   stopped at the SAE's layer (when a step screens many, the current prompts' keys and values
   are computed once and each candidate forwards only its suffix from the swapped position);
3. without fluency, the candidate with the highest key (the real activation when the feature
   fires, the margin to firing otherwise) replaces the current prompt if it is better. With
   fluency, a shortlist of ``fluency_candidates`` per row is chosen by an estimated score (the
   current cross-entropy changed by the swapped token's own term under the current prompt's
   next-token expectations), scored exactly by the model's own cross-entropy (resuming the
   screening forward from the SAE's layer where the hook allows it); the score is
   ``key / scale - fluency_weight * cross_entropy`` (``scale``: the feature's dataset maximum
   when known), or with ``fluency_target`` set ``key / scale - fluency_weight *
   max(cross_entropy - fluency_target, 0)``: as active as possible once as fluent as the target.
   Every scored prompt enters the row's Pareto set of (activation, cross-entropy).

A row stops after ``patience`` steps without improvement or when its next step would pass its
``max_sequences`` entry. Every sequence forwarded is counted against its row.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from saeinverse.invert.objective import FeatureTarget
from saeinverse.invert.project import Vocabulary
from saeinverse.invert.soft import _improves
from saeinverse.models.hooks import resume_layer_for

logger = logging.getLogger(__name__)

SCREEN_BATCH = 256
"""Candidate sequences per screening forward."""
PREFIX_MIN_CANDIDATES = 256
"""Share the current prompt's prefix (keys / values) when a step screens at least this many."""


@dataclass
class ParetoPoint:
    """A hard prompt on a feature's (activation up, cross-entropy down) front."""

    ids: list[int]
    activation: float
    cross_entropy: float


@dataclass
class RefineResult:
    """Per row: the refined prompt, its screening activation, the Pareto front and the costs."""

    ids: Int[Tensor, "n_features pos"]
    activation: list[float]
    pareto: list[list[ParetoPoint]]
    forward_passes: list[int]
    steps: list[int]
    trajectory: list[dict[str, list[float]]]


# ----------------------------------------------------------------------------- fluency


class Fluency:
    """The model's own cross-entropy of prompts, and its next-token expectations per position."""

    def __init__(self, target: FeatureTarget, allowed: Tensor, top_k: int):
        self.target = target
        self.allowed = allowed
        self.top_k = top_k
        self.resume_layer = resume_layer_for(target.hook_name)

    def _chunks(self, ids: Tensor, resid: Tensor | None, size: int = 32):
        """(tokens, log-probabilities of each next token) per chunk of prompts."""
        tokens = self.target.with_start(ids)
        with torch.no_grad():
            for lo in range(0, ids.shape[0], size):
                chunk = tokens[lo : lo + size]
                if resid is not None and self.resume_layer is not None:
                    logits = self.target.model(
                        resid[lo : lo + size], start_at_layer=self.resume_layer
                    )
                else:
                    logits = self.target.model(chunk, return_type="logits")
                yield chunk, logits[:, :-1].float().log_softmax(-1)

    def cross_entropy(
        self, ids: Int[Tensor, "batch pos"], resid: Float[Tensor, "batch pos1 d"] | None = None
    ) -> Float[Tensor, " batch"]:
        """Mean next-token cross-entropy of each prompt (resumed from ``resid`` when possible)."""
        out = [
            -logprobs.gather(-1, chunk[:, 1:, None]).squeeze(-1).mean(-1)
            for chunk, logprobs in self._chunks(ids, resid)
        ]
        return torch.cat(out)

    def expectations(
        self, ids: Int[Tensor, "batch pos"]
    ) -> tuple[Float[Tensor, " batch"], Float[Tensor, "batch pos vocab"]]:
        """(cross-entropy, log-probability of every token at every prompt position).

        Without a start token the first position has no prediction; it gets zeros (no opinion).
        """
        ces, expected = [], []
        for chunk, logprobs in self._chunks(ids, None, size=16):
            ces.append(-logprobs.gather(-1, chunk[:, 1:, None]).squeeze(-1).mean(-1))
            if self.target.start_id is None:
                logprobs = torch.cat([torch.zeros_like(logprobs[:, :1]), logprobs], dim=1)
            expected.append(logprobs)
        return torch.cat(ces), torch.cat(expected)

    def top_tokens(self, logprobs: Float[Tensor, "batch pos vocab"]) -> Int[Tensor, "batch pos k"]:
        """The ``top_k`` allowed tokens the model expects at each position."""
        masked = logprobs.masked_fill(~self.allowed, float("-inf"))
        return masked.topk(self.top_k, dim=-1).indices


def update_pareto(
    points: list[ParetoPoint],
    new: Sequence[ParetoPoint],
    size: int,
    keep: Sequence[list[int]] = (),
) -> list[ParetoPoint]:
    """Non-dominated points (higher activation, lower cross-entropy), about ``size`` of them.

    A longer front is thinned evenly along its cross-entropy order, always keeping both ends
    and any point whose ids are in ``keep`` (the refined prompt, say).
    """
    pool = {tuple(p.ids): p for p in [*points, *new] if p.activation > 0}
    front: list[ParetoPoint] = []
    for point in sorted(pool.values(), key=lambda p: (p.cross_entropy, -p.activation)):
        if not front or point.activation > front[-1].activation:
            front.append(point)
    if len(front) > size:
        kept = {tuple(k) for k in keep}
        chosen = {i for i, p in enumerate(front) if tuple(p.ids) in kept}
        spread = max(2, size - len(chosen))
        chosen |= {round(i * (len(front) - 1) / (spread - 1)) for i in range(spread)}
        front = [p for i, p in enumerate(front) if i in chosen]
    return front


# ----------------------------------------------------------------------------- the search


def _swap_gradient(
    target: FeatureTarget,
    vocab: Vocabulary,
    ids: Tensor,
    feature_ids: Tensor,
    selectivity: float,
    top_k: int,
) -> Int[Tensor, "batch pos k"]:
    """The top-k tokens per position by the objective's gradient with respect to one-hot tokens."""
    embeds = vocab.W_E[ids].clone().requires_grad_(True)
    readout = target.read(target.hook_acts(ids, embeds), feature_ids, selectivity)
    (grad,) = torch.autograd.grad(readout.objective.sum(), embeds)
    scores = grad @ vocab.W_E.T  # [batch, pos, vocab]
    scores[..., ~vocab.allowed] = float("-inf")
    return scores.topk(top_k, dim=-1).indices


def _draw_candidates(
    current: Int[Tensor, "batch pos"],
    grad_top: Int[Tensor, "batch pos k"],
    lm_top: Int[Tensor, "batch pos k"] | None,
    n: int,
    generators: Sequence[torch.Generator],
) -> tuple[Int[Tensor, "batch n pos"], Int[Tensor, "batch n"]]:
    """``n`` single swaps per row (and each swap's position): positions in turn, shuffled;
    tokens from the top-k lists."""
    batch, length = current.shape
    cands = current[:, None, :].repeat(1, n, 1).cpu()
    positions = torch.empty(batch, n, dtype=torch.long)
    grad_top, lm_top = grad_top.cpu(), None if lm_top is None else lm_top.cpu()
    for row, gen in enumerate(generators):
        pos = (torch.arange(n) % length)[torch.randperm(n, generator=gen)]
        rank = torch.randint(grad_top.shape[-1], (n,), generator=gen)
        tokens = grad_top[row, pos, rank]
        if lm_top is not None:
            from_lm = torch.arange(n) % 2 == 1
            lm_rank = torch.randint(lm_top.shape[-1], (n,), generator=gen)
            tokens = torch.where(from_lm, lm_top[row, pos, lm_rank], tokens)
        cands[row, torch.arange(n), pos] = tokens
        positions[row] = pos
    return cands.to(current.device), positions


def _screen(
    target: FeatureTarget,
    cands: Tensor,
    positions: Tensor,
    current: Tensor,
    feature_ids: Tensor,
    keep_resid: bool,
    share_prefix: bool,
):
    """Exact forwards of every candidate: (key, activation, resid or None), each [batch, n, ...].

    With ``share_prefix``, the current prompts' keys and values are computed once and each
    candidate forwards only its suffix from the swapped position on (one forward per position).
    """
    batch, n, length = cands.shape
    keys = torch.empty(batch, n, device=target.device)
    acts = torch.empty(batch, n, device=target.device)
    resid = None
    if not share_prefix:
        groups = [(None, torch.arange(batch * n))]
    else:
        prefix = target.prefix_cache(current)
        flat_pos = positions.reshape(-1)
        groups = [(int(p), (flat_pos == p).nonzero().squeeze(-1)) for p in flat_pos.unique()]
    offset = 0 if target.start_id is None else 1
    flat = cands.reshape(batch * n, length)
    fids = feature_ids.repeat_interleave(n)
    for p, members in groups:
        for lo in range(0, len(members), SCREEN_BATCH):
            idx = members[lo : lo + SCREEN_BATCH].to(target.device)
            if p is None:
                hook = target.hook_acts(flat[idx]).detach()
            else:
                hook = target.hook_acts_after_prefix(prefix, idx // n, p + offset, flat[idx, p:])
            with torch.no_grad():
                readout = target.read(hook, fids[idx])
            keys.view(-1)[idx], acts.view(-1)[idx] = readout.key, readout.activation
            if keep_resid:
                if resid is None:
                    resid = torch.empty(batch * n, *hook.shape[1:], device=target.device)
                resid[idx] = hook
    if resid is not None:
        resid = resid.reshape(batch, n, *resid.shape[1:])
    return keys, acts, resid


@dataclass
class _Rows:
    """The search state of every row: current prompt, its numbers, costs and history."""

    current: Tensor
    key: Tensor
    act: Tensor
    score: Tensor
    ce: Tensor | None
    logprobs: Tensor | None
    passes: list[int]
    steps: list[int]
    since: list[int]
    active: Tensor
    pareto: list[list[ParetoPoint]]
    trajectory: list[dict[str, list[float]]]

    def record(self, row: int) -> None:
        self.trajectory[row]["activation"].append(float(self.act[row]))
        if self.ce is not None:
            self.trajectory[row]["cross_entropy"].append(float(self.ce[row]))


def _start(target, vocab, feature_ids, init_ids, fluency, penalty, scale, top_k, pareto_size):
    """Score the starting prompts (and their cross-entropy with fluency on)."""
    n_rows = init_ids.shape[0]
    first = target.read_ids(init_ids, feature_ids, keep_resid=fluency is not None)
    key, act = first.key.clone(), first.activation.clone()
    ce = logprobs = None
    pareto: list[list[ParetoPoint]] = [[] for _ in range(n_rows)]
    if fluency is not None:
        ce, logprobs = fluency.expectations(init_ids)
        for row in range(n_rows):
            point = ParetoPoint(init_ids[row].tolist(), float(act[row]), float(ce[row]))
            pareto[row] = update_pareto([], [point], pareto_size)
    state = _Rows(
        current=init_ids.clone(),
        key=key,
        act=act,
        score=key / scale - penalty(ce) if fluency is not None else key.clone(),
        ce=ce,
        logprobs=logprobs,
        passes=[1 if fluency is None else 2] * n_rows,
        steps=[0] * n_rows,
        since=[0] * n_rows,
        active=torch.ones(n_rows, dtype=torch.bool),
        pareto=pareto,
        trajectory=[{"activation": [], "cross_entropy": []} for _ in range(n_rows)],
    )
    for row in range(n_rows):
        state.record(row)
    return state


def refine(
    target: FeatureTarget,
    vocab: Vocabulary,
    feature_ids: Int[Tensor, " n_features"],
    init_ids: Int[Tensor, "n_features pos"],
    generators: Sequence[torch.Generator],
    *,
    steps: int,
    candidates: int,
    top_k: int = 64,
    patience: int = 50,
    selectivity_weight: float = 0.0,
    fluency_weight: float = 0.0,
    fluency_candidates: int = 8,
    fluency_target: float | None = None,
    scale: Sequence[float] | None = None,
    max_sequences: Sequence[int] | None = None,
    pareto_size: int = 8,
    share_prefix: bool = True,
    progress=None,
) -> RefineResult:
    """Greedy gradient-guided token search for every row at once; see the module docstring."""
    n_rows = init_ids.shape[0]
    fluency = Fluency(target, vocab.allowed, top_k) if fluency_weight > 0 else None
    penalty = _Penalty(fluency_weight, fluency_target)
    scale_t = torch.tensor(list(scale) if scale else [1.0] * n_rows, device=target.device)
    state = _start(
        target, vocab, feature_ids, init_ids, fluency, penalty, scale_t, top_k, pareto_size
    )
    n_fluent = min(fluency_candidates, candidates) if fluency is not None else 0
    # gradient, shared prefix, candidates, fluency shortlist, expectations of an accepted prompt
    step_cost = 2 + candidates + (n_fluent + 1 if fluency is not None else 0)

    for _ in range(steps):
        for row in range(n_rows):
            if max_sequences is not None and state.passes[row] + step_cost > max_sequences[row]:
                state.active[row] = False
        rows = state.active.nonzero().squeeze(-1).tolist()
        if not rows:
            break
        idx = torch.tensor(rows, device=target.device)
        current = state.current[idx]
        grad_top = _swap_gradient(
            target, vocab, current, feature_ids[idx], selectivity_weight, top_k
        )
        lm_top = fluency.top_tokens(state.logprobs[idx]) if fluency is not None else None
        cands, positions = _draw_candidates(
            current, grad_top, lm_top, candidates, [generators[r] for r in rows]
        )
        share = share_prefix and len(rows) * candidates >= PREFIX_MIN_CANDIDATES
        c_key, c_act, c_resid = _screen(
            target, cands, positions, current, feature_ids[idx], fluency is not None, share
        )
        if fluency is None:
            new_score, pick = c_key.max(dim=1)
        else:
            pick, new_score, new_ce = _fluent_choice(
                fluency, state, rows, cands, positions, c_key, c_act, c_resid, scale_t[idx],
                penalty, n_fluent, pareto_size,
            )  # fmt: skip
        accepted = []
        for j, row in enumerate(rows):
            state.passes[row] += step_cost - (0 if share else 1) - (1 if fluency else 0)
            state.steps[row] += 1
            if _improves(float(new_score[j]), float(state.score[row])):
                state.current[row] = cands[j, pick[j]]
                state.score[row] = new_score[j]
                state.key[row], state.act[row] = c_key[j, pick[j]], c_act[j, pick[j]]
                if fluency is not None:
                    state.ce[row] = new_ce[j]
                accepted.append(row)
                state.since[row] = 0
            else:
                state.since[row] += 1
                state.active[row] = state.since[row] < patience
            state.record(row)
        if fluency is not None and accepted:
            state.logprobs[accepted] = fluency.expectations(state.current[accepted])[1]
            for row in accepted:
                state.passes[row] += 1
        if progress is not None:
            progress.update(1)

    return RefineResult(
        state.current,
        state.act.tolist(),
        state.pareto,
        state.passes,
        state.steps,
        state.trajectory,
    )


class _Penalty:
    """``weight * cross_entropy``, or with a target ``weight * max(cross_entropy - target, 0)``."""

    def __init__(self, weight: float, target: float | None):
        self.weight, self.target = weight, target

    def __call__(self, ce: Tensor) -> Tensor:
        excess = ce if self.target is None else (ce - self.target).clamp(min=0.0)
        return self.weight * excess


def _fluent_choice(
    fluency,
    state,
    rows,
    cands,
    positions,
    c_key,
    c_act,
    c_resid,
    scale,
    penalty,
    n_fluent,
    pareto_size,
):
    """Shortlist ``n_fluent`` candidates per row by an estimated score, score them exactly.

    The estimate changes the current cross-entropy by the swapped token's own term under the
    current prompt's expectations (later tokens' terms are left as they were); the shortlist's
    cross-entropy is then computed exactly, and the best combined score is picked.
    """
    batch, n, length = cands.shape
    idx = torch.tensor(rows, device=cands.device)
    logprobs = state.logprobs[idx]  # [batch, pos, vocab]
    r = torch.arange(batch, device=cands.device)[:, None]
    pos = positions.to(cands.device)
    old = state.current[idx].gather(1, pos)
    new = cands[r, torch.arange(n, device=cands.device)[None, :], pos]
    delta = (logprobs[r, pos, old] - logprobs[r, pos, new]) / length
    estimate = c_key / scale[:, None] - penalty(state.ce[idx][:, None] + delta)
    top = estimate.topk(min(n_fluent, n), dim=1).indices  # [batch, n_fluent]
    ids = cands[r, top].reshape(-1, length)
    resid = None if c_resid is None else c_resid[r, top].reshape(ids.shape[0], *c_resid.shape[2:])
    ce = fluency.cross_entropy(ids, resid).reshape(top.shape)
    combined = c_key[r, top] / scale[:, None] - penalty(ce)
    acts = c_act[r, top]
    for j, row in enumerate(rows):
        points = [
            ParetoPoint(cands[j, top[j, m]].tolist(), float(acts[j, m]), float(ce[j, m]))
            for m in range(top.shape[1])
        ]
        state.pareto[row] = update_pareto(state.pareto[row], points, pareto_size)
    best = combined.argmax(dim=1)
    flat = torch.arange(batch, device=cands.device)
    return top[flat, best], combined[flat, best], ce[flat, best]
