"""Stage 6: explain each selected feature in words, score the explanations, save ``explanations.jsonl``.

``generate_explanations`` builds each feature's evidence (``evidence.build_evidence``), asks the
configured explainer for one sentence per feature, scores every explanation on the feature's
held-out evidence (detection, fuzzing) and again with the explanations deranged across features
(the baseline), and re-checks each refined prompt with a fresh forward. It is a pure function of
its inputs and the seed, so batches of features can be explained apart and concatenated.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from saeinverse.errors import ArtifactError
from saeinverse.explain.evidence import FeatureEvidence, evidence_summary
from saeinverse.explain.explainers import Backend, make_backend
from saeinverse.explain.sampling import build_evidence
from saeinverse.explain.scoring import derangement, inversion_check, score_explanation
from saeinverse.explain.settings import resolve_settings
from saeinverse.io import atomic_open

if TYPE_CHECKING:
    from saeinverse.collect.stats import FeatureStats
    from saeinverse.invert import Inversion

logger = logging.getLogger(__name__)

EXPLANATIONS_FILE = "explanations.jsonl"
FORMAT_VERSION = 1


@dataclass
class ExplanationResult:
    """One feature's explanation, its scores on held-out evidence and the shuffled baseline."""

    feature_id: int
    explainer: str
    """Who wrote it: 'tokens', 'llm' or 'openai'."""
    explanation: str
    scorer: str = ""
    """Who scored it (the explainer's backend unless ``explanation.scorer`` names another)."""
    detection: float | None = None
    """Balanced accuracy of detection on held-out sequences (None: not scorable)."""
    fuzzing: float | None = None
    """Balanced accuracy of fuzzing on held-out sequences (None: not scorable)."""
    baseline_detection: float | None = None
    """Detection with another feature's explanation (None with one feature)."""
    baseline_fuzzing: float | None = None
    """Fuzzing with another feature's explanation."""
    baseline_feature: int | None = None
    """Whose explanation the baseline used."""
    inversion: dict[str, Any] | None = None
    """The refined prompt's fresh-forward check: text, activation, dataset_max, ratio, fires."""
    scores: dict[str, Any] = field(default_factory=dict)
    """Details: {detection, fuzzing, baseline_detection, baseline_fuzzing} -> n, tpr, tnr, unparsed."""
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
        return cls(**{k: v for k, v in data.items() if k in names})


# ----------------------------------------------------------------------------- inputs


def feature_ids_of(feature_results: Any) -> list[int]:
    """Feature ids from a list of ids, a Selection(-like) object, Inversions or dicts with 'feature_id'."""
    if feature_results is None:
        return []
    ids = getattr(feature_results, "feature_ids", None)
    if ids is not None:
        return [int(i) for i in (ids() if callable(ids) else ids)]
    if isinstance(feature_results, int):
        return [int(feature_results)]
    if hasattr(feature_results, "tolist"):
        return [int(i) for i in feature_results.tolist()]
    out = []
    for item in feature_results:
        if isinstance(item, dict):
            out.append(int(item["feature_id"]))
        elif hasattr(item, "feature_id"):
            out.append(int(item.feature_id))
        else:
            out.append(int(item))
    return out


def _inversions_by_id(
    feature_results: Any, inversions: Iterable[Any] | None
) -> dict[int, Inversion]:
    """Inversions from the explicit argument, else from ``feature_results`` when it holds them."""
    from saeinverse.invert import Inversion

    found: dict[int, Inversion] = {}
    candidates = list(inversions) if inversions is not None else []
    if not candidates and isinstance(feature_results, Sequence):
        candidates = [r for r in feature_results if isinstance(r, Inversion)]
    for record in candidates:
        if isinstance(record, dict):
            record = Inversion.from_dict(record)
        found[int(record.feature_id)] = record
    return found


# ----------------------------------------------------------------------------- the stage


