"""What inversion maximises: a feature's activation on a prompt, read the way collection reads it.

A prompt is ``[start token] + tokens``; the model runs from its embeddings up to the SAE's hook
(``stop_at_layer``), the SAE encodes that activation, and row ``i`` of a batch reads its own
feature ``feature_ids[i]`` at the position rule (``max`` over the readable positions, or
``last``). The readable positions are exactly those collection counts: from
``models.hooks.first_readable_position(exclude_bos)`` on, in the coordinates of the tokens the
model runs (start token included). So with ``exclude_bos`` and no start token the first prompt
token is never read, and with ``exclude_bos=False`` the start position is read as collection reads it.

Two numbers come out per row:

- ``activation``: the real activation (``sae.encode``), what a prompt is reported with;
- ``objective``: a differentiable score to maximise. A TopK or JumpReLU SAE passes no gradient
  to a feature that does not fire, so the objective is built on the pre-activation and knows
  what makes the feature fire: its **gate**, the margin to firing. TopK: the pre-activation
  minus the k-th largest pre-activation of the other features at that position (the feature
  fires exactly when this is > 0); JumpReLU: the pre-activation minus its threshold; ReLU: the
  pre-activation itself. ``objective = pre + min(gate, 0)`` pushes twice as hard (and pushes
  competitors down) while the feature is off, and is the activation itself once it fires.
  Gated: the feature fires when its gate pre-activation is > 0 and its magnitude
  pre-activation is > 0, so the margin is the smaller of the two. Which rule applies is decided
  by the SAE's SAELens class (``models.hooks.sae_kind``).

``key`` ranks hard prompts in the discrete search: the activation when the feature fires,
otherwise the gate (≤ 0), so every firing prompt outranks every silent one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor

from saeinverse.errors import ConfigError
from saeinverse.models.hooks import (
    Encoded,
    encode_with_pre,
    first_readable_position,
    hook_activations,
    sae_hook_name,
    sae_kind,
    start_token_id,
)
from saeinverse.models.layout import fast_layout

Position = Literal["max", "last"]


# ----------------------------------------------------------------------------- gates


def _gather(values: Tensor, feature_ids: Tensor) -> Tensor:
    """``values[row, pos, feature_ids[row]]``: [batch, pos]."""
    index = feature_ids[:, None, None].expand(-1, values.shape[1], 1)
    return values.gather(-1, index).squeeze(-1)


def _relu_gate(enc: Encoded, target_pre: Tensor, feature_ids: Tensor, sae) -> Tensor:
    return target_pre


def _jumprelu_gate(enc: Encoded, target_pre: Tensor, feature_ids: Tensor, sae) -> Tensor:
    threshold = sae.threshold.to(target_pre.dtype)[feature_ids]  # [batch]
    return torch.minimum(target_pre - threshold[:, None], target_pre)


def _topk_gate(enc: Encoded, target_pre: Tensor, feature_ids: Tensor, sae) -> Tensor:
    k = int(sae.cfg.k)
    index = feature_ids[:, None, None].expand(-1, enc.pre.shape[1], 1)
    others = enc.pre.scatter(-1, index, float("-inf"))
    kth = others.topk(k, dim=-1).values[..., -1]  # [batch, pos]
    return torch.minimum(target_pre - kth, target_pre)


def _gated_gate(enc: Encoded, target_pre: Tensor, feature_ids: Tensor, sae) -> Tensor:
    return torch.minimum(_gather(enc.gate_pre, feature_ids), target_pre)


GATES: dict[str, Callable[[Encoded, Tensor, Tensor, object], Tensor]] = {
    "relu": _relu_gate,
    "jumprelu": _jumprelu_gate,
    "topk": _topk_gate,
    "gated": _gated_gate,
}
"""The margin to firing per SAE kind (> 0 exactly when the feature fires, for a positive
pre-activation): ``gate(encoded, target_pre, feature_ids, sae)``."""


def allowed_token_mask(model) -> Tensor:
    """Vocabulary ids a prompt may contain: every id but the tokenizer's special tokens."""
    mask = torch.ones(model.cfg.d_vocab, dtype=torch.bool, device=model.W_E.device)
    tokenizer = getattr(model, "tokenizer", None)
    special = list(getattr(tokenizer, "all_special_ids", None) or []) if tokenizer else []
    start = start_token_id(model)
    if start is not None:
        special.append(start)
    special = [i for i in special if 0 <= i < model.cfg.d_vocab]
    if special:
        mask[torch.tensor(special, device=mask.device)] = False
    return mask


