"""Shared fixtures: a tiny random model with a character tokenizer, tiny random SAEs, and caches.

The models are session-scoped: tests must not change them (build a fresh one with
`tests.builders`). A test that runs the pipeline on the tiny run names the saved SAE
(`builders.TINY_RUN`) or, naming none, finds it already cached (`tiny_sae_cache`): only the tests
of training train an SAE.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import pytest

# Tests run torch on one thread, and so do the processes they start (set before torch is
# imported): tiny models are fastest that way, and on a busy machine an op whose second thread
# waits for a descheduled core takes a hundred times longer.
os.environ.setdefault("OMP_NUM_THREADS", "1")

from tests import builders

if TYPE_CHECKING:
    from sae_lens import SAE
    from transformer_lens import HookedTransformer


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """torch on one thread for the session (in case it was imported before this module)."""
    import torch

    torch.set_num_threads(1)


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


@pytest.fixture
def tiny_sae_cache(isolated_cache):
    """An isolated cache that holds the saved tiny SAE where a tiny run naming no SAE looks for
    its default one (``sae.train`` = ``builders.TINY_SAE_TRAIN``): that run loads it, it trains
    nothing."""
    import shutil

    from saeinverse.models.from_config import default_sae_path

    shutil.copytree(
        builders.TINY_SAE_DIR, default_sae_path(builders.tiny_config(sae={"path": None}))
    )
    return isolated_cache