def generate_explanations(
    model,
    sae,
    feature_results: Any,
    lm: Any = None,
    tokenizer: Any = None,
    explanation_cfg: Any = None,
    *,
    stats: FeatureStats | None = None,
    inversions: Iterable[Inversion] | None = None,
    seed: int = 0,
    backend: Backend | None = None,
    progress: bool = False,
) -> list[ExplanationResult]:
    """Explain and score each feature of ``feature_results``; one result per feature, in order.

    ``feature_results``: feature ids, a ``Selection`` (or anything with ``feature_ids``), or a
    list of ``Inversion`` records. ``lm`` / ``tokenizer``: the explanation LM for the ``llm``
    explainer (loaded from ``llm_name`` when None; an object with ``complete_many`` is used as
    the chat model itself). ``explanation_cfg``: ``config.explanation`` or a dict of its keys.
    ``stats`` (collection) gives exemplars and held-out evidence: without it only refined
    prompts are evidence and nothing is scored. ``backend`` overrides the configured explainer.
    """
    start = time.perf_counter()
    s = resolve_settings(explanation_cfg)
    fids = feature_ids_of(feature_results)
    if not fids:
        return []
    by_id = _inversions_by_id(feature_results, inversions)
    backend = backend or make_backend(s, lm, tokenizer)
    evidence = build_evidence(
        model, sae, fids, stats, inversions=by_id, n_heldout=int(s.n_heldout),
        n_exemplars=int(s.n_exemplars), n_decile_samples=int(s.n_decile_samples),
        n_top_tokens=int(s.n_top_tokens), context_window=s.context_window, seed=seed,
    )  # fmt: skip
    explanations = backend.explainer.explain_many([e.explain for e in evidence])
    for fid, text in zip(fids, explanations, strict=True):
        logger.info("feature %d (%s): %s", fid, backend.name, text)
    results = [
        ExplanationResult(
            feature_id=ev.feature_id,
            explainer=backend.name,
            explanation=text,
            scorer=backend.scorer_name,
            evidence=evidence_summary(ev),
            dataset_max=ev.dataset_max,
        )
        for ev, text in zip(evidence, explanations, strict=True)
    ]
    if s.score:
        _score(backend, evidence, explanations, results, seed, progress)
    for result in results:
        if result.feature_id in by_id:
            result.inversion = inversion_check(
                model, sae, by_id[result.feature_id], result.dataset_max
            )
    seconds = (time.perf_counter() - start) / len(results)
    for result in results:
        result.seconds = seconds
    return results


def _score(
    backend: Backend,
    evidence: list[FeatureEvidence],
    explanations: list[str],
    results: list[ExplanationResult],
    seed: int,
    progress: bool,
) -> None:
    """Fill each result's scores and baseline scores (in place)."""
    from tqdm.auto import tqdm

    shuffle = derangement(len(evidence), seed)
    bar = tqdm(total=len(evidence), desc="score explanations", disable=not progress, leave=False)
    with bar:
        for i, (ev, result) in enumerate(zip(evidence, results, strict=True)):
            item_seed = seed * 1_000_003 + ev.feature_id
            own = score_explanation(backend.scorer, explanations[i], ev.heldout, item_seed)
            result.detection = own["detection"]["balanced_accuracy"]
            result.fuzzing = own["fuzzing"]["balanced_accuracy"]
            result.scores = {"detection": own["detection"], "fuzzing": own["fuzzing"]}
            if shuffle is not None:
                other = shuffle[i]
                base = score_explanation(backend.scorer, explanations[other], ev.heldout, item_seed)
                result.baseline_feature = evidence[other].feature_id
                result.baseline_detection = base["detection"]["balanced_accuracy"]
                result.baseline_fuzzing = base["fuzzing"]["balanced_accuracy"]
                result.scores["baseline_detection"] = base["detection"]
                result.scores["baseline_fuzzing"] = base["fuzzing"]
            bar.update(1)


# ----------------------------------------------------------------------------- artifacts


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
    """Mean scores and baselines over the features that have them."""

    def mean(values):
        values = [v for v in values if v is not None]
        return sum(values) / len(values) if values else None

    return {
        name: mean(getattr(r, name) for r in results)
        for name in ("detection", "fuzzing", "baseline_detection", "baseline_fuzzing")
    }
