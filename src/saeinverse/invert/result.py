"""The ``Inversion`` record: what inverting one feature produced, saved as JSON.

Token ids are plain int lists without the start token; every activation given for a hard
prompt (projected, refined, Pareto) is the one a fresh forward on those ids returns
(``score_prompt``), never a soft or screening value.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from saeinverse.errors import ArtifactError
from saeinverse.io import load_json, save_json

INVERSIONS_FILE = "inversions.json"
FORMAT_VERSION = 1


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
    """The prompt the discrete search ended with, start token excluded."""
    refined_text: str
    """``refined_tokens`` decoded."""
    refined_activation: float
    """Fresh-forward activation of ``refined_tokens``."""
    dataset_max: float | None = None
    """The feature's maximum over the collection corpus; None when no collection ran."""
    position: str = "last"
    """Where the activation is read: 'last' prompt position or 'max' over positions."""
    refined_cross_entropy: float | None = None
    """The model's own mean next-token cross-entropy of the refined prompt (nats)."""
    pareto: list[dict[str, Any]] = field(default_factory=list)
    """Non-dominated (activation up, cross-entropy down) prompts: tokens, text, activation, cross_entropy."""
    forward_passes: int = 0
    """Sequences evaluated for this feature (gradient, screening, fluency and check forwards)."""
    forward_passes_by_stage: dict[str, int] = field(default_factory=dict)
    """``forward_passes`` split by stage: soft, refine, check."""
    seconds: float = 0.0
    """Wall-clock seconds of the batch divided by its number of features."""
    trajectory: dict[str, list[float]] = field(default_factory=dict)
    """Per step: soft objective / activation, refined activation / cross-entropy."""

    @property
    def projected_ratio(self) -> float | None:
        """``projected_activation / dataset_max`` (None without a positive dataset max)."""
        return _ratio(self.projected_activation, self.dataset_max)

    @property
    def refined_ratio(self) -> float | None:
        """``refined_activation / dataset_max`` (None without a positive dataset max)."""
        return _ratio(self.refined_activation, self.dataset_max)

    def best_within(self, max_cross_entropy: float) -> dict[str, Any] | None:
        """The most active reported prompt (Pareto or refined) with cross-entropy ≤ the bound."""
        refined = {
            "tokens": self.refined_tokens,
            "text": self.refined_text,
            "activation": self.refined_activation,
            "cross_entropy": self.refined_cross_entropy,
        }
        fluent = [
            p
            for p in [*self.pareto, refined]
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
