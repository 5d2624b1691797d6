"""The embedding judge: all-MiniLM-L6-v2 loaded offline from its package; AUC of similarity."""

from __future__ import annotations

import numpy as np
import pytest

from saeinverse.explain.evidence import ExplainEvidence, FeatureEvidence, HeldoutEvidence
from saeinverse.explain.evidence import TokenSequence as Seq
from saeinverse.explain.judge import EmbeddingJudge, model_dir

ANIMALS = ["The cat chased a mouse.", "My dog barks at the mailman.", "A horse ran in the field.",
           "The parrot repeated every word.", "Cows graze on the hill.", "The kitten slept."]  # fmt: skip
CODE = ["def main(): return 0", "for i in range(10): print(i)", "import os, sys",
        "x = [a * 2 for a in items]", "class Node: pass", "while True: break"]  # fmt: skip
FINANCE = ["The bank raised interest rates.", "Stocks fell sharply on Monday.",
           "Bonds yield more this year.", "The loan was repaid early.",
           "Inflation hit four percent.", "The fund bought shares."]  # fmt: skip


def seqs(texts, source):
    return [Seq([t], [0], [1.0 if source == "heldout" else 0.0], source) for t in texts]


@pytest.fixture(scope="module")
def judge(monkeypatch_module):
    monkeypatch_module.setenv("HF_HUB_OFFLINE", "1")
    return EmbeddingJudge()


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def test_the_model_ships_in_its_package_and_embeds_offline(judge):
    assert (model_dir() / "model.safetensors").is_file()
    vectors = judge.embed(["A dog.", "A puppy.", "Quarterly earnings."])
    assert vectors.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2] + 0.2


def test_the_judge_ranks_the_matching_windows_above_the_others(judge):
    animals = HeldoutEvidence(seqs(ANIMALS, "heldout"), seqs(CODE, "negative"),
                              seqs(FINANCE, "hard:genre"))  # fmt: skip
    finance = HeldoutEvidence(seqs(FINANCE, "heldout"), seqs(CODE, "negative"),
                              seqs(ANIMALS, "hard:genre"))  # fmt: skip
    evidence = [
        FeatureEvidence(i, 1.0, ExplainEvidence(i), h) for i, h in enumerate([animals, finance])
    ]
    explanations = ["Animals and pets.", "Banking, money and markets."]
    scores = judge.score_all(explanations, evidence, [1, 0], n_boot=300, seed=0)
    for feature in scores:
        emb = feature["embedding"]
        assert emb["value"] > 0.9 and emb["low"] <= emb["value"] <= emb["high"]
        assert emb["n_positive"] == emb["n_negative"] == 6
        hard = feature["embedding_hard"]
        assert hard["value"] > 0.9 and hard["baseline"] < 0.1  # the other one prefers these
        assert hard["verdict"] == "beats"
