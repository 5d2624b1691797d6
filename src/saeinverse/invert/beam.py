"""A left-to-right beam that builds fluent prompts from scratch, one cached token per candidate.

Per feature, ``beam_width`` prompts grow one token at a time from the start token (the idea of
BEAST: a beam over the model's own proposals). Each step, every prompt of the beam proposes
``beam_proposals`` next tokens: half drawn from the model's own next-token distribution (its
log-probabilities are already computed), half the tokens the feature's gradient ranks highest at
that position (a one-token forward and backward on the prompt's cached keys and values, with the
model's most likely token as the placeholder). Each proposal is forwarded as one token on its
prompt's cached keys and values up to the SAE's hook, read there, and scored as a fluent row
scores: ``key / scale - fluency_weight * max(cross_entropy - hinge, 0)``, the cross-entropy per
byte of the text so far from log-probabilities already computed. The ``beam_width`` best distinct
prompts of each feature go on; their new token is forwarded once through the whole model (the
next proposals and the next cross-entropy). After ``length`` steps each feature's beam holds its
final prompts, best first, with their exact activation and cross-entropy.

Cost (``invert.cost``), per step and prompt of the beam: ``3 / tokens`` for the gradient,
``1 / tokens`` per proposal, ``full / tokens`` for the whole-model forward of the kept token.
Every draw comes from the feature's own generator, so a feature's beam is the same alone or in a
batch. A model without a start token gets no beam.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from saeinverse.invert.cost import Cost
from saeinverse.invert.fluency import text_bytes
from saeinverse.invert.objective import FeatureTarget

PROPOSAL_BATCH = 512
"""One-token candidate forwards per batch."""


@dataclass
class BeamResult:
    """Per feature: its final prompts (best first), their activation and cross-entropy, the cost."""

    prompts: list[list[list[int]]]
    activation: list[list[float]]
    cross_entropy: list[list[float]]
    score: list[list[float]]
    spent: list[float]


def beam_cost(cost: Cost, width: int, proposals: int, length: int, gradient: bool = True) -> float:
    """The most one feature's beam spends (``invert.cost``)."""
    per_prompt = cost.forward(cost.gradient * gradient + proposals + cost.full)
    return cost.forward(cost.full) + length * width * per_prompt  # an upper bound: step 1 has one


def _rows(cache, rows: Tensor, frozen: bool):
    """The key/value cache of the prompts ``rows`` (a copy when not frozen)."""
    from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache
    from transformer_lens.cache.key_value_cache_entry import TransformerLensKeyValueCacheEntry

    entries = [
        TransformerLensKeyValueCacheEntry(e.past_keys[rows], e.past_values[rows], frozen=frozen)
        for e in cache.entries
    ]
    mask = cache.previous_attention_mask[rows]
    return TransformerLensKeyValueCache(entries, mask, frozen=frozen)


class _Beam:
    """The growing prompts of every feature's beam, with their cache and next-token log-probs."""

    def __init__(self, target: FeatureTarget, allowed: Tensor, n_features: int):
        from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache

        self.target, self.allowed = target, allowed
        device = target.device
        self.owner = torch.arange(n_features, device=device)
        self.tokens: list[list[int]] = [[] for _ in range(n_features)]
        self.nll = torch.zeros(n_features, device=device)
        self.key = torch.full((n_features,), float("-inf"), device=device)
        self.cache = TransformerLensKeyValueCache.init_cache(target.model.cfg, device, n_features)
        start = torch.full((n_features, 1), int(target.start_id), device=device)
        self.logprobs = self._extend(self.cache, start)

    def _extend(self, cache, tokens: Tensor) -> Tensor:
        """Forward one new token per prompt through the whole model; its next-token log-probs."""
        with torch.no_grad():
            logits = self.target.model(
                tokens, past_kv_cache=cache, attention_mask=torch.ones_like(tokens)
            )
        return logits[:, -1].float().log_softmax(-1).masked_fill(~self.allowed, float("-inf"))

    def gradient_top(self, feature_ids: Tensor, k: int, W_E: Tensor) -> Tensor:
        """Per prompt, the ``k`` next tokens the feature's gradient ranks highest."""
        placeholder = self.logprobs.argmax(-1)
        embeds = W_E[placeholder][:, None].detach().clone().requires_grad_(True)

        def replace(act, hook):
            return embeds.to(act.dtype)

        self.cache.freeze()  # the placeholder only reads the prompts' keys and values
        try:
            hook = self.target._run(
                placeholder[:, None], [("hook_embed", replace)],
                past_kv_cache=self.cache, attention_mask=torch.ones_like(placeholder[:, None]),
            )  # fmt: skip
        finally:
            self.cache.unfreeze()
        objective = self.target.read_positions(hook, feature_ids[self.owner]).objective
        (grad,) = torch.autograd.grad(objective.sum(), embeds)
        scores = (grad[:, 0] @ W_E.T).masked_fill(~self.allowed, float("-inf"))
        return scores.topk(k, dim=-1).indices

    def screen(self, proposals: Tensor, feature_ids: Tensor):
        """(key, activation) of every proposal, each one token forwarded on its prompt's cache."""
        n_rows, k = proposals.shape
        parent = torch.arange(n_rows, device=proposals.device).repeat_interleave(k)
        flat = proposals.reshape(-1)
        keys, acts = torch.empty(len(flat)), torch.empty(len(flat))
        for lo in range(0, len(flat), PROPOSAL_BATCH):
            rows = parent[lo : lo + PROPOSAL_BATCH]
            token = flat[lo : lo + PROPOSAL_BATCH, None]
            cache = _rows(self.cache, rows, True)
            with torch.no_grad():
                hook = self.target._run(
                    token, past_kv_cache=cache, attention_mask=torch.ones_like(token)
                )
                readout = self.target.read_positions(hook, feature_ids[self.owner[rows]])
            keys[lo : lo + len(rows)] = readout.key.float().cpu()
            acts[lo : lo + len(rows)] = readout.activation.float().cpu()
        return keys.reshape(n_rows, k), acts.reshape(n_rows, k)

    def keep(self, parents: list[int], tokens: list[int], nll: Tensor, key: Tensor, last: bool):
        """Go on with the prompts ``parents[j] + tokens[j]`` (``last``: no next step to prepare)."""
        device = self.target.device
        rows = torch.tensor(parents, device=device)
        self.owner = self.owner[rows]
        self.tokens = [self.tokens[p] + [t] for p, t in zip(parents, tokens, strict=True)]
        self.nll, self.key = nll.to(device), key.to(device)
        if last:
            return
        self.cache = _rows(self.cache, rows, False)
        new = torch.tensor(tokens, device=device)[:, None]
        self.logprobs = self._extend(self.cache, new)


