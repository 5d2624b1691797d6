"""How good an SAE is on held-out text, measured by saeinverse itself.

SAELens computes no evaluation metrics unless it logs to wandb, so `train-sae` measures the SAE
it trained here, on text the SAE never saw. Every metric skips padding and position 0: the start
token takes the attention sink (a residual several times the norm of the others) and the SAEs
saeinverse trains never see it.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from saeinverse.errors import DataError
from saeinverse.models.hooks import hook_activations

if TYPE_CHECKING:
    from sae_lens import SAE
    from transformer_lens import HookedTransformer

logger = logging.getLogger(__name__)

QUALITY_FILENAME = "quality.json"
"""The file next to a trained SAE's `cfg.json` holding its `SAEQuality` and training info."""


@dataclass(frozen=True)
class SAEQuality:
    """An SAE's quality on held-out text (padding and position 0 excluded from every figure)."""

    l0: float
    """Mean number of features active (> 0) per token."""
    explained_variance: float
    """1 - Σ_t ‖x_t - x̂_t‖² / Σ_t ‖x_t - μ‖², with μ the mean of x_t over the evaluated tokens."""
    mse: float
    """Mean squared reconstruction error per token: Σ_t ‖x_t - x̂_t‖² / n_tokens."""
    ce_loss_clean: float
    """The model's next-token cross-entropy (nats), unmodified."""
    ce_loss_sae: float
    """The same with the SAE's reconstruction x̂ spliced in at the hook (positions ≥ 1)."""
    ce_loss_zero: float
    """The same with the hook's output zero-ablated (positions ≥ 1)."""
    ce_recovered: float
    """(ce_loss_zero - ce_loss_sae) / (ce_loss_zero - ce_loss_clean): 1 is perfect, 0 no better
    than zero-ablation; NaN when zero-ablation does not change the loss."""
    dead_fraction: float
    """Fraction of features never active on the evaluated tokens."""
    n_tokens: int
    """Tokens behind l0, explained_variance, mse and dead_fraction."""
    n_ce_tokens: int
    """Next-token predictions behind the three cross-entropies."""

    def to_dict(self) -> dict[str, Any]:
        """The metrics as a JSON-ready dict (field name -> number)."""
        return asdict(self)


def evaluate_sae(
    model: HookedTransformer,
    sae: SAE[Any],
    texts: list[str],
    *,
    hook_name: str,
    context_size: int = 128,
    n_sequences: int = 32,
    ce_sequences: int = 8,
    batch_size: int = 8,
) -> SAEQuality:
    """Measure `sae` at `hook_name` of `model` on the first `n_sequences` of `texts`.

    Each text is tokenized with `model.to_tokens` (the model's own start-token convention) and cut
    to `context_size` tokens. Reconstruction metrics use all `n_sequences`; the cross-entropies
    (three full forward passes each) use the first `ce_sequences`. A cross-entropy term is the
    prediction made at position p ≥ 1 of the real token at p + 1. The SAE reconstruction and the
    zero-ablation replace the hook's output at every position but 0, which keeps the start
    token's attention sink intact as in training.
    """
    tokens, mask = tokenize_for_eval(model, texts[:n_sequences], context_size)
    if not mask.any():
        raise DataError(
            f"No tokens to evaluate the SAE on: {len(texts)} texts gave no token after position 0."
        )
    totals = _ReconstructionTotals(sae.cfg.d_sae)
    with torch.inference_mode():
        for start in range(0, tokens.shape[0], batch_size):
            batch = tokens[start : start + batch_size]
            acts = hook_activations(model, batch, hook_name)
            totals.add(sae, acts[mask[start : start + batch_size]])
        ce = _ce_losses(
            model, sae, tokens[:ce_sequences], mask[:ce_sequences], hook_name, batch_size
        )
    quality = totals.finish(*ce)
    logger.info(
        "SAE quality on %d held-out tokens: L0 %.1f, explained variance %.3f, CE recovered %.3f "
        "(clean %.3f, SAE %.3f, zero %.3f), dead %.1f%%",
        quality.n_tokens,
        quality.l0,
        quality.explained_variance,
        quality.ce_recovered,
        quality.ce_loss_clean,
        quality.ce_loss_sae,
        quality.ce_loss_zero,
        100 * quality.dead_fraction,
    )
    return quality


