"""Weight layouts that make TransformerLens' per-forward weight copies free (same values).

TransformerLens (3.x) copies weights on every forward to hand ``F.linear`` the layout of Hugging
Face's ``nn.Linear``: ``W.T.contiguous()`` for each MLP matrix and the unembedding, and
``rearrange(...)`` of each attention matrix. For SmolLM2-135M that is about 110 MB per forward
to the hook and as much again for one unembedding, which costs more than the matrix products
themselves when the batch is a few prompts (the inversion's candidates, the beam's one-token
steps): measured on 2 cores, ``F.linear`` of 16 rows through one 576 × 1536 MLP matrix takes
1.6 ms with the copy and 0.2 ms without.

``fast_layout`` stores each such parameter as a view of a tensor already laid out the way the
forward asks for, so the copy becomes a no-op: the values, shapes and the products' operands are
the same (the same numbers come out), only the strides of the parameters change. It is applied
when a model is loaded (``models.loading``) and by the inversion's ``FeatureTarget`` (a model
built elsewhere, e.g. in a notebook); applying it twice changes nothing.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

logger = logging.getLogger(__name__)

LINEAR_2D = {"GatedMLP": ("W_gate", "W_in", "W_out"), "Unembed": ("W_U",)}
"""Modules whose forward computes ``F.linear(x, W.T.contiguous())``: the matrices it copies."""

ATTENTION_IN = ("W_Q", "W_K", "W_V", "_W_K", "_W_V")
"""Attention inputs ``[head, d_model, d_head]``, read as ``rearrange(W, "h m d -> (h d) m")``."""


def _relayout(param: nn.Parameter, read: tuple[int, ...]) -> bool:
    """Store ``param`` so that ``param.permute(read)`` (what the forward copies) is contiguous;
    return whether anything changed."""
    wanted = param.data.permute(read)
    if wanted.is_contiguous():
        return False
    param.data = wanted.contiguous().permute(tuple(read.index(i) for i in range(len(read))))
    return True


def fast_layout(model: nn.Module) -> nn.Module:
    """Re-lay out ``model``'s copied weights in memory (values unchanged); returns ``model``."""
    changed = 0
    with torch.no_grad():
        for module in model.modules():
            kind = type(module).__name__
            for name in LINEAR_2D.get(kind, ()):
                param = module._parameters.get(name)
                if isinstance(param, nn.Parameter) and param.dim() == 2:
                    changed += _relayout(param, (1, 0))
            if not hasattr(module, "attn_scale"):
                continue
            for name in ATTENTION_IN:
                param = module._parameters.get(name)
                if isinstance(param, nn.Parameter) and param.dim() == 3:
                    changed += _relayout(param, (0, 2, 1))  # read as [head, d_head, d_model]
            param = module._parameters.get("W_O")
            if isinstance(param, nn.Parameter) and param.dim() == 3:
                changed += _relayout(param, (2, 0, 1))  # read as [d_model, head, d_head]
    if changed:
        logger.debug("re-laid out %d weight matrices for copy-free forwards", changed)
    return model