def beam_prompts(
    target: FeatureTarget,
    allowed: Tensor,
    W_E: Tensor,
    feature_ids: Tensor,
    scale: Sequence[float],
    hinge: float,
    weight: float,
    length: int,
    width: int,
    proposals: int,
    generators: Sequence[torch.Generator],
    gradient: bool = True,
) -> BeamResult | None:
    """Each feature's beam (see the module docstring); None for a model without a start token.

    ``gradient=False``: every proposal drawn from the model's own distribution (BEAST's beam)."""
    if target.start_id is None or width < 1 or len(feature_ids) == 0:
        return None
    tokenizer = getattr(target.model, "tokenizer", None)
    cost = Cost.of(target, length)
    n = len(feature_ids)
    n_lm = max(1, proposals // 2) if gradient else proposals
    n_grad = max(0, proposals - n_lm)
    beam = _Beam(target, allowed, n)
    spent = [cost.forward(cost.full)] * n
    scales = torch.tensor([float(x) for x in scale])
    final_act = torch.zeros(n)
    score = torch.zeros(n)
    for step in range(length):
        last = step == length - 1
        owner = beam.owner.cpu()
        drawn = []
        probs = beam.logprobs.softmax(-1).cpu()
        for row in range(len(owner)):  # rows are in feature order: each feature's draws are its own
            gen = generators[int(owner[row])]
            drawn.append(torch.multinomial(probs[row], n_lm, replacement=False, generator=gen))
        cands = torch.stack(drawn).to(target.device)
        if n_grad:
            cands = torch.cat([cands, beam.gradient_top(feature_ids, n_grad, W_E)], dim=1)
        keys, acts = beam.screen(cands, feature_ids)
        if target.position == "max":
            keys = torch.maximum(keys, beam.key.cpu()[:, None])
        nll = beam.nll.cpu()[:, None] - beam.logprobs.cpu().gather(1, cands.cpu())
        texts = [[beam.tokens[r] + [int(t)] for t in cands[r].tolist()] for r in range(len(owner))]
        n_bytes = torch.tensor(
            [[_bytes(tokenizer, ids) for ids in row] for row in texts], dtype=torch.float32
        )
        ce = nll / n_bytes
        fluent = keys / scales[owner][:, None] - weight * (ce - hinge).clamp(min=0.0)
        per_row = cost.forward(
            cost.gradient * bool(n_grad) + cands.shape[1] + (0.0 if last else cost.full)
        )
        for row in range(len(owner)):
            spent[int(owner[row])] += per_row
        parents, tokens, kept_nll, kept_key, kept_act, kept_ce, kept_score = ([] for _ in range(7))
        for f in range(n):
            mine = (owner == f).nonzero().squeeze(-1)
            flat = fluent[mine].reshape(-1)
            seen: set[tuple[int, ...]] = set()
            for j in flat.argsort(descending=True, stable=True).tolist():
                r, c = int(mine[j // cands.shape[1]]), j % cands.shape[1]
                ids = tuple(texts[r][c])
                if ids in seen or not torch.isfinite(fluent[r, c]):
                    continue
                seen.add(ids)
                parents.append(r)
                tokens.append(int(cands[r, c]))
                kept_nll.append(nll[r, c])
                kept_key.append(keys[r, c])
                kept_act.append(acts[r, c])
                kept_ce.append(ce[r, c])
                kept_score.append(fluent[r, c])
                if len(seen) == width:
                    break
        beam.keep(parents, tokens, torch.stack(kept_nll), torch.stack(kept_key), last)
        final_act, final_ce, score = (
            torch.stack(kept_act), torch.stack(kept_ce), torch.stack(kept_score),
        )  # fmt: skip
    owner = beam.owner.cpu()
    out = BeamResult([[] for _ in range(n)], [[] for _ in range(n)], [[] for _ in range(n)],
                     [[] for _ in range(n)], spent)  # fmt: skip
    for row in range(len(owner)):  # already best first within each feature
        f = int(owner[row])
        out.prompts[f].append(beam.tokens[row])
        out.activation[f].append(float(final_act[row]))
        out.cross_entropy[f].append(float(final_ce[row]))
        out.score[f].append(float(score[row]))
    return out


def _bytes(tokenizer, ids: list[int]) -> int:
    if tokenizer is None:
        return max(1, len(ids))
    return text_bytes(tokenizer.decode(ids))
