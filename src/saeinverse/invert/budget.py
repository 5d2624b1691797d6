"""The inversion's budget: how one feature's ``max_sequences`` is split between the soft stage and
the refinement rows (``plan_budget``), the least a config needs (``minimum_sequences``), and
where a soft stage that stopped early leaves its unspent share (``soft_leftover``).

Budgets are sequence-equivalents of token-layers (``invert.cost``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from saeinverse.config import OptimizationConfig
from saeinverse.errors import ConfigError
from saeinverse.invert.beam import beam_cost
from saeinverse.invert.cost import GRADIENT, Cost, reads_model, row_step_cost, start_cost
from saeinverse.invert.starts import (
    FLUENT,
    FLUENT_SOFT,
    FLUENT_START_SCREEN,
    FLUENT_STREAMS,
    UNCONSTRAINED,
)

TEXT_SHARE = 2 / 3
"""With ``fluent_start='both'``, the fluent row from text gets this part of ``fluent_share`` and
the row from the soft prompt the rest: the headlines come from the row that starts where the
feature already fires, the soft row keeps a second route on the front."""


@dataclass
class BudgetPlan:
    """How one feature's ``max_sequences`` is spent: soft steps, and each refinement row's share."""

    soft_steps: int
    rows: list[tuple[int, int | None]]
    """(stream, budget) per refinement row: ``UNCONSTRAINED`` / ``FLUENT`` and its sequences."""


def from_text(s: OptimizationConfig) -> bool:
    """Whether the ``FLUENT`` row starts from real text (and pays for screening the windows)."""
    return s.fluent_start != "soft"


def _row_needs(
    s: OptimizationConfig, cost: Cost, share_prefix: bool
) -> list[tuple[int, float, float]]:
    """(stream, share of the refinement budget, what its start and one step cost) per row."""
    fluent = s.fluency_weight > 0
    shares = [(UNCONSTRAINED, 1.0 - s.fluent_share if fluent else 1.0)]
    if fluent and s.fluent_start == "both":
        text = s.fluent_share * TEXT_SHARE
        shares += [(FLUENT, text / s.population)] * s.population
        shares.append((FLUENT_SOFT, s.fluent_share - text))
    elif fluent:
        shares += [(FLUENT, s.fluent_share / s.population)] * s.population
    rows = []
    for stream, share in shares:
        if share <= 0:
            continue
        is_fluent = stream in FLUENT_STREAMS
        need = start_cost(cost, reads_model(s, is_fluent))
        if stream == FLUENT and from_text(s):
            need += (
                beam_cost(cost, s.beam_width, s.beam_proposals, s.length)
                if s.beam_width > 0
                else FLUENT_START_SCREEN
            ) / s.population
        if s.refine_steps > 0:
            need += row_step_cost(cost, s, is_fluent, share_prefix)
        rows.append((stream, share, need))
    return rows


def minimum_sequences(s: OptimizationConfig, cost: Cost, share_prefix: bool = True) -> int:
    """The smallest ``max_sequences`` that ``plan_budget`` accepts for ``s``."""
    needs = _row_needs(s, cost, share_prefix)
    return int(GRADIENT * s.max_steps + 1 + max(need / share for _, share, need in needs)) + 1


def plan_budget(
    s: OptimizationConfig, share_prefix: bool = True, cost: Cost | None = None
) -> BudgetPlan:
    """Split ``max_sequences`` between the soft stage and the refinement rows, or refuse it.

    Budgets are sequence-equivalents (``invert.cost``); ``cost`` is the model's (without one,
    a one-layer model's, which under-counts cross-entropies: the refusal is then a lower bound).
    """
    cost = cost or Cost(s.length + 1, 1, 1)
    needs = _row_needs(s, cost, share_prefix)
    if s.max_sequences is None:
        return BudgetPlan(s.max_steps, [(stream, None) for stream, _, _ in needs])
    soft = GRADIENT * s.max_steps + 1
    rest = s.max_sequences - soft
    rows = []
    for stream, share, need in needs:
        budget = rest * share
        if budget < need:
            is_fluent = stream in FLUENT_STREAMS
            kind = "fluent" if is_fluent else "unconstrained"
            raise ConfigError(
                f"optimization.max_sequences={s.max_sequences} cannot hold the search: the soft "
                f"stage takes 3 x max_steps + 1 = {soft:g} sequence-equivalents and the {kind} "
                f"row's share ({share:g} of the rest = {budget:.0f}) is under its start and one "
                f"refinement step ({need:.0f}); raise max_sequences to at least "
                f"{minimum_sequences(s, cost, share_prefix)} or lower max_steps / "
                "refine_candidates" + (" / beam_width" if is_fluent and s.beam_width > 0 else "")
            )
        rows.append((stream, budget))
    return BudgetPlan(s.max_steps, rows)


def soft_leftover(
    plan: BudgetPlan,
    budgets: list[float | None],
    owners: list[int],
    streams: list[int],
    soft_spent: Sequence[float],
) -> list[float | None]:
    """The rows' budgets with what each feature's soft stage left unspent (it stopped early,
    out of patience) added to its fluent rows from text (the headline's row, split among a
    population), or to its unconstrained row when it has none: the whole search spends its
    ``max_sequences`` whether or not the soft stage stopped early."""
    planned = GRADIENT * plan.soft_steps + 1.0
    takers = [st for st, _ in plan.rows if st == FLUENT] or [plan.rows[0][0]]
    out = list(budgets)
    for row, (o, st) in enumerate(zip(owners, streams, strict=True)):
        if out[row] is not None and st == takers[0]:
            out[row] += max(0.0, planned - soft_spent[o]) / len(takers)
    return out
