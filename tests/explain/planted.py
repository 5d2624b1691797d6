"""A tiny model and SAE whose first features fire exactly on one letter each (test helper)."""

from __future__ import annotations

import torch

from tests import builders
from tests.explain.conftest import random_prompts

PLANTED_LETTERS = ("x", "q", "z", "k")
"""Feature i of the planted SAE fires on PLANTED_LETTERS[i] and nowhere else."""


def planted_model_and_sae(letters=PLANTED_LETTERS):
    """A tiny model with no positional embedding, and an SAE at ``blocks.0.hook_resid_pre``.

    There the residual is the token's embedding alone, so a feature whose encoder column is a
    letter's centred embedding, with its bias halfway between that letter's score and the best
    other token's, fires on that letter in any context, always with the same activation.
    """
    model = builders.tiny_model()
    sae = builders.tiny_sae(hook_name="blocks.0.hook_resid_pre", seed=4)
    W_E = model.W_E.detach()[3:]  # ordinary tokens (the specials are never prompt tokens)
    with torch.no_grad():
        model.W_pos.zero_()
        sae.b_dec.zero_()
        for feature, letter in enumerate(letters):
            row = model.tokenizer.convert_tokens_to_ids(letter) - 3
            direction = W_E[row] - W_E.mean(0)
            direction = direction / direction.norm()
            scores = W_E @ direction
            others = torch.cat([scores[:row], scores[row + 1 :]])
            assert scores[row] > others.max()
            sae.W_enc[:, feature] = direction
            sae.b_enc[feature] = -(scores[row] + others.max()) / 2
    return model, sae


def planted_stats(model, sae, n_prompts: int = 80):
    from saeinverse.collect.activations import collect_activations
    from saeinverse.config import get_default_config

    prompts = random_prompts(n_prompts, seed=1)
    return collect_activations(model, sae, prompts, get_default_config().data, progress=False)
