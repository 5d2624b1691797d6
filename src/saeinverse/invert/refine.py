"""Discrete refinement: gradient-guided single-token swaps (the GCG / EPO family), batched.

Each step, for every still-active row (one target feature each):

1. one forward + backward on the current prompt gives the gradient of the objective with respect
   to the one-hot tokens (``grad_embeds @ W_E.T``); its ``topk`` tokens per position are the
   promising swaps;
2. ``candidates`` single swaps are drawn (positions in turn, tokens from the gradient's top-k;
   with fluency on, half of them from the model's own top next-token predictions at that
   position instead), and every candidate of every row is evaluated exactly with one batched
   forward stopped at the SAE's layer;
3. without fluency, the candidate with the highest key (the real activation when the feature
   fires, the margin to firing otherwise) replaces the current prompt if it is better. With
   fluency, the ``fluency_candidates`` best by key are scored by the model's own cross-entropy
   (resuming the screening forward from the SAE's layer where the hook allows it), the score is
   ``key / scale - fluency_weight * cross_entropy`` (``scale``: the feature's dataset maximum
   when known), or with ``fluency_target`` set ``key / scale - fluency_weight *
   max(cross_entropy - fluency_target, 0)``: as active as possible once as fluent as the target.
   Every scored prompt enters the row's Pareto set of (activation, cross-entropy).

A row stops after ``patience`` steps without improvement or when its next step would pass its
``max_sequences`` entry. Every sequence forwarded is counted against its row.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from saeinverse.invert.objective import FeatureTarget
from saeinverse.invert.project import Vocabulary
from saeinverse.invert.soft import _improves

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
    """The model's own cross-entropy of prompts, and its top next-token guesses per position."""

    def __init__(self, target: FeatureTarget, allowed: Tensor, top_k: int):
        self.target = target
        self.allowed = allowed
        self.top_k = top_k
        match = re.fullmatch(r"blocks\.(\d+)\.hook_resid_(pre|post)", target.hook_name)
        self.resume_layer = None
        if match:
            self.resume_layer = int(match.group(1)) + (1 if match.group(2) == "post" else 0)

    def score(
        self,
        ids: Int[Tensor, "batch pos"],
        resid: Float[Tensor, "batch pos1 d_model"] | None = None,
    ) -> tuple[Float[Tensor, " batch"], Int[Tensor, "batch pos k"]]:
        """(mean next-token cross-entropy, top-k predicted tokens per prompt position)."""
        model, start = self.target.model, self.target.start_id
        tokens = self.target.with_start(ids)
        ces, tops = [], []
        with torch.no_grad():
            for lo in range(0, ids.shape[0], 32):
                chunk = tokens[lo : lo + 32]
                if resid is not None and self.resume_layer is not None:
                    logits = model(resid[lo : lo + 32], start_at_layer=self.resume_layer)
                else:
                    logits = model(chunk, return_type="logits")
                logprobs = logits[:, :-1].float().log_softmax(-1)
                nll = -logprobs.gather(-1, chunk[:, 1:, None]).squeeze(-1)
                ces.append(nll.mean(-1))
                logprobs[..., ~self.allowed] = float("-inf")
                top = logprobs.topk(self.top_k, dim=-1).indices
                if start is None:  # the first prompt token has no prediction: reuse the second's
                    top = torch.cat([top[:, :1], top], dim=1)
                tops.append(top)
        return torch.cat(ces), torch.cat(tops)