def tokenize_for_eval(
    model: HookedTransformer, texts: list[str], context_size: int
) -> tuple[Int[Tensor, "batch pos"], Bool[Tensor, "batch pos"]]:
    """Tokens of `texts` (right-padded, cut to `context_size`) and the mask of evaluated tokens.

    The mask is False on padding (the trailing pad tokens of each row) and at position 0.
    """
    from transformer_lens.utilities.tokenize_utils import get_attention_mask

    if not texts:
        raise DataError("No texts to evaluate the SAE on.")
    tokens = model.to_tokens(texts, truncate=True, padding_side="right")[:, :context_size]
    mask = get_attention_mask(
        model.tokenizer, tokens, model.cfg.default_prepend_bos, padding_side="right"
    ).bool()
    mask[:, 0] = False
    return tokens, mask


def reconstruct(sae: SAE[Any], acts: Tensor) -> tuple[Tensor, Tensor]:
    """The SAE's feature activations and reconstruction of `acts` (in the activations' dtype)."""
    features = sae.encode(acts.to(sae.dtype))
    return features, sae.decode(features).to(acts.dtype)


class _ReconstructionTotals:
    """Running sums for L0, explained variance, MSE and dead features (float64 accumulators)."""

    def __init__(self, d_sae: int) -> None:
        self.n = 0
        self.active = 0.0
        self.sum_x: Tensor | None = None
        self.sum_sq_x = 0.0
        self.sum_sq_err = 0.0
        self.fired = torch.zeros(d_sae, dtype=torch.bool)

    def add(self, sae: SAE[Any], acts: Float[Tensor, "n_tokens d_in"]) -> None:
        """Fold in one batch of (already masked) activations."""
        features, recon = reconstruct(sae, acts)
        x = acts.flatten(1).double()
        firing = features > 0
        self.n += x.shape[0]
        self.active += float(firing.sum())
        self.fired |= firing.any(0).cpu()
        sum_x = x.sum(0)
        self.sum_x = sum_x if self.sum_x is None else self.sum_x + sum_x
        self.sum_sq_x += float((x * x).sum())
        self.sum_sq_err += float((x - recon.flatten(1).double()).pow(2).sum())

    def finish(self, ce_clean: float, ce_sae: float, ce_zero: float, n_ce: int) -> SAEQuality:
        """The metrics, given the three cross-entropies and how many predictions they average."""
        assert self.sum_x is not None and self.n > 0
        mean = self.sum_x / self.n
        total_variance = self.sum_sq_x - self.n * float(mean @ mean)
        return SAEQuality(
            l0=self.active / self.n,
            explained_variance=1.0 - self.sum_sq_err / total_variance,
            mse=self.sum_sq_err / self.n,
            ce_loss_clean=ce_clean,
            ce_loss_sae=ce_sae,
            ce_loss_zero=ce_zero,
            ce_recovered=_recovered(ce_clean, ce_sae, ce_zero),
            dead_fraction=float((~self.fired).float().mean()),
            n_tokens=self.n,
            n_ce_tokens=n_ce,
        )


def _recovered(clean: float, with_sae: float, zero: float) -> float:
    """The share of the loss gap between zero-ablation and the clean model that the SAE closes."""
    gap = zero - clean
    return (zero - with_sae) / gap if gap != 0 else math.nan


def _ce_losses(
    model: HookedTransformer,
    sae: SAE[Any],
    tokens: Int[Tensor, "batch pos"],
    mask: Bool[Tensor, "batch pos"],
    hook_name: str,
    batch_size: int,
) -> tuple[float, float, float, int]:
    """Mean next-token cross-entropy clean, with the SAE spliced in and zero-ablated; and count.

    A prediction counts when it is made at an evaluated position (p ≥ 1, not padding) and its
    target is a real token.
    """

    def splice_sae(acts: Tensor, hook: Any) -> Tensor:
        out = acts.clone()
        out[:, 1:] = reconstruct(sae, acts[:, 1:])[1]
        return out

    def zero_ablate(acts: Tensor, hook: Any) -> Tensor:
        out = acts.clone()
        out[:, 1:] = 0.0
        return out

    sums = [0.0, 0.0, 0.0]
    count = 0
    for start in range(0, tokens.shape[0], batch_size):
        batch = tokens[start : start + batch_size]
        m = mask[start : start + batch_size]
        keep = m[:, :-1] & m[:, 1:]
        count += int(keep.sum())
        for i, hooks in enumerate(([], [(hook_name, splice_sae)], [(hook_name, zero_ablate)])):
            loss = model.run_with_hooks(
                batch, return_type="loss", loss_per_token=True, fwd_hooks=hooks
            )
            sums[i] += float(loss[keep].double().sum())
    if count == 0:
        raise DataError("No next-token predictions to evaluate: the texts are too short.")
    return sums[0] / count, sums[1] / count, sums[2] / count, count
