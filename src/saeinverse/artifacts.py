"""The pipeline's stage list and the run directory's file names, written once.

A run directory holds ``config.yaml``, ``meta.json`` and one folder per stage; a stage folder
holds the stage's artifacts and, once the stage finished, its success marker ``_SUCCESS.json``.
The orchestration (``saeinverse.run``) computes the stages in this order, the CLI offers one
subcommand per stage, and the report (``saeinverse.report``) reads the artifacts back: all three
read this table, so adding a stage is one row here plus its compute and load functions in
``saeinverse.run.stages``.

This module imports nothing from saeinverse: every layer may read it.
"""

from __future__ import annotations

from dataclasses import dataclass

MARKER = "_SUCCESS.json"
"""A stage's success marker: the stage's hash, its inputs' hashes and its files' sha256."""
CONFIG_FILE = "config.yaml"
META_FILE = "meta.json"
IDENTITY_FILE = "identity.json"
"""The models' identity as last fingerprinted, with the stamp of the weights it was taken from."""
LOCK_FILE = ".lock"
"""Held by the run that writes the directory (``filelock``); never an artifact."""
CHECKPOINT_DIR = "units"
"""A stage folder's checkpoints (finished units of a long stage, e.g. the Ray engine's): kept
when an attempt died so the rerun reuses them, and not part of the stage's checksums."""

MODELS_FILE = "models.json"
STATS_FILE = "feature_stats.json"
STATS_TENSORS_FILE = "feature_stats.safetensors"
FEATURE_SET_FILE = "feature_set.json"
CLUSTERS_FILE = "clusters.json"
CLUSTERS_TENSORS_FILE = "clusters.safetensors"
CLUSTER_ANALYSIS_FILE = "cluster_analysis.json"
SELECTION_FILE = "selection.json"
CARDS_FILE = "feature_cards.json"
REFERENCE_FILE = "reference.json"
REFERENCE_TENSORS_FILE = "reference.safetensors"
INVERSIONS_FILE = "inversions.json"
EXPLANATIONS_FILE = "explanations.jsonl"
REPORT_DIR = "report"
REPORT_FILE = "report.html"


@dataclass(frozen=True)
class StageSpec:
    """One pipeline stage: what switches it on, what it reads and what it writes."""

    name: str
    """Its folder in the run directory, its CLI subcommand and its ``--force`` name."""
    toggle: str | None
    """The ``pipeline`` config key that switches it on (None: always on)."""
    title: str
    """What the report calls it."""
    help: str
    """One line for the CLI (empty: no subcommand of its own)."""
    inputs: tuple[str, ...] = ()
    """Earlier stages it needs (it is skipped when one did not run)."""
    optional: tuple[str, ...] = ()
    """Earlier stages it reads when they ran."""
    artifacts: tuple[str, ...] = ()
    """The files it writes into its folder (the report looks for these)."""


STAGES: tuple[StageSpec, ...] = (
    StageSpec("models", None, "Models", "", artifacts=(MODELS_FILE,)),
    StageSpec(
        "collect",
        "run_data_collection",
        "Collection",
        "collect feature activations and statistics over the prompts",
        inputs=("models",),
        artifacts=(STATS_FILE, STATS_TENSORS_FILE),
    ),
    StageSpec(
        "filter",
        "run_filtering",
        "Filtering",
        "filter features by density and entropy",
        inputs=("collect",),
        artifacts=(FEATURE_SET_FILE,),
    ),
    StageSpec(
        "cluster",
        "run_clustering",
        "Clustering",
        "cluster the surviving features and analyse the clusters",
        inputs=("collect",),
        optional=("filter",),
        artifacts=(CLUSTERS_FILE, CLUSTERS_TENSORS_FILE, CLUSTER_ANALYSIS_FILE),
    ),
    StageSpec(
        "select",
        "run_feature_selection",
        "Selection",
        "select target features",
        inputs=("collect",),
        optional=("filter", "cluster"),
        artifacts=(SELECTION_FILE,),
    ),
    StageSpec(
        "cards",
        None,
        "Feature cards",
        "compute the target features' cards (logit effects, histogram, examples across the "
        "activation range, nearest features)",
        inputs=("models", "collect"),
        optional=("select",),
        artifacts=(CARDS_FILE,),
    ),
    StageSpec(
        "reference",
        "run_prompt_optimization",
        "Reference",
        "measure the reference maximum and the real-text fluency bound inversion is judged by",
        inputs=("models",),
        optional=("collect",),
        artifacts=(REFERENCE_FILE, REFERENCE_TENSORS_FILE),
    ),
    StageSpec(
        "invert",
        "run_prompt_optimization",
        "Inversion",
        "invert the selected features (optimise prompts that activate them)",
        inputs=("models", "reference"),
        optional=("collect", "select"),
        artifacts=(INVERSIONS_FILE,),
    ),
    StageSpec(
        "explain",
        "run_explanations",
        "Explanations",
        "explain and score the selected features",
        inputs=("models",),
        optional=("collect", "select", "invert"),
        artifacts=(EXPLANATIONS_FILE,),
    ),
    StageSpec(
        "report",
        "run_visualization",
        "Report",
        "",
        optional=(
            "models",
            "collect",
            "filter",
            "cluster",
            "select",
            "cards",
            "reference",
            "invert",
            "explain",
        ),
        artifacts=(REPORT_FILE,),
    ),
)

STAGE_NAMES: tuple[str, ...] = tuple(s.name for s in STAGES)


def stage_spec(name: str) -> StageSpec:
    """The stage called ``name`` (KeyError naming the valid ones otherwise)."""
    for spec in STAGES:
        if spec.name == name:
            return spec
    raise KeyError(f"unknown stage {name!r}; valid: {list(STAGE_NAMES)}")


def _check(stages: tuple[StageSpec, ...]) -> None:
    """Names are unique and every stage reads only earlier ones."""
    seen: list[str] = []
    for spec in stages:
        if spec.name in seen:
            raise ValueError(f"stage {spec.name!r} is listed twice")
        later = [n for n in spec.inputs + spec.optional if n not in seen]
        if later:
            raise ValueError(f"stage {spec.name!r} reads {later}, which do not run before it")
        seen.append(spec.name)


_check(STAGES)
