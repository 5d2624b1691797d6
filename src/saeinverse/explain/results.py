"""One feature's explanation and its scores, and the ``explanations.jsonl`` artifact.

Every score is a balanced accuracy or ROC AUC (chance 0.5) on held-out windows, with a bootstrap
95% interval and the same score of the shuffled baseline (another feature's explanation on the
same items); ``verdict`` says whether the explanation beats its baseline (see
``saeinverse.explain.intervals``). The full record of each score is in ``scores[name]``: value,
low, high, baseline, baseline_low, baseline_high, diff_low, diff_high, verdict, n_positive,
n_negative (and for the scorer's answers tpr, tnr, unparsed, auc).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from saeinverse import artifacts
from saeinverse.errors import ArtifactError
from saeinverse.io import atomic_open

EXPLANATIONS_FILE = artifacts.EXPLANATIONS_FILE
FORMAT_VERSION = 3
"""3: ``sentence``, ``rule`` and ``scored`` (a version-2 record reads with its explanation as
the sentence)."""
SCORE_NAMES = ("detection", "detection_hard", "fuzzing", "embedding", "embedding_hard")
"""Scores by the configured scorer (detection against random / hard negatives, fuzzing) and by
the embedding judge (against random / hard negatives)."""


@dataclass
class ExplanationResult:
    """One feature's explanation, its scores on held-out evidence and the shuffled baseline."""

    feature_id: int
    explainer: str
    """Who wrote it: 'context', 'tokens', 'llm' or 'openai'."""
    explanation: str
    """For a reader: the sentence, then the rule (``Explanation.text``)."""
    sentence: str = ""
    """One plain sentence of at most 20 words naming what fires."""
    rule: str = ""
    """The rule that follows it (``saeinverse.explain.rules``; empty when the explainer writes
    only words)."""
    scored: dict[str, str] = field(default_factory=dict)
    """Which text each score read, by score name: 'sentence' or 'rule'."""
    scorer: str = ""
    """Who scored it (the explainer's backend unless ``explanation.scorer`` names another)."""
    detection: float | None = None
    """Balanced accuracy of detection, held-out positives vs random negatives (None: not scored)."""
    detection_hard: float | None = None
    """The same against hard negatives (silent windows holding its top tokens or of its genre)."""
    fuzzing: float | None = None
    """Balanced accuracy of fuzzing on held-out positives."""
    embedding: float | None = None
    """Embedding judge: ROC AUC of similarity, positives vs random negatives."""
    embedding_hard: float | None = None
    """Embedding judge against hard negatives."""
    baseline_detection: float | None = None
    """Detection with another feature's explanation (None with one feature)."""
    baseline_detection_hard: float | None = None
    baseline_fuzzing: float | None = None
    baseline_embedding: float | None = None
    baseline_embedding_hard: float | None = None
    baseline_feature: int | None = None
    """Whose explanation the baseline used."""
    verdict: str | None = None
    """Detection against its baseline: 'beats', 'undecided' or 'worse' (None: not decidable)."""
    inversion: dict[str, Any] | None = None
    """The refined prompt's fresh-forward check: text, activation, dataset_max, ratio, fires."""
    scores: dict[str, Any] = field(default_factory=dict)
    """Each score's record by name (``SCORE_NAMES``): value, interval, baseline, verdict, counts."""
    evidence: dict[str, Any] = field(default_factory=dict)
    """What the explainer saw (top tokens, first exemplars) and the held-out sizes."""
    dataset_max: float | None = None
    seconds: float = 0.0
    """Wall-clock seconds for the batch divided by its number of features."""

    def to_dict(self) -> dict[str, Any]:
        return {"version": FORMAT_VERSION, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExplanationResult:
        names = {f.name for f in dataclasses.fields(cls)}
        result = cls(**{k: v for k, v in data.items() if k in names})
        result.sentence = result.sentence or result.explanation
        return result

    def set_score(self, name: str, record: dict[str, Any]) -> None:
        """Store one score's record and its headline value and baseline."""
        self.scores[name] = record
        setattr(self, name, record.get("value"))
        setattr(self, f"baseline_{name}", record.get("baseline"))
        if name == "detection":
            self.verdict = record.get("verdict")

    def interval(self, name: str) -> tuple[float, float] | None:
        record = self.scores.get(name) or {}
        low, high = record.get("low"), record.get("high")
        return None if low is None or high is None else (low, high)


def save_explanations(directory: str | Path, results: Iterable[ExplanationResult]) -> Path:
    """Write ``<directory>/explanations.jsonl`` atomically (one JSON object per feature)."""
    path = Path(directory) / EXPLANATIONS_FILE
    with atomic_open(path, "w") as handle:
        for result in results:
            handle.write(json.dumps(result.to_dict(), ensure_ascii=False) + "\n")
    return path


def load_explanations(directory: str | Path) -> list[ExplanationResult]:
    """Read what ``save_explanations`` wrote (``ArtifactError`` naming the file and line)."""
    path = Path(directory)
    path = path if path.suffix == ".jsonl" else path / EXPLANATIONS_FILE
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError as err:
        raise ArtifactError(f"artifact {path} does not exist") from err
    except (OSError, UnicodeDecodeError) as err:
        raise ArtifactError(f"artifact {path} is unreadable: {err}") from err
    results = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
            results.append(ExplanationResult.from_dict(data))
        except (json.JSONDecodeError, TypeError, AttributeError) as err:
            raise ArtifactError(f"artifact {path} line {number} is malformed: {err}") from err
    return results


def summarize(results: Sequence[ExplanationResult]) -> dict[str, float | None]:
    """Mean scores and baselines over the features that have them, and the share of features
    whose score beats its baseline (``beats_<score>``)."""

    def mean(values):
        values = [v for v in values if v is not None]
        return sum(values) / len(values) if values else None

    out: dict[str, float | None] = {}
    for name in SCORE_NAMES:
        out[name] = mean(getattr(r, name) for r in results)
        out[f"baseline_{name}"] = mean(getattr(r, f"baseline_{name}") for r in results)
        verdicts = [(r.scores.get(name) or {}).get("verdict") for r in results]
        decided = [v for v in verdicts if v is not None]
        out[f"beats_{name}"] = (
            sum(v == "beats" for v in decided) / len(decided) if decided else None
        )
    return out
