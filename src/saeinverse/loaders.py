"""Every stage's result read back from its folder: the one set of loaders that the pipeline (a
finished stage reused), the report and the notebook API read through.

``LOADERS`` maps each stage of ``saeinverse.artifacts.STAGES`` to a function of its folder; the
file names are ``saeinverse.artifacts``'s. An unreadable artifact raises ``ArtifactError``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from saeinverse import artifacts
from saeinverse.io import load_json


def load_models(folder: Path) -> dict[str, Any]:
    return load_json(Path(folder) / artifacts.MODELS_FILE)


def load_collect(folder: Path):
    from saeinverse.collect.stats import FeatureStats

    return FeatureStats.load(folder)


def load_filter(folder: Path):
    from saeinverse.filter import FeatureSet

    return FeatureSet.load(folder)


def load_cluster(folder: Path) -> dict[str, Any]:
    """``{"clusters": ClusterResult, "analysis": ClusterAnalysis}``."""
    from saeinverse.cluster.analysis import ClusterAnalysis
    from saeinverse.cluster.clustering import ClusterResult

    return {"clusters": ClusterResult.load(folder), "analysis": ClusterAnalysis.load(folder)}


def load_select(folder: Path):
    from saeinverse.select import Selection

    return Selection.load(folder)


def load_cards(folder: Path):
    from saeinverse.cards import FeatureCards

    return FeatureCards.load(folder)


def load_reference(folder: Path):
    from saeinverse.invert.reference import RunReference

    return RunReference.load(folder)


def load_invert(folder: Path):
    from saeinverse.invert.result import load_inversions

    return load_inversions(folder)


def load_explain(folder: Path):
    from saeinverse.explain.results import load_explanations

    return load_explanations(folder)


def load_report(folder: Path) -> Path:
    return Path(folder) / artifacts.REPORT_FILE


LOADERS: dict[str, Callable[[Path], Any]] = {
    "models": load_models,
    "collect": load_collect,
    "filter": load_filter,
    "cluster": load_cluster,
    "select": load_select,
    "cards": load_cards,
    "reference": load_reference,
    "invert": load_invert,
    "explain": load_explain,
    "report": load_report,
}
"""Stage name -> its loader (the names and order are ``artifacts.STAGE_NAMES``)."""

if list(LOADERS) != list(artifacts.STAGE_NAMES):
    raise RuntimeError(f"loaders {list(LOADERS)} != stages {list(artifacts.STAGE_NAMES)}")