# ----------------------------------------------------------------------------- readout


@dataclass
class Readout:
    """One forward's numbers per row (see the module docstring)."""

    activation: Float[Tensor, " batch"]
    objective: Float[Tensor, " batch"]
    key: Float[Tensor, " batch"]
    gate: Float[Tensor, " batch"]
    """The raw margin to firing (``GATES``), > 0 exactly when the feature fires."""
    resid: Float[Tensor, "batch pos d_model"] | None = None


class FeatureTarget:
    """A model + SAE pair read at the SAE's hook with one position rule.

    Everything stays on the model's device; the model's and the SAE's values are never modified
    (the model's weights are re-laid out in memory by ``models.layout.fast_layout``, which makes
    TransformerLens' per-forward weight copies free: the same numbers, a few times faster on the
    small batches of the search).
    """

    def __init__(self, model, sae, position: Position = "last", exclude_bos: bool = True):
        self.model = fast_layout(model)
        self.sae = sae
        self.position = position
        self.hook_name = sae_hook_name(sae)
        self.start_id = start_token_id(model)
        self.start_offset = 0 if self.start_id is None else 1
        """Tokens put in front of a prompt (the start token, when the model has one)."""
        self.first_read = first_readable_position(exclude_bos)
        """The first position read, in the coordinates of ``start + ids`` (as collection counts)."""
        self.kind = sae_kind(sae)
        self.gate = GATES[self.kind]
        self.device = model.W_E.device
        self.d_sae = int(sae.cfg.d_sae)

    # --- forwards -----------------------------------------------------------------------

    def with_start(self, ids: Int[Tensor, "batch pos"]) -> Int[Tensor, "batch pos1"]:
        """Prepend the start token (when the model uses one)."""
        if self.start_id is None:
            return ids
        start = torch.full((ids.shape[0], 1), self.start_id, dtype=ids.dtype, device=ids.device)
        return torch.cat([start, ids], dim=1)

    def hook_acts(
        self,
        ids: Int[Tensor, "batch pos"],
        embeds: Float[Tensor, "batch pos d_model"] | None = None,
    ) -> Float[Tensor, "batch pos1 d_in"]:
        """Activations at the SAE's hook for ``start + ids``; ``embeds`` replaces the ids' embeddings.

        The replacement goes through ``hook_embed``, so positional embeddings (where the model
        has them) are added as for real tokens, and the start token keeps its own embedding.
        """
        tokens = self.with_start(ids.to(self.device))
        hooks = []
        if embeds is not None:
            offset = tokens.shape[1] - embeds.shape[1]

            def replace(act, hook):
                return torch.cat([act[:, :offset], embeds.to(act.dtype)], dim=1)

            hooks.append(("hook_embed", replace))
        return self._run(tokens, hooks)

    def prefix_cache(self, ids: Int[Tensor, "batch pos"]):
        """Forward ``start + ids`` once, keeping each layer's keys and values and the hook acts.

        Candidates that differ from ``ids`` only from position ``p`` on reuse this prefix
        (``hook_acts_after_prefix``) and forward only their suffix.
        """
        from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache

        tokens = self.with_start(ids.to(self.device))
        cache = TransformerLensKeyValueCache.init_cache(
            self.model.cfg, self.device, tokens.shape[0]
        )
        with torch.no_grad():
            acts = self._run(tokens, past_kv_cache=cache, attention_mask=torch.ones_like(tokens))
        return cache, acts

    def hook_acts_after_prefix(
        self,
        prefix,
        rows: Int[Tensor, " batch"],
        prefix_len: int,
        suffix: Int[Tensor, "batch suffix"],
    ) -> Float[Tensor, "batch pos1 d_in"]:
        """Hook activations of ``prefix[rows][:prefix_len] + suffix``, forwarding only the suffix.

        ``prefix_len`` counts tokens with the start token; the result covers every position.
        """
        from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache
        from transformer_lens.cache.key_value_cache_entry import TransformerLensKeyValueCacheEntry

        cache, full = prefix
        entries = [
            TransformerLensKeyValueCacheEntry(
                e.past_keys[rows, :prefix_len], e.past_values[rows, :prefix_len], frozen=True
            )
            for e in cache.entries
        ]
        ones = torch.ones(len(rows), prefix_len, dtype=torch.long, device=self.device)
        shared = TransformerLensKeyValueCache(entries, ones, frozen=True)
        suffix = suffix.to(self.device)
        with torch.no_grad():
            acts = self._run(suffix, past_kv_cache=shared, attention_mask=torch.ones_like(suffix))
        return torch.cat([full[rows, :prefix_len], acts], dim=1)

    def _run(self, tokens: Tensor, hooks=(), **kwargs) -> Tensor:
        """Forward ``tokens`` up to the SAE's hook (with extra ``hooks``); the hook's activations."""
        return hook_activations(self.model, tokens, self.hook_name, hooks, **kwargs)

    # --- the numbers --------------------------------------------------------------------

    def read(
        self,
        hook_acts: Float[Tensor, "batch pos1 d_in"],
        feature_ids: Int[Tensor, " batch"],
        selectivity_weight: float = 0.0,
    ) -> Readout:
        """Each row's own feature: activation, objective and key at the position rule."""
        if hook_acts.shape[1] <= self.first_read:
            raise ConfigError(
                f"a prompt of {hook_acts.shape[1] - self.start_offset} token(s) has no readable "
                f"position (collection reads from position {self.first_read}); raise optimization.length"
            )
        return self.read_positions(hook_acts[:, self.first_read :], feature_ids, selectivity_weight)

    def read_positions(
        self,
        hook_acts: Float[Tensor, "batch pos d_in"],
        feature_ids: Int[Tensor, " batch"],
        selectivity_weight: float = 0.0,
    ) -> Readout:
        """``read`` on positions that are all readable (e.g. the one new token of a cached step)."""
        enc = encode_with_pre(self.sae, hook_acts)
        acts = enc.acts
        feature_ids = feature_ids.to(self.device)
        target_pre = _gather(enc.pre, feature_ids)  # [batch, pos]
        target_act = _gather(acts, feature_ids)
        gate = self.gate(enc, target_pre, feature_ids, self.sae)
        objective = target_pre + gate.clamp(max=0.0)
        if selectivity_weight:
            others = acts.sum(-1) - target_act
            objective = objective - selectivity_weight * others
        key = torch.where(target_act > 0, target_act, gate.clamp(max=0.0))
        if self.position == "last":
            return Readout(target_act[:, -1], objective[:, -1], key[:, -1], gate[:, -1])
        return Readout(target_act.amax(-1), objective.amax(-1), key.amax(-1), gate.amax(-1))

    def read_ids(
        self,
        ids: Int[Tensor, "batch pos"],
        feature_ids: Int[Tensor, " batch"],
        keep_resid: bool = False,
    ) -> Readout:
        """A real forward on token ids (no gradient): the numbers a prompt is reported with."""
        with torch.no_grad():
            hook_acts = self.hook_acts(ids)
            readout = self.read(hook_acts, feature_ids)
        if keep_resid:
            readout.resid = hook_acts
        return readout
