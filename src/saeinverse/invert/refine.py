"""Discrete refinement: gradient-guided single-token swaps (the GCG / EPO family), batched.

The search runs a population of rows at once; each row serves one feature with one goal:

- an **unconstrained** row (``hinge is None``) maximises the key (the real activation when the
  feature fires, the margin to firing otherwise);
- a **fluent** row maximises ``key / scale - fluency_weight * max(cross_entropy - hinge, 0)``:
  as active as possible once its cross-entropy is at the hinge (``scale``: the feature's
  reference maximum when known). Its scored prompts enter the row's front.

Each step, for every still-active row:

1. one forward + backward on the current prompt gives the gradient of the objective with respect
   to the one-hot tokens (``grad_embeds @ W_E.T``); its ``top_k`` tokens per position are the
   promising swaps. A row whose tokens all come from the model (a fluent row with
   ``proposals='model'``, every row with ``'model_only'``, FLRT's moves) skips it and pays none;
2. ``candidates`` one-token moves are drawn with the row's own generator (positions in turn,
   shuffled; tokens from the gradient's top-k, and for a fluent row every other one from the
   model's own top next-token predictions at that position instead, ``proposals``): swaps, and
   with ``edit_moves`` every fourth an insert (a later token dropped) or a delete (the new token
   put later), so a phrase can shift by a token while both ends of the prompt stay;
3. every candidate is evaluated exactly by forwards stopped at the SAE's layer; with
   ``share_prefix`` the current prompt's keys and values are computed once (one sequence) and each
   candidate forwards only its suffix from the swapped position. With ``merge_swaps``, the row's
   improving swaps at distinct positions (by key, or a fluent row's estimated score below) are
   then merged, best first (the best two, the best three, ...), and each merge is screened the
   same way and joins the candidates, so one step can take several improvements;
4. each row keeps the most active candidate it screened (``best_seen``: the check re-scores it,
   so a fluent row's too costly but very active candidates still count for the unconstrained
   best); an unconstrained row takes its best candidate if it improves; a fluent row first
   shortlists ``fluency_candidates`` by an estimated score (the current cross-entropy changed by
   the swapped token's own term under the current prompt's next-token expectations), scores them
   exactly by the model's cross-entropy (resumed from the SAE's layer where the hook allows it)
   and takes the best combined score if it improves.

Fluent rows of one feature may form a **pool** (``optimization.population``, EPO's population over
fluency weights): each has its own weight, picks by it among every member's exactly scored
shortlist, and the members share one budget.

A row stops after ``patience`` steps without improvement, after ``steps`` steps, or when its
next step would pass its budget. Every forward is counted against its row, in sequence-equivalents
of token-layers (``invert.cost``: a suffix forward costs its share of a prompt, a gradient three
forwards, a cross-entropy every layer); nothing a row does depends on the other rows of the batch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
from jaxtyping import Int
from torch import Tensor

from saeinverse.config import OptimizationConfig
from saeinverse.invert.cost import Cost, reads_model, row_step_cost, start_cost, uses_gradient
from saeinverse.invert.fluency import Fluency
from saeinverse.invert.front import ParetoPoint, best_within, update_pareto
from saeinverse.invert.moves import draw_candidates, screen_candidates, with_merges
from saeinverse.invert.objective import FeatureTarget
from saeinverse.invert.project import Vocabulary
from saeinverse.invert.soft import improves

logger = logging.getLogger(__name__)


@dataclass
class Population:
    """What each row of the search is: its feature, start, randomness, scale, goal and budget."""

    feature_ids: Int[Tensor, " rows"]
    init_ids: Int[Tensor, "rows pos"]
    generators: list[torch.Generator]
    scale: list[float]
    """Divides the key in a fluent row's score (the reference max when known)."""
    hinge: list[float | None]
    """None: an unconstrained row; else the cross-entropy above which a fluent row is penalised."""
    budget: list[float | None]
    """Sequence-equivalents the row may spend (``invert.cost``; None: only the step limits stop it)."""
    weight: list[float] | None = None
    """A fluent row's own fluency weight (None: ``fluency_weight`` for every row)."""
    pool: list[int | None] | None = None
    """Fluent rows with the same pool (rows of one feature) each pick their next prompt among all
    of the pool's exactly scored candidates, by their own weight (EPO's population)."""
    levels: tuple[float, ...] = ()
    """Cross-entropies (the bound, real text's p90) whose most active point a fluent row's front
    keeps when it is thinned to ``pareto_size``."""


