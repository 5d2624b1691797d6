"""What inversion work costs, in sequence-equivalents of token-layers.

Every forward is counted as the token positions it runs times the layers it runs them through
(a backward counts as two forwards; the unembedding as the layers its multiply-adds make:
``d_vocab × d_model`` over one block's, about 8 blocks for SmolLM2-135M's 49k-token vocabulary). One **sequence-equivalent**
is one prompt (``length`` tokens and the start token) forwarded up to the SAE's hook, so:

- a screening forward of a whole prompt to the hook costs 1;
- a candidate that reuses the current prompt's keys and values from position ``p`` on forwards
  only its suffix: ``suffix / tokens``;
- a cached one-token step of a left-to-right beam costs ``1 / tokens`` up to the hook;
- a gradient (forward and backward to the hook) costs 3;
- a cross-entropy needs every layer and the unembedding: ``(layers + unembed) / to_hook`` per
  prompt, or ``(layers - to_hook + unembed) / to_hook`` resumed from the hook's activations.

``optimization.max_sequences`` is a budget in these units, so two searches with the same budget
did the same work whatever their moves.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from saeinverse.config import OptimizationConfig
from saeinverse.models.hooks import resume_layer_for

GRADIENT = 3.0
"""A forward and its backward (two forwards), in forwards of the same positions."""


def unembed_layers(cfg) -> float:
    """The unembedding's multiply-adds per token in blocks' (at least 1): ``d_vocab × d_model``
    over a block's attention projections (query and output, key and value for their heads) and
    MLP (three matrices when gated, else two)."""
    d_model, d_head = int(cfg.d_model), int(cfg.d_head)
    heads = int(cfg.n_heads)
    kv_heads = int(getattr(cfg, "n_key_value_heads", None) or heads)
    attention = 2 * d_model * heads * d_head + 2 * d_model * kv_heads * d_head
    mlp_mats = 3 if getattr(cfg, "gated_mlp", False) else 2
    mlp = mlp_mats * d_model * int(cfg.d_mlp or 4 * d_model)
    return max(1.0, int(cfg.d_vocab) * d_model / (attention + mlp))


def layers_to_hook(hook_name: str, n_layers: int) -> int:
    """Transformer blocks a forward runs to reach ``hook_name`` (at least 1)."""
    resume = resume_layer_for(hook_name)
    if resume is None:
        match = re.match(r"blocks\.(\d+)\.", hook_name)
        resume = int(match.group(1)) + 1 if match else n_layers
    return max(1, min(int(resume), int(n_layers)))


@dataclass(frozen=True)
class Cost:
    """Sequence-equivalents of each kind of forward, for one model, hook and prompt length."""

    tokens: int
    """Positions of one prompt: ``length`` plus the start token (when the model has one)."""
    to_hook: int
    """Layers forwarded up to the SAE's hook."""
    layers: int
    """The model's layers."""
    offset: int = 1
    """Positions in front of the prompt (1 with a start token)."""
    unembed: float = 1.0
    """The unembedding, in layers (``unembed_layers``)."""

    @classmethod
    def of(cls, target, length: int) -> Cost:
        n_layers = int(target.model.cfg.n_layers)
        to_hook = layers_to_hook(target.hook_name, n_layers)
        offset = int(target.start_offset)
        unembed = unembed_layers(target.model.cfg)
        return cls(int(length) + offset, to_hook, n_layers, offset, unembed)

    def forward(self, positions: float = 1.0) -> float:
        """``positions`` token positions forwarded up to the hook."""
        return positions / self.tokens

    @property
    def sequence(self) -> float:
        """A whole prompt forwarded up to the hook (1)."""
        return 1.0

    @property
    def gradient(self) -> float:
        """A whole prompt forwarded and backpropagated to the hook."""
        return GRADIENT

    @property
    def full(self) -> float:
        """A whole prompt through every layer and the unembedding (a cross-entropy)."""
        return (self.layers + self.unembed) / self.to_hook

    @property
    def resumed(self) -> float:
        """A cross-entropy resumed from the hook's activations."""
        return (max(0, self.layers - self.to_hook) + self.unembed) / self.to_hook

    def suffix(self, start: int) -> float:
        """A candidate forwarded from prompt position ``start`` on, the prefix's cache reused."""
        return self.forward(self.length - start)

    @property
    def length(self) -> int:
        """Prompt tokens (without the start token)."""
        return self.tokens - self.offset


# ------------------------------------------------------------------ a refinement row's costs


def uses_gradient(s: OptimizationConfig, fluent: bool) -> bool:
    """Whether a row draws tokens from the feature's gradient (and pays its backward): an
    unconstrained row unless ``proposals='model_only'`` (FLRT's moves: every row's tokens from the
    model's own predictions), a fluent row unless its tokens all come from the model
    (``'model'`` or ``'model_only'``)."""
    if fluent:
        return s.proposals not in ("model", "model_only")
    return s.proposals != "model_only"


def reads_model(s: OptimizationConfig, fluent: bool) -> bool:
    """Whether a row keeps the model's next-token expectations: a fluent row always, every row
    with ``proposals='model_only'``."""
    return fluent or s.proposals == "model_only"


def step_cost(
    cost: Cost,
    candidates: int,
    n_fluent: int,
    fluent: bool,
    share_prefix: bool,
    gradient: bool = True,
    expectations: bool | None = None,
    merges: int = 0,
) -> float:
    """The most one step of a row may spend: gradient, prefix, candidates (each a whole suffix at
    most, ``merges`` merged swaps among them), a fluent row's shortlist's cross-entropies, and
    the new expectations of a row that keeps them (``expectations``, by default a fluent row)."""
    if share_prefix:
        screen = cost.sequence + (candidates + merges) * cost.suffix(0)
    else:
        screen = (candidates + merges) * cost.sequence
    expectations = fluent if expectations is None else expectations
    return (
        (cost.gradient if gradient else 0.0)
        + screen
        + (n_fluent * cost.resumed if fluent else 0.0)
        + (cost.full if expectations else 0.0)
    )


def row_step_cost(cost: Cost, s: OptimizationConfig, fluent: bool, share_prefix: bool) -> float:
    """``step_cost`` of one row of the search that ``s`` configures (its candidates, its fluent
    shortlist, its merged swaps, and whether it pays the gradient and keeps the expectations)."""
    return step_cost(
        cost, s.refine_candidates, min(s.fluency_candidates, s.refine_candidates), fluent,
        share_prefix, uses_gradient(s, fluent), reads_model(s, fluent), merges(s),
    )  # fmt: skip


def merges(s: OptimizationConfig) -> int:
    """Merged swaps a step may screen at most (``merge_swaps``: the best two, three, ...)."""
    return max(0, s.merge_swaps - 1)


def start_cost(cost: Cost, expectations: bool) -> float:
    """Scoring a row's start prompt: its activation, and the expectations of a row that keeps
    them (a fluent row)."""
    return cost.sequence + (cost.full if expectations else 0.0)
