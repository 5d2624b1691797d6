"""Shared fixtures: a tiny random model with a character tokenizer and tiny random SAEs.

They are session-scoped: tests must not change them (build a fresh one with `tests.builders`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from tests import builders

if TYPE_CHECKING:
    from sae_lens import SAE
    from transformer_lens import HookedTransformer


@pytest.fixture(scope="session")
def tiny_model() -> HookedTransformer:
    """Random 2-layer HookedTransformer (d_model 32, vocab 100, n_ctx 64) with a char tokenizer."""
    return builders.tiny_model()


@pytest.fixture(scope="session")
def tiny_sae() -> SAE:
    """Random StandardSAE at blocks.0.hook_resid_post, d_in 32, d_sae 64."""
    return builders.tiny_sae()


@pytest.fixture(scope="session")
def tiny_topk_sae() -> SAE:
    """Random TopKSAE (k=4) at blocks.0.hook_resid_post, d_in 32, d_sae 64."""
    return builders.tiny_sae(k=4)


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch):
    """Point the saeinverse cache (SAEINVERSE_CACHE) at an empty temporary folder."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("SAEINVERSE_CACHE", str(cache))
    return cache