@dataclass
class RefineResult:
    """Per row: the final prompt, its screening activation, its front, history and costs."""

    ids: Int[Tensor, "rows pos"]
    activation: list[float]
    front: list[list[ParetoPoint]]
    accepted: list[list[tuple[list[int], float]]]
    """Every prompt the row accepted, in order, with its screening activation."""
    forward_passes: list[float]
    """Sequence-equivalents each row spent (``invert.cost``)."""
    steps: list[int]
    trajectory: list[dict[str, list[float]]]
    best_seen: list[list[int] | None] = field(default_factory=list)
    """Per row, the most active candidate it screened (accepted or not)."""


# ----------------------------------------------------------------------------- one step's parts


def _swap_gradient(target, vocab, ids, feature_ids, selectivity, top_k) -> Tensor:
    """The top-k tokens per position by the objective's gradient with respect to one-hot tokens."""
    embeds = vocab.W_E[ids].clone().requires_grad_(True)
    readout = target.read(target.hook_acts(ids, embeds), feature_ids, selectivity)
    (grad,) = torch.autograd.grad(readout.objective.sum(), embeds)
    scores = grad @ vocab.W_E.T  # [batch, pos, vocab]
    scores[..., ~vocab.allowed] = float("-inf")
    return scores.topk(top_k, dim=-1).indices


# ----------------------------------------------------------------------------- the state


@dataclass
class _State:
    """The search state of every row."""

    current: Tensor
    key: Tensor
    act: Tensor
    score: Tensor
    ce: Tensor
    logprobs: dict[int, Tensor]
    passes: list[float]
    steps: list[int]
    since: list[int]
    active: list[bool]
    front: list[list[ParetoPoint]]
    accepted: list[list[tuple[list[int], float]]]
    trajectory: list[dict[str, list[float]]] = field(default_factory=list)
    best_seen: list[tuple[list[int], float] | None] = field(default_factory=list)

    def record(self, row: int) -> None:
        self.trajectory[row]["activation"].append(float(self.act[row]))
        if self.ce[row] == self.ce[row]:  # NaN for rows that never score fluency
            self.trajectory[row]["cross_entropy"].append(float(self.ce[row]))


def _penalty(ce: Tensor, hinge: Tensor, weight: float) -> Tensor:
    """``weight * max(cross_entropy - hinge, 0)``."""
    return weight * (ce - hinge).clamp(min=0.0)


def _start(
    target, pop: Population, fluency: Fluency, weights: list[float], size: int, cost, lm_rows
) -> _State:
    """Score the start prompts (and the expectations of ``lm_rows``; a fluent row's score by its
    cross-entropy)."""
    n = pop.init_ids.shape[0]
    first = target.read_ids(pop.init_ids, pop.feature_ids)
    ce = torch.full((n,), float("nan"), device=target.device)
    score = first.key.clone()
    logprobs: dict[int, Tensor] = {}
    front: list[list[ParetoPoint]] = [[] for _ in range(n)]
    if lm_rows:
        f_ce, f_lp = fluency.expectations(pop.init_ids[lm_rows])
        for j, row in enumerate(lm_rows):
            logprobs[row] = f_lp[j]
            if pop.hinge[row] is None:
                continue
            ce[row] = f_ce[j]
            hinge = torch.tensor(pop.hinge[row], device=target.device)
            score[row] = first.key[row] / pop.scale[row] - _penalty(f_ce[j], hinge, weights[row])
            point = ParetoPoint(
                pop.init_ids[row].tolist(), float(first.activation[row]), float(f_ce[j])
            )
            front[row] = update_pareto([], [point], size)
    state = _State(
        current=pop.init_ids.clone(),
        key=first.key.clone(),
        act=first.activation.clone(),
        score=score,
        ce=ce,
        logprobs=logprobs,
        passes=[start_cost(cost, r in lm_rows) for r in range(n)],
        steps=[0] * n,
        since=[0] * n,
        active=[True] * n,
        front=front,
        accepted=[[(pop.init_ids[r].tolist(), float(first.activation[r]))] for r in range(n)],
        trajectory=[{"activation": [], "cross_entropy": []} for _ in range(n)],
        best_seen=[None] * n,
    )
    for row in range(n):
        state.record(row)
    return state


