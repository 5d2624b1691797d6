"""Soft prompts: continuous embeddings for all target features, optimised in one batch.

Row ``i`` of ``P`` (shape ``[n_features, length, d_model]``) serves feature ``feature_ids[i]``
alone: the forward is batched, the objective is a sum of per-row terms, Adam is elementwise, and
a row that stops early is frozen, so a batch gives each row what a loop would.

Two modes:

- ``project=True`` (default, PEZ): each step forwards the *projected* prompt (every position's
  nearest token by cosine) and applies the gradient to the continuous copy (straight-through).
  Each forward is then a real prompt's forward, so the best hard prompt seen is kept as we go.
- ``project=False``: the continuous embeddings themselves are forwarded. Their optimum lives off
  the token manifold (norms clamped to the vocabulary's range still project badly), so this mode
  only reports ``soft_activation`` and projects once at the end.

Each position's norm is clamped into the vocabulary embeddings' norm range after every step.
Optional penalties: other features' activations (``selectivity_weight``) and the L2 distance to
the nearest token embedding (``embedding_distance_weight``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from jaxtyping import Float, Int
from torch import Tensor

from saeinverse.config import OptimizationConfig
from saeinverse.invert.cost import GRADIENT
from saeinverse.invert.objective import FeatureTarget
from saeinverse.invert.project import Vocabulary

logger = logging.getLogger(__name__)

IMPROVEMENT = 1e-6
"""Smallest key gain that resets the patience counter (relative to max(1, |best|))."""


@dataclass
class SoftResult:
    """Per row: the continuous prompt, its activation, and the best hard prompt met on the way."""

    embeds: Float[Tensor, "n_features pos d_model"]
    soft_activation: list[float]
    best_ids: Int[Tensor, "n_features pos"]
    best_key: Float[Tensor, " n_features"]
    steps: list[int]
    forward_passes: list[float]
    """Sequence-equivalents spent (``invert.cost``): a gradient per step, one final forward."""
    trajectory: list[dict[str, list[float]]] = field(default_factory=list)


def initial_ids(
    vocab: Vocabulary,
    length: int,
    generators: Sequence[torch.Generator],
    exemplars: Sequence[Sequence[int] | None] | None = None,
) -> Int[Tensor, "n_features pos"]:
    """Start prompts: random allowed tokens, or each feature's exemplar (its last ``length`` tokens).

    An exemplar shorter than ``length`` is left-padded with random tokens, so the exemplar's
    final (peak) token stays at the read position for ``position='last'``.
    """
    allowed = vocab.allowed_ids.cpu()
    rows = []
    for i, gen in enumerate(generators):
        row = allowed[torch.randint(len(allowed), (length,), generator=gen)]
        exemplar = exemplars[i] if exemplars is not None else None
        if exemplar:
            tail = torch.tensor(list(exemplar)[-length:], dtype=torch.long)
            row[length - len(tail) :] = tail
        rows.append(row)
    return torch.stack(rows).to(vocab.W_E.device)


def improves(new: float, best: float) -> bool:
    """True when ``new`` beats ``best`` by more than a relative hair (any finite beats -inf)."""
    if best == float("-inf"):
        return new > best
    return new > best + IMPROVEMENT * max(1.0, abs(best))


def lr_factor(step: int, max_steps: int, warmup: int) -> float:
    """Linear warmup, then cosine decay to a tenth of the learning rate."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, max_steps - warmup)
    return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def optimize_soft(
    target: FeatureTarget,
    vocab: Vocabulary,
    feature_ids: Int[Tensor, " n_features"],
    init_ids: Int[Tensor, "n_features pos"],
    s: OptimizationConfig,
    *,
    max_steps: int | None = None,
    progress=None,
) -> SoftResult:
    """Adam on the soft prompts of all rows at once; see the module docstring.

    ``max_steps`` (default ``s.max_steps``) is the step limit the budget leaves; each step
    forwards and backpropagates one sequence per row (3 sequence-equivalents), and one more
    forward reads the final soft prompt.
    """
    max_steps = s.max_steps if max_steps is None else max_steps
    lr, patience, project = s.lr, s.patience, s.project_in_loop
    selectivity_weight, embedding_distance_weight = (
        s.selectivity_weight,
        s.embedding_distance_weight,
    )
    n = init_ids.shape[0]
    embeds = vocab.W_E[init_ids].clone().requires_grad_(True)
    optimizer = torch.optim.Adam([embeds], lr=lr)
    warmup = max(1, min(10, max_steps // 10))
    frozen = embeds.detach().clone()
    active = torch.ones(n, dtype=torch.bool)
    best_key = torch.full((n,), float("-inf"), device=target.device)
    best_ids = init_ids.clone()
    since_best = torch.zeros(n, dtype=torch.long)
    steps = [0] * n
    trajectory = [{"objective": [], "activation": []} for _ in range(n)]

    for step in range(max_steps):
        rows = active.nonzero().squeeze(-1)
        if len(rows) == 0:
            break
        rows_dev = rows.to(target.device)
        for group in optimizer.param_groups:
            group["lr"] = lr * lr_factor(step, max_steps, warmup)
        x = embeds[rows_dev]
        ids, distance = vocab.nearest(x)
        # Straight-through: forward the nearest tokens' embeddings exactly, step the continuous copy.
        forwarded = vocab.W_E[ids] + (x - x.detach()) if project else x
        readout = target.read(
            target.hook_acts(ids, forwarded), feature_ids[rows_dev], selectivity_weight
        )
        loss = -readout.objective.sum()
        if embedding_distance_weight:
            loss = loss + embedding_distance_weight * distance.mean(-1).sum()
        (grad,) = torch.autograd.grad(loss, embeds)
        embeds.grad = grad
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            embeds[~active.to(target.device)] = frozen[~active.to(target.device)]
            vocab.clamp_norms(embeds)

        objective, activation = readout.objective.detach(), readout.activation.detach()
        key = readout.key.detach() if project else objective
        for j, row in enumerate(rows.tolist()):
            steps[row] += 1
            trajectory[row]["objective"].append(float(objective[j]))
            trajectory[row]["activation"].append(float(activation[j]))
            if improves(float(key[j]), float(best_key[row])):
                best_key[row] = key[j]
                best_ids[row] = ids[j]
                since_best[row] = 0
            else:
                since_best[row] += 1
                if since_best[row] >= patience:
                    active[row] = False
                    frozen[row] = embeds.detach()[row]
        if progress is not None:
            progress.update(1)

    final = embeds.detach()
    if not project:
        best_ids = vocab.nearest(final)[0]
    with torch.no_grad():
        soft = target.read(target.hook_acts(best_ids, final), feature_ids).activation
    forward_passes = [GRADIENT * s + 1.0 for s in steps]
    logger.debug("soft stage: %d rows, steps %s", n, steps)
    return SoftResult(final, soft.tolist(), best_ids, best_key, steps, forward_passes, trajectory)
