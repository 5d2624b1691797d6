"""Reading a run directory back for the report: every artifact a stage saved, nothing recomputed.

A stage's artifacts are used when all of these hold:

- its ``pipeline`` toggle in the run's ``config.yaml`` is on (a folder left from an earlier run
  with the stage now off is ignored, so the report never shows stale results);
- its folder holds a success marker (``_SUCCESS.json``): a crashed stage left none;
- each stage its marker lists as read (``inputs``: stage -> that stage's ``output`` digest) is
  usable and its marker still carries that output (an upstream stage recomputed since, or
  switched off, makes it stale).

Anything else leaves that part of the report out, with a note saying why.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from saeinverse import artifacts as A
from saeinverse import loaders as L
from saeinverse.artifacts import CONFIG_FILE, MARKER, META_FILE, StageSpec
from saeinverse.artifacts import STAGES as ALL_STAGES
from saeinverse.errors import ArtifactError
from saeinverse.io import load_json

logger = logging.getLogger(__name__)

STAGES: tuple[StageSpec, ...] = tuple(spec for spec in ALL_STAGES if spec.name != "report")
"""The stages whose artifacts the report reads (``saeinverse.artifacts.STAGES`` minus itself)."""

STATUS_TEXT = {
    "done": "finished",
    "off": "switched off in the config",
    "missing": "did not run (no folder)",
    "unfinished": "did not finish (no success marker)",
    "stale": "stale (an upstream stage was recomputed after it)",
    "unreadable": "artifacts unreadable",
}


def _by_id(records: Any) -> dict[int, Any]:
    return {int(r.feature_id): r for r in records}


@dataclass(frozen=True)
class ArtifactSpec:
    attribute: str
    """``RunArtifacts`` attribute it fills."""
    stage: str
    """Folder it is looked for first (any other finished stage folder holding it is accepted)."""
    filename: str
    load: Callable[[Path], Any]


ARTIFACTS: tuple[ArtifactSpec, ...] = (
    ArtifactSpec("models", "models", A.MODELS_FILE, L.load_models),
    ArtifactSpec("stats", "collect", A.STATS_FILE, L.load_collect),
    ArtifactSpec("feature_set", "filter", A.FEATURE_SET_FILE, L.load_filter),
    ArtifactSpec("clusters", "cluster", A.CLUSTERS_FILE, lambda f: L.load_cluster(f)["clusters"]),
    ArtifactSpec(
        "analysis", "cluster", A.CLUSTER_ANALYSIS_FILE, lambda f: L.load_cluster(f)["analysis"]
    ),
    ArtifactSpec("selection", "select", A.SELECTION_FILE, L.load_select),
    ArtifactSpec("cards", "cards", A.CARDS_FILE, L.load_cards),
    ArtifactSpec("reference", "reference", A.REFERENCE_FILE, L.load_reference),
    ArtifactSpec("inversions", "invert", A.INVERSIONS_FILE, lambda f: _by_id(L.load_invert(f))),
    ArtifactSpec(
        "explanations", "explain", A.EXPLANATIONS_FILE, lambda f: _by_id(L.load_explain(f))
    ),
)
"""Each artifact the report shows, its stage and file (the names are ``saeinverse.artifacts``)."""


@dataclass
class RunArtifacts:
    """Everything a run directory holds that the report shows; None where a stage is absent."""

    root: Path
    config: dict[str, Any] = field(default_factory=dict)
    """The run's config.yaml as a plain dict."""
    meta: dict[str, Any] = field(default_factory=dict)
    status: dict[str, str] = field(default_factory=dict)
    """Stage folder name -> a key of ``STATUS_TEXT``."""
    markers: dict[str, dict[str, Any]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    """Why parts of the report are missing, in words."""
    models: dict[str, Any] | None = None
    stats: Any = None
    feature_set: Any = None
    clusters: Any = None
    analysis: Any = None
    selection: Any = None
    cards: Any = None
    """The run's ``FeatureCards`` (logit effects, histogram, examples, nearest features)."""
    reference: Any = None
    """The run's ``RunReference`` (reference maximum and fluency bound)."""
    inversions: dict[int, Any] = field(default_factory=dict)
    explanations: dict[int, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return str(self.config.get("output", {}).get("name") or self.root.name)

    @property
    def filtering(self) -> dict[str, Any]:
        """The filter bands: config.yaml's data.filtering, else the ones saved with the FeatureSet."""
        found = self.config.get("data", {}).get("filtering")
        if not found and self.feature_set is not None:
            found = self.feature_set.filtering
        return dict(found or {})

    @property
    def selected_ids(self) -> list[int]:
        """The features that get a card: the selection, else whatever was inverted or explained."""
        if self.selection is not None:
            return [int(f) for f in self.selection.feature_ids]
        return sorted(set(self.inversions) | set(self.explanations))

    def cluster_of(self, feature_id: int) -> int | None:
        """The feature's cluster label (-1: noise), or None when it was not clustered."""
        if self.clusters is None:
            return None
        hits = (self.clusters.feature_ids == feature_id).nonzero()[0]
        return int(self.clusters.labels[hits[0]]) if len(hits) else None


def load_run(run_dir: str | Path) -> RunArtifacts:
    """Read every usable artifact of ``run_dir`` (see the module docstring for 'usable')."""
    root = Path(run_dir)
    if root.is_file():
        raise ArtifactError(f"{root} is a file, not a run directory")
    if not root.is_dir():
        raise ArtifactError(f"run directory {root} does not exist")
    run = RunArtifacts(root=root)
    run.config = _read_config(root, run.notes)
    meta_path = root / META_FILE
    run.meta = load_json(meta_path) if meta_path.exists() else {}
    pipeline = run.config.get("pipeline", {})
    for stage in STAGES:
        run.status[stage.name] = _status(root, stage, pipeline, run.markers)
    _mark_stale(run)
    for spec in ARTIFACTS:
        if run.status.get(spec.stage) != "done":
            continue
        folder = _folder_with(run, spec)
        if folder is None:
            run.notes.append(f"{spec.filename} was not found in {spec.stage}/: left out.")
            continue
        try:
            setattr(run, spec.attribute, spec.load(folder))
        except (ArtifactError, OSError, KeyError, TypeError, ValueError) as err:
            run.status[spec.stage] = "unreadable"
            run.notes.append(
                f"{spec.filename} in {folder.name}/ could not be read: {err} "
                f"(recompute it with `saeinverse run --force {spec.stage}`)"
            )
            logger.warning("report: %s in %s is unreadable: %s", spec.filename, folder, err)
    for stage in STAGES:
        state = run.status[stage.name]
        if state not in ("done", "unreadable"):
            run.notes.append(f"{stage.title} ({stage.name}/): {STATUS_TEXT[state]}.")
    return run


def _read_config(root: Path, notes: list[str]) -> dict[str, Any]:
    path = root / CONFIG_FILE
    if not path.exists():
        notes.append(f"{CONFIG_FILE} is missing: stage toggles and filter bands are unknown.")
        return {}
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        notes.append(f"{CONFIG_FILE} is unreadable: {err}")
        return {}
    return data if isinstance(data, dict) else {}


def _status(
    root: Path, stage: StageSpec, pipeline: dict[str, Any], markers: dict[str, dict[str, Any]]
) -> str:
    if stage.toggle is not None and pipeline.get(stage.toggle, True) is False:
        return "off"
    folder = root / stage.name
    if not folder.is_dir():
        return "missing"
    try:
        markers[stage.name] = load_json(folder / MARKER)
    except ArtifactError:
        return "unfinished"
    return "done"


def _mark_stale(run: RunArtifacts) -> None:
    """A stage is stale when its marker names inputs (stage -> output) and one of them is not a
    usable stage carrying that output (recomputed since, switched off, unfinished or stale)."""
    for stage in STAGES:  # in pipeline order, so staleness flows downstream
        inputs = (run.markers.get(stage.name) or {}).get("inputs")
        if run.status[stage.name] != "done" or not isinstance(inputs, dict):
            continue
        for name, expected in inputs.items():
            upstream = run.markers.get(name) or {}
            if run.status.get(name) != "done" or _output(upstream) != expected:
                run.status[stage.name] = "stale"
                break


def _output(marker: dict[str, Any]) -> Any:
    """What a stage's readers record for it (markers before checksums: their hash)."""
    return marker.get("output", marker.get("hash"))


def _folder_with(run: RunArtifacts, spec: ArtifactSpec) -> Path | None:
    """The preferred stage folder when it holds the file, else any finished folder that does."""
    names = [spec.stage] + [name for name, state in run.status.items() if state == "done"]
    for name in names:
        if (run.root / name / spec.filename).exists():
            return run.root / name
    return None