# ----------------------------------------------------------------------------- the search


def refine(
    target: FeatureTarget,
    vocab: Vocabulary,
    pop: Population,
    s: OptimizationConfig,
    *,
    share_prefix: bool = True,
    progress=None,
) -> RefineResult:
    """Greedy gradient-guided token search for every row at once; see the module docstring."""
    n_rows = pop.init_ids.shape[0]
    fluency = Fluency(target, vocab.allowed, s.refine_top_k)
    cost = Cost.of(target, pop.init_ids.shape[1])
    weights = pop.weight or [float(s.fluency_weight)] * n_rows
    lm_rows = [r for r in range(n_rows) if reads_model(s, pop.hinge[r] is not None)]
    state = _start(target, pop, fluency, weights, s.pareto_size, cost, lm_rows)
    n_fluent = min(s.fluency_candidates, s.refine_candidates)
    costs = [row_step_cost(cost, s, h is not None, share_prefix) for h in pop.hinge]
    for _ in range(s.refine_steps):
        _stop_over_budget(pop, state, costs)
        rows = [r for r in range(n_rows) if state.active[r]]
        if not rows:
            break
        _step(target, vocab, fluency, cost, pop, state, rows, s, n_fluent, share_prefix, weights)
        if progress is not None:
            progress.update(1)
    return RefineResult(
        state.current, state.act.tolist(), state.front, state.accepted,
        state.passes, state.steps, state.trajectory,
        [b[0] if b is not None else None for b in state.best_seen],
    )  # fmt: skip


def _stop_over_budget(pop: Population, state: _State, costs: list[float]) -> None:
    """Stop each row whose next step would pass its budget; a pool's rows share their budgets
    (the pool steps its rows in order while what is left of the pool's total holds them)."""
    pools: dict[int, list[int]] = {}
    for row, budget in enumerate(pop.budget):
        group = pop.pool[row] if pop.pool else None
        if group is not None and budget is not None:
            pools.setdefault(group, []).append(row)
        elif budget is not None and state.passes[row] + costs[row] > budget:
            state.active[row] = False
    for rows in pools.values():
        left = sum(pop.budget[r] - state.passes[r] for r in rows)
        for row in rows:
            if state.active[row] and left >= costs[row]:
                left -= costs[row]
            else:
                state.active[row] = False


