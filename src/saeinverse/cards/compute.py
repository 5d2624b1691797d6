"""``compute_cards``: the feature cards of the run's target features, from the models and collection.

Examples, with every token's activation:

- **top exemplars**: collection's top-k (prompt, position) of the feature, each as a window of
  ``context_window`` tokens either side of its position;
- **interval samples**: 0 .. the feature's max activation is cut into ``N_INTERVALS`` equal-width
  intervals; in each, up to ``PER_INTERVAL`` prompts whose maximum activation of the feature lies
  in it are drawn with the seed (the last interval includes the max), each shown as the window
  around that maximum.

Windows start at collection's first readable position (the masked start token is not shown).
The prompts are forwarded once for all features (the model stopped at the SAE's hook); the
values are the SAE's activations of that forward.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from saeinverse.cards.card import (
    FeatureCard,
    FeatureCards,
    HistogramBar,
    Interval,
    LogitEffect,
    Neighbour,
    TokenWindow,
)
from saeinverse.cards.logits import (
    LogitPathError,
    decoder_logits,
    logit_path,
    nearest_features,
    top_and_bottom,
)
from saeinverse.models.hooks import encode, hook_activations, sae_hook_name

logger = logging.getLogger(__name__)

N_LOGITS = 10
"""Tokens shown on each side of the logit effects."""
N_NEIGHBOURS = 5
"""Nearest features by decoder cosine."""
N_INTERVALS = 10
"""Equal-width intervals of 0 .. max activation."""
PER_INTERVAL = 3
"""Prompts drawn per interval."""
FORWARD_BATCH = 32


def compute_cards(
    model: Any, sae: Any, stats: Any, feature_ids: Sequence[int], *, seed: int = 0
) -> FeatureCards:
    """The cards of ``feature_ids`` (see the module docstrings for every definition)."""
    ids = [int(f) for f in feature_ids]
    hook = sae_hook_name(sae)
    w_dec = sae.W_dec.detach()
    try:
        path, _, _ = logit_path(hook)
        logits = decoder_logits(model, w_dec, hook, ids)
    except LogitPathError as err:
        logger.warning("cards: %s", err)
        path, logits = None, None
    neighbours = nearest_features(w_dec, ids, N_NEIGHBOURS)
    plans = {f: _plan(stats, f, seed) for f in ids}
    prompts = sorted({p for f in ids for p, _ in plans[f][0]} |
                     {p for f in ids for i in plans[f][1] for p in i[3]})  # fmt: skip
    acts = _forward(model, sae, stats, prompts, ids)
    strings = _token_strings(model, stats)
    cards = []
    for j, f in enumerate(ids):
        exemplar_plan, interval_plan = plans[f]
        window = _windower(stats, acts, j)
        up, down = top_and_bottom(logits[j], N_LOGITS) if logits is not None else ([], [])
        cards.append(FeatureCard(
            feature_id=f,
            density=float(stats.density[f]),
            firing_count=int(stats.firing_count[f]),
            n_tokens=int(stats.n_tokens),
            max_activation=float(stats.max_activation[f]),
            histogram=_histogram(stats, f),
            logit_path=path,
            positive_logits=[LogitEffect(i, strings(i), v) for i, v in up],
            negative_logits=[LogitEffect(i, strings(i), v) for i, v in down],
            neighbours=[Neighbour(i, c) for i, c in neighbours[j]],
            exemplars=[window(p, pos) for p, pos in exemplar_plan],
            intervals=[Interval(lo, hi, n, [window(p, None) for p in drawn])
                       for lo, hi, n, drawn in interval_plan],
        ))  # fmt: skip
    meta = {"hook_name": hook, "logit_path": path, "n_logits": N_LOGITS,
            "n_neighbours": N_NEIGHBOURS, "n_intervals": N_INTERVALS,
            "per_interval": PER_INTERVAL, "context_window": int(stats.context_window),
            "seed": int(seed)}  # fmt: skip
    logger.info("cards: %d features, %d prompts forwarded", len(cards), len(prompts))
    return FeatureCards(cards, meta)


# ----------------------------------------------------------------------------- plans


def _plan(stats: Any, feature_id: int, seed: int):
    """(top exemplars as (prompt, position), intervals as (low, high, n, drawn prompts))."""
    exemplars = [(e.prompt_index, e.position) for e in stats.top_exemplars(feature_id)]
    peak = float(stats.max_activation[feature_id])
    prompt_max = stats.prompt_feature_dense([feature_id]).numpy()[:, 0].astype(np.float64)
    intervals = []
    if peak <= 0:
        return exemplars, intervals
    rng = np.random.default_rng([int(seed), int(feature_id), 17])
    edges = np.linspace(0.0, peak, N_INTERVALS + 1)
    slot = np.minimum((prompt_max / peak * N_INTERVALS).astype(np.int64), N_INTERVALS - 1)
    for i in range(N_INTERVALS):
        members = np.flatnonzero((prompt_max > 0) & (slot == i))
        drawn = rng.choice(members, size=min(PER_INTERVAL, len(members)), replace=False)
        intervals.append(
            (float(edges[i]), float(edges[i + 1]), len(members), sorted(int(p) for p in drawn))
        )
    return exemplars, intervals


def _histogram(stats: Any, feature_id: int) -> list[HistogramBar]:
    """Collection's log-spaced bins of the feature, first to last non-empty (under- and overflow
    bins span 0 .. the lowest edge and the highest edge .. the max)."""
    counts = stats.histogram[feature_id].tolist()
    edges = stats.histogram_edges.tolist()
    lows = [0.0, *edges]
    highs = [*edges, max(float(stats.max_activation[feature_id]), edges[-1])]
    filled = [i for i, c in enumerate(counts) if c > 0]
    if not filled:
        return []
    return [
        HistogramBar(float(lows[i]), float(highs[i]), int(counts[i]))
        for i in range(filled[0], filled[-1] + 1)
    ]


# ----------------------------------------------------------------------------- windows


def _windower(stats: Any, acts: dict[int, Tensor], column: int):
    """A function (prompt, position or None: the prompt's maximum) -> its TokenWindow."""
    first, width = int(stats.first_position), int(stats.context_window)
    table = stats.token_strings

    def window(prompt: int, position: int | None) -> TokenWindow:
        values = acts[prompt][:, column]
        if position is None:
            position = first + int(values[first:].argmax())
        lo = max(first, position - width)
        hi = min(len(values), position + width + 1)
        ids = stats.tokens[prompt, lo:hi].tolist()
        return TokenWindow(
            prompt_index=int(prompt),
            start=lo,
            token_ids=ids,
            tokens=[table.get(i, f"<{i}>") for i in ids],
            values=[float(v) for v in values[lo:hi].tolist()],
            peak=position - lo,
        )

    return window


def _forward(
    model: Any, sae: Any, stats: Any, prompts: Sequence[int], feature_ids: Sequence[int]
) -> dict[int, Tensor]:
    """Prompt index -> Float[Tensor, "pos n_features"]: the features' activations on its tokens."""
    hook = sae_hook_name(sae)
    columns = torch.tensor(list(feature_ids), dtype=torch.long)
    out: dict[int, Tensor] = {}
    order = sorted(prompts, key=lambda p: -int(stats.lengths[p]))
    with torch.inference_mode():
        for lo in range(0, len(order), FORWARD_BATCH):
            chunk = order[lo : lo + FORWARD_BATCH]
            width = max(int(stats.lengths[p]) for p in chunk)
            tokens = stats.tokens[chunk, :width]
            acts = encode(sae, hook_activations(model, tokens.to(model.cfg.device), hook))
            acts = acts.to_dense() if acts.is_sparse else acts
            feats = acts[..., columns.to(acts.device)].float().cpu()
            for j, p in enumerate(chunk):
                out[p] = feats[j, : int(stats.lengths[p])]
    return out


def _token_strings(model: Any, stats: Any):
    """A function token id -> its string (collection's table, else the model's tokenizer)."""
    table = dict(stats.token_strings)
    tokenizer = getattr(model, "tokenizer", None)

    def string(token_id: int) -> str:
        if token_id not in table:
            table[token_id] = (
                tokenizer.decode([token_id], clean_up_tokenization_spaces=False)
                if tokenizer is not None
                else f"<{token_id}>"
            )
        return table[token_id]

    return string
