"""From embeddings to real prompts, and real prompts to the numbers they are reported with.

- ``nearest_tokens``: each position's nearest vocabulary token by cosine similarity.
- ``score_prompts`` / ``score_prompt``: a fresh forward on token ids, the start token prepended as
  in collection and the same position rule: the only activation a hard prompt is reported with.
(The fluency measure, a prompt's cross-entropy, lives in ``invert.fluency``.)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int
from torch import Tensor

from saeinverse.invert.objective import FeatureTarget, Position

SCORE_BATCH = 256
"""Sequences per forward when scoring many prompts."""


class Vocabulary:
    """The embedding matrix seen as the set of tokens a prompt may use."""

    def __init__(self, model, allowed: Bool[Tensor, " vocab"]):
        self.W_E = model.W_E.detach().float()  # float32 even for half-precision models
        self.allowed = allowed.to(self.W_E.device)
        self.unit = F.normalize(self.W_E, dim=-1)
        norms = self.W_E.norm(dim=-1)[self.allowed]
        self.min_norm = float(norms.min())
        self.max_norm = float(norms.max())
        self.mean_norm = float(norms.mean())
        self.allowed_ids = self.allowed.nonzero().squeeze(-1)

    def nearest(
        self, embeds: Float[Tensor, "batch pos d_model"]
    ) -> tuple[Int[Tensor, "batch pos"], Float[Tensor, "batch pos"]]:
        """Nearest allowed token per position by cosine, and that token's distance (L2)."""
        with torch.no_grad():
            flat = embeds.detach().reshape(-1, embeds.shape[-1])
            ids = torch.empty(flat.shape[0], dtype=torch.long, device=flat.device)
            for start in range(0, flat.shape[0], 512):
                chunk = F.normalize(flat[start : start + 512], dim=-1) @ self.unit.T
                chunk[:, ~self.allowed] = float("-inf")
                ids[start : start + 512] = chunk.argmax(-1)
        ids = ids.reshape(embeds.shape[:-1])
        distance = (embeds - self.W_E[ids]).norm(dim=-1)
        return ids, distance

    def clamp_norms(self, embeds: Float[Tensor, "batch pos d_model"]) -> None:
        """Keep each position's norm inside the allowed tokens' norm range (in place)."""
        with torch.no_grad():
            norms = embeds.norm(dim=-1, keepdim=True).clamp(min=1e-8)
            embeds.mul_(norms.clamp(self.min_norm, self.max_norm) / norms)


def nearest_tokens(
    model, embeds: Float[Tensor, "batch pos d_model"], allowed: Bool[Tensor, " vocab"] | None = None
) -> Int[Tensor, "batch pos"]:
    """Each position's nearest vocabulary token by cosine similarity (special tokens excluded)."""
    from saeinverse.invert.objective import allowed_token_mask

    vocab = Vocabulary(model, allowed if allowed is not None else allowed_token_mask(model))
    return vocab.nearest(embeds.to(vocab.W_E.device))[0]


# ----------------------------------------------------------------------------- scoring


def score_prompts(
    model,
    sae,
    feature_ids: Sequence[int] | Tensor,
    token_ids: Sequence[Sequence[int]] | Tensor,
    position: Position = "last",
    *,
    target: FeatureTarget | None = None,
    exclude_bos: bool = True,
) -> list[float]:
    """Activation of ``feature_ids[i]`` on prompt ``token_ids[i]``, read as collection reads, fresh.

    Prompts of equal length are forwarded together, with no padding; the start token is
    prepended as in collection.
    """
    target = target or FeatureTarget(model, sae, position, exclude_bos)
    rows = [list(map(int, ids)) for ids in token_ids]
    features = [int(f) for f in feature_ids]
    if len(rows) != len(features):
        raise ValueError(f"{len(rows)} prompts but {len(features)} feature ids")
    out = [0.0] * len(rows)
    by_length: dict[int, list[int]] = {}
    for i, ids in enumerate(rows):
        by_length.setdefault(len(ids), []).append(i)
    for indices in by_length.values():
        for start in range(0, len(indices), SCORE_BATCH):
            chunk = indices[start : start + SCORE_BATCH]
            ids = torch.tensor([rows[i] for i in chunk], dtype=torch.long, device=target.device)
            fids = torch.tensor([features[i] for i in chunk], device=target.device)
            acts = target.read_ids(ids, fids).activation.tolist()
            for i, act in zip(chunk, acts, strict=True):
                out[i] = float(act)
    return out


def score_prompt(
    model,
    sae,
    feature_id: int,
    token_ids: Sequence[int],
    position: Position = "last",
    exclude_bos: bool = True,
) -> float:
    """Activation of one feature on one prompt (start token prepended), from a fresh forward."""
    return score_prompts(model, sae, [feature_id], [token_ids], position, exclude_bos=exclude_bos)[
        0
    ]