def update_pareto(
    points: list[ParetoPoint], new: Sequence[ParetoPoint], size: int
) -> list[ParetoPoint]:
    """Non-dominated points (higher activation, lower cross-entropy), at most ``size`` spread evenly."""
    pool = {tuple(p.ids): p for p in [*points, *new] if p.activation > 0}
    front: list[ParetoPoint] = []
    for point in sorted(pool.values(), key=lambda p: (p.cross_entropy, -p.activation)):
        if not front or point.activation > front[-1].activation:
            front.append(point)
    if len(front) > size:
        keep = {round(i * (len(front) - 1) / (size - 1)) for i in range(size)}
        front = [p for i, p in enumerate(front) if i in keep]
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
    lm_top: Tensor | None
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
    ce = lm_top = None
    pareto: list[list[ParetoPoint]] = [[] for _ in range(n_rows)]
    if fluency is not None:
        ce, lm_top = fluency.score(init_ids, first.resid)
        for row in range(n_rows):
            point = ParetoPoint(init_ids[row].tolist(), float(act[row]), float(ce[row]))
            pareto[row] = update_pareto([], [point], pareto_size)
    state = _Rows(
        current=init_ids.clone(),
        key=key,
        act=act,
        score=key / scale - penalty(ce) if fluency is not None else key.clone(),
        ce=ce,
        lm_top=lm_top,
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
    step_cost = 2 + candidates + n_fluent  # gradient, shared prefix, candidates, fluency

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
        lm_top = state.lm_top[idx] if fluency is not None else None
        cands, positions = _draw_candidates(
            current, grad_top, lm_top, candidates, [generators[r] for r in rows]
        )
        share = share_prefix and len(rows) * candidates >= PREFIX_MIN_CANDIDATES
        c_key, c_act, c_resid = _screen(
            target, cands, positions, current, feature_ids[idx], fluency is not None, share
        )
        if fluency is None:
            new_score, pick = c_key.max(dim=1)
            new_ce = new_top = None
        else:
            pick, new_score, new_ce, new_top = _fluent_choice(
                fluency, cands, c_key, c_act, c_resid, scale_t[idx], penalty, n_fluent,
                state.pareto, rows, pareto_size,
            )  # fmt: skip
        for j, row in enumerate(rows):
            state.passes[row] += step_cost - (0 if share else 1)
            state.steps[row] += 1
            if _improves(float(new_score[j]), float(state.score[row])):
                state.current[row] = cands[j, pick[j]]
                state.score[row] = new_score[j]
                state.key[row], state.act[row] = c_key[j, pick[j]], c_act[j, pick[j]]
                if fluency is not None:
                    state.ce[row], state.lm_top[row] = new_ce[j], new_top[j]
                state.since[row] = 0
            else:
                state.since[row] += 1
                state.active[row] = state.since[row] < patience
            state.record(row)
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
    fluency, cands, c_key, c_act, c_resid, scale, penalty, n_fluent, pareto, rows, pareto_size
):
    """Score the best ``n_fluent`` candidates per row by cross-entropy; pick by the combined score."""
    batch, n, length = cands.shape
    n_fluent = min(n_fluent, n)
    top = c_key.topk(n_fluent, dim=1).indices  # [batch, n_fluent]
    gather = torch.arange(batch, device=top.device)[:, None]
    ids = cands[gather, top].reshape(batch * n_fluent, length)
    resid = (
        None
        if c_resid is None
        else c_resid[gather, top].reshape(batch * n_fluent, *c_resid.shape[2:])
    )
    ce, lm_top = fluency.score(ids, resid)
    ce = ce.reshape(batch, n_fluent)
    lm_top = lm_top.reshape(batch, n_fluent, *lm_top.shape[1:])
    keys = c_key[gather, top]
    combined = keys / scale[:, None] - penalty(ce)
    best = combined.argmax(dim=1)
    acts = c_act[gather, top]
    for j, row in enumerate(rows):
        new = [
            ParetoPoint(cands[j, top[j, m]].tolist(), float(acts[j, m]), float(ce[j, m]))
            for m in range(n_fluent)
        ]
        pareto[row] = update_pareto(pareto[row], new, pareto_size)
    pick = top[torch.arange(batch), best]
    r = torch.arange(batch)
    return pick, combined[r, best], ce[r, best], lm_top[r, best]