def _step(
    target, vocab, fluency, cost, pop, state, rows, s, n_fluent, share_prefix, weights
) -> None:
    """One step of every active row in ``rows`` (see the module docstring)."""
    idx = torch.tensor(rows, device=target.device)
    current = state.current[idx]
    fids = pop.feature_ids[idx]
    lm_top = [
        fluency.top_tokens(state.logprobs[r][None])[0] if r in state.logprobs else None
        for r in rows
    ]
    gradient = [uses_gradient(s, pop.hinge[r] is not None) for r in rows]
    need = [j for j, g in enumerate(gradient) if g]  # only these rows pay the backward
    if need:
        drawn = iter(_swap_gradient(
            target, vocab, current[need], fids[need], s.selectivity_weight, s.refine_top_k
        ))  # fmt: skip
    # a row that does not draw from the gradient draws only from the model's expectations
    grad_top = torch.stack([next(drawn) if g else lm_top[j] for j, g in enumerate(gradient)])
    cands, positions = draw_candidates(
        current, grad_top, lm_top, s.refine_candidates, [pop.generators[r] for r in rows],
        s.edit_moves, s.proposals,
    )  # fmt: skip
    fluent = [j for j, r in enumerate(rows) if pop.hinge[r] is not None]
    prefix = target.prefix_cache(current) if share_prefix else None
    c_key, c_act, c_resid = screen_candidates(
        target, cands, positions, current, fids, bool(fluent), share_prefix, prefix
    )
    n_drawn = cands.shape[1]
    merged_cost = [0.0] * len(rows)
    f_rows = [rows[j] for j in fluent]
    f_weights = [weights[r] for r in f_rows]
    if fluent:  # the fluent rows' estimated scores, which shortlist their candidates
        f_est = _estimate(
            state, pop, f_rows, cands[fluent], positions[fluent], c_key[fluent], f_weights, n_drawn
        )
    if s.merge_swaps > 1:
        gain = c_key - state.key[idx][:, None]
        if fluent:
            gain[fluent] = f_est - state.score[torch.tensor(f_rows, device=f_est.device)][:, None]
        cands, positions, c_key, c_act, c_resid, merged_cost = with_merges(
            target, cost, prefix, current, fids, cands, positions, c_key, c_act, c_resid,
            gain, s.merge_swaps,
        )  # fmt: skip
        if fluent and cands.shape[1] > n_drawn:  # only the merges are still to estimate
            merged = _estimate(
                state, pop, f_rows, cands[fluent, n_drawn:], positions[fluent, n_drawn:],
                c_key[fluent, n_drawn:], f_weights, 0,
            )  # fmt: skip
            f_est = torch.cat([f_est, merged], dim=1)
    top_act, top_at = c_act.max(dim=1)
    for j, row in enumerate(rows):
        seen = state.best_seen[row]
        if float(top_act[j]) > 0 and (seen is None or float(top_act[j]) > seen[1]):
            state.best_seen[row] = (cands[j, int(top_at[j])].tolist(), float(top_act[j]))
    new_score, pick = c_key.max(dim=1)
    flat = torch.arange(len(rows), device=cands.device)
    new_ids, new_key, new_act = cands[flat, pick], c_key[flat, pick], c_act[flat, pick]
    new_ce = torch.full_like(new_score, float("nan"))
    if fluent:
        chosen = _fluent_choice(
            fluency, state, pop, f_rows, cands[fluent], f_est, c_key[fluent], c_act[fluent],
            c_resid[fluent], n_fluent, f_weights, s.pareto_size,
        )  # fmt: skip
        new_ids[fluent], new_key[fluent], new_act[fluent] = chosen[:3]
        new_score[fluent], new_ce[fluent] = chosen[3:]
    accepted = []
    ce_cost = cost.resumed if fluency.resume_layer is not None else cost.full
    for j, row in enumerate(rows):
        drawn = positions[j, :n_drawn].tolist()
        if share_prefix:
            screened = cost.sequence + sum(cost.suffix(int(p)) for p in drawn) + merged_cost[j]
        else:
            screened = s.refine_candidates * cost.sequence + merged_cost[j]
        state.passes[row] += (cost.gradient if gradient[j] else 0.0) + screened
        if pop.hinge[row] is not None:
            state.passes[row] += n_fluent * ce_cost
        state.steps[row] += 1
        if improves(float(new_score[j]), float(state.score[row])):
            state.current[row] = new_ids[j]
            state.score[row] = new_score[j]
            state.key[row], state.act[row] = new_key[j], new_act[j]
            state.ce[row] = new_ce[j]
            state.accepted[row].append((state.current[row].tolist(), float(state.act[row])))
            accepted.append(row)
            state.since[row] = 0
        else:
            state.since[row] += 1
            state.active[row] = state.since[row] < s.patience
        state.record(row)
    reading = [r for r in accepted if r in state.logprobs]  # rows that keep expectations
    if reading:
        logprobs = fluency.expectations(state.current[reading])[1]
        for j, row in enumerate(reading):
            state.logprobs[row] = logprobs[j]
            state.passes[row] += cost.full


