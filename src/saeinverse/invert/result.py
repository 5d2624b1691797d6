"""The ``Inversion`` record: what inverting one feature produced, saved as JSON.

Token ids are plain int lists without the start token; every activation and cross-entropy given
for a hard prompt (projected, refined, every front point, the headline) is the one a fresh
forward on those ids returns (``score_prompt``, ``Fluency.cross_entropy``), never a soft or
screening value.

What a reader sees first: the **headline**, the most active front prompt whose cross-entropy is
at or below the real-text bound (``fluency_bound``), beside the **unconstrained best**
(``refined_*``: the most active prompt found). Ratios divide by the **reference max**
(``reference_max``, the feature's maximum over ``reference_tokens`` corpus tokens) when known,
else by the run's collection maximum (``dataset_max``); ``reference_name`` says which.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from saeinverse import artifacts
from saeinverse.errors import ArtifactError
from saeinverse.io import load_json, save_json

INVERSIONS_FILE = artifacts.INVERSIONS_FILE
FORMAT_VERSION = 2


@dataclass
class Inversion:
    """One feature's inversion: soft, projected and refined prompts with their activations."""

    feature_id: int
    """SAE feature index."""
    soft_activation: float
    """Activation of the continuous soft prompt (not a real prompt: never report it as one)."""
    projected_tokens: list[int]
    """Nearest-token projection of the soft stage (its best hard prompt), start token excluded."""
    projected_text: str
    """``projected_tokens`` decoded."""
    projected_activation: float
    """Fresh-forward activation of ``projected_tokens``."""
    refined_tokens: list[int]
    """The unconstrained best: the most active prompt the search found, start token excluded."""
    refined_text: str
    """``refined_tokens`` decoded."""
    refined_activation: float
    """Fresh-forward activation of ``refined_tokens``."""
    dataset_max: float | None = None
    """The feature's maximum over the collection corpus; None when no collection ran."""
    position: str = "last"
    """Where the activation is read: 'last' prompt position or 'max' over positions."""
    refined_cross_entropy: float | None = None
    """The model's own cross-entropy of the refined prompt (nats per byte, ``invert.fluency``)."""
    pareto: list[dict[str, Any]] = field(default_factory=list)
    """The front (Pareto set): non-dominated (activation up, cross-entropy down) prompts, from fluent
    to unconstrained, each {tokens, text, activation, cross_entropy} re-scored by a fresh forward."""
    headline: dict[str, Any] | None = None
    """The most active prompt (searched, or an exemplar window) with cross-entropy ≤ the bound;
    None when none fires there."""
    exemplar_window: dict[str, Any] | None = None
    """The most active of the feature's real windows (its top collection contexts, then the
    reference pass's top windows, cut to the prompt's length and re-scored like every prompt)
    with cross-entropy ≤ the bound: what the headline is measured against (never below it).
    None without either or when none is within the bound."""
    fluency_bound: dict[str, Any] | None = None
    """The real-text bound (``invert.fluency.FluencyBound`` as a dict): cross_entropy, quantile,
    n_windows, length, p10, p50, p90."""
    reference_max: float | None = None
    """The feature's maximum over ``reference_tokens`` tokens of the corpus (what ratios divide by)."""
    reference_tokens: int | None = None
    """Tokens the reference maximum was taken over."""
    forward_passes: float = 0.0
    """Sequence-equivalents spent on this feature (``invert.cost``: token positions x layers
    forwarded, a backward as two forwards, over prompt tokens x layers to the hook)."""
    forward_passes_by_stage: dict[str, float] = field(default_factory=dict)
    """``forward_passes`` split by stage: soft, refine (with the fluent row's start: exemplar
    windows screened, or the beam), check, and in the run's stage length (the probe of
    ``invert.context`` that chose ``length``)."""
    length: int | None = None
    """Prompt tokens searched (start token excluded)."""
    lengthened_from: int | None = None
    """``optimization.length`` when none of the feature's exemplar windows fired at it and the
    search ran at ``length``, the shortest of its exemplars' contexts that fires
    (``invert.context``); None otherwise."""
    window_texts: list[str] = field(default_factory=list)
    """The corpus texts (``data.corpus.text_hash``) of the real windows beyond the run's
    collection (the reference pass's) its search could start from: the explain stage never
    draws one of them (a refined prompt may still hold its words)."""
    seconds: float = 0.0
    """Wall-clock seconds of the batch divided by its number of features."""
    trajectory: dict[str, list[float]] = field(default_factory=dict)
    """Per step: soft objective / activation, refined activation / cross-entropy."""

    @property
    def reference(self) -> float | None:
        """What ratios divide by: the reference max when known, else the collection max."""
        return self.reference_max if self.reference_max is not None else self.dataset_max

    @property
    def reference_name(self) -> str:
        """'reference max over N tokens', or 'dataset max' (the run's collection) without one."""
        if self.reference_max is not None:
            return f"reference max over {self.reference_tokens:,} tokens"
        return "dataset max" if self.dataset_max is not None else "no reference max"

    @property
    def projected_ratio(self) -> float | None:
        """``projected_activation / reference`` (None without a positive reference)."""
        return _ratio(self.projected_activation, self.reference)

    @property
    def refined_ratio(self) -> float | None:
        """The unconstrained best's ``refined_activation / reference``."""
        return _ratio(self.refined_activation, self.reference)

    @property
    def headline_ratio(self) -> float | None:
        """The headline's activation ÷ reference (0.0 when no prompt fires within the bound)."""
        if self.reference is None or self.reference <= 0:
            return None
        return 0.0 if self.headline is None else self.headline["activation"] / self.reference

    @property
    def front(self) -> list[dict[str, Any]]:
        """The front, from the most fluent prompt to the most active (stored as ``pareto``)."""
        return self.pareto

    def best_within(self, max_cross_entropy: float) -> dict[str, Any] | None:
        """The most active reported prompt (front or refined) with cross-entropy ≤ the bound."""
        refined = {
            "tokens": self.refined_tokens,
            "text": self.refined_text,
            "activation": self.refined_activation,
            "cross_entropy": self.refined_cross_entropy,
        }
        fluent = [
            p
            for p in [*self.front, refined]
            if p["cross_entropy"] is not None
            and p["cross_entropy"] <= max_cross_entropy
            and p["activation"] > 0
        ]
        return max(fluent, key=lambda p: p["activation"]) if fluent else None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (ratios included for readers; they are recomputed on load)."""
        data = dataclasses.asdict(self)
        data["projected_ratio"] = self.projected_ratio
        data["refined_ratio"] = self.refined_ratio
        data["headline_ratio"] = self.headline_ratio
        data["reference_name"] = self.reference_name
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Inversion:
        """Rebuild a record from ``to_dict`` output (unknown keys are ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def _ratio(value: float, reference: float | None) -> float | None:
    if reference is None or reference <= 0:
        return None
    return value / reference


def save_inversions(directory: str | Path, inversions: list[Inversion]) -> Path:
    """Write ``<directory>/inversions.json`` atomically; returns its path."""
    path = Path(directory) / INVERSIONS_FILE
    save_json(
        path, {"version": FORMAT_VERSION, "inversions": [inv.to_dict() for inv in inversions]}
    )
    return path


def load_inversions(directory: str | Path) -> list[Inversion]:
    """Read the records ``save_inversions`` wrote (``ArtifactError`` when missing or corrupt)."""
    path = Path(directory) / INVERSIONS_FILE
    data = load_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("inversions"), list):
        raise ArtifactError(f"artifact {path} holds no 'inversions' list")
    try:
        return [Inversion.from_dict(item) for item in data["inversions"]]
    except TypeError as err:
        raise ArtifactError(f"artifact {path} has a malformed inversion: {err}") from err