def _estimate(state, pop, rows, cands, positions, c_key, weights, n_drawn):
    """Each fluent row's estimated score of each candidate: the current cross-entropy changed by
    the swapped token's own term under the current prompt's expectations (later tokens' terms
    are left as they were); for a merged candidate (from ``n_drawn`` on), by every swapped
    token's term."""
    batch, n, length = cands.shape
    device = cands.device
    logprobs = torch.stack([state.logprobs[r] for r in rows])  # [batch, pos, vocab]
    scale = torch.tensor([pop.scale[r] for r in rows], device=device)[:, None]
    hinge = torch.tensor([pop.hinge[r] for r in rows], device=device)[:, None]
    weight = torch.tensor(weights, device=device)[:, None]
    r_idx = torch.arange(batch, device=device)[:, None]
    pos = positions.to(device)
    current = state.current[torch.tensor(rows, device=device)]
    old = current.gather(1, pos)
    new = cands[r_idx, torch.arange(n, device=device)[None, :], pos]
    delta = (logprobs[r_idx, pos, old] - logprobs[r_idx, pos, new]) / length
    if n > n_drawn:
        now = logprobs.gather(2, current[..., None])[..., 0]  # [batch, pos]
        merged = cands[:, n_drawn:]
        after = logprobs.gather(2, merged.transpose(1, 2)).transpose(1, 2)
        changed = (merged != current[:, None, :]).float()
        delta[:, n_drawn:] = ((now[:, None, :] - after) * changed).sum(-1) / length
    ce_now = state.ce[torch.tensor(rows, device=device)][:, None]
    return c_key / scale - _penalty(ce_now + delta, hinge, weight)


def _fluent_choice(
    fluency, state, pop, rows, cands, estimate, c_key, c_act, c_resid, n_fluent, weights, size
):
    """Shortlist ``n_fluent`` candidates per fluent row by their estimated score (``_estimate``),
    score them exactly.

    The shortlist's cross-entropy is computed exactly, and each row picks the best combined
    score by its own weight among its shortlist and, in a pool, its pool mates' shortlists.
    Returns the picked (ids, key, activation, score, cross-entropy) per row.
    """
    batch, n, length = cands.shape
    device = cands.device
    scale = torch.tensor([pop.scale[r] for r in rows], device=device)[:, None]
    hinge = torch.tensor([pop.hinge[r] for r in rows], device=device)[:, None]
    weight = torch.tensor(weights, device=device)[:, None]
    r_idx = torch.arange(batch, device=device)[:, None]
    top = estimate.topk(min(n_fluent, n), dim=1).indices  # [batch, n_fluent]
    ids = cands[r_idx, top]  # [batch, n_fluent, pos]
    resid = c_resid[r_idx, top].reshape(-1, *c_resid.shape[2:])
    ce = fluency.cross_entropy(ids.reshape(-1, length), resid).reshape(top.shape)
    keys, acts = c_key[r_idx, top], c_act[r_idx, top]
    for j, row in enumerate(rows):
        points = [
            ParetoPoint(ids[j, m].tolist(), float(acts[j, m]), float(ce[j, m]))
            for m in range(top.shape[1])
        ]
        keep = best_within([*state.front[row], *points], pop.levels)
        state.front[row] = update_pareto(state.front[row], points, size, keep=keep)
    combined = keys / scale - _penalty(ce, hinge, weight)
    flat = torch.arange(batch, device=device)
    whose, pick = flat.clone(), combined.argmax(dim=1)  # whose shortlist, which candidate
    score = combined[flat, pick]
    pools = [pop.pool[r] if pop.pool else None for r in rows]
    for j, pool in enumerate(pools):
        if pool is None:
            continue
        mates = torch.tensor([k for k in range(batch) if pools[k] == pool], device=device)
        theirs = keys[mates] / scale[j] - _penalty(ce[mates], hinge[j], weight[j])
        m, c = divmod(int(theirs.argmax()), top.shape[1])
        whose[j], pick[j], score[j] = mates[m], c, theirs[m, c]
    return ids[whose, pick], keys[whose, pick], acts[whose, pick], score, ce[whose, pick]
