"""Stage 2: keep the features worth clustering; record why every other feature was dropped.

Rules, applied to a `FeatureStats` with `data.filtering` (definitions: `saeinverse.collect.stats`):

- ``dead``: never fires (firing_count == 0). Dropped; no other rule is checked.
- ``dense``: density > sparsity_max. Dropped.
- ``too_sparse``: density < sparsity_min. Dropped.
- ``low_entropy``: prompt_entropy < entropy_threshold_low. Dropped.
- ``high_entropy``: prompt_entropy > entropy_threshold_high. Dropped.
- ``single_token``: token_entropy < min_token_entropy. Dropped if drop_single_token, else a flag.
- ``positional``: positional_share over the first positional_window tokens >
  max_positional_share. Dropped if drop_positional, else a flag.

A dropped feature lists every reason that holds (flags included); a kept feature lists the
flags that hold.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from saeinverse import artifacts
from saeinverse.collect.stats import FeatureStats
from saeinverse.errors import ArtifactError
from saeinverse.io import load_json, save_json

logger = logging.getLogger(__name__)

FEATURE_SET_FILE = artifacts.FEATURE_SET_FILE
REASONS = (
    "dead",
    "dense",
    "too_sparse",
    "low_entropy",
    "high_entropy",
    "single_token",
    "positional",
)

# reason -> (condition over all features, the filtering key that makes it drop (None: always))
_RULES: dict[str, tuple[Callable[[FeatureStats, Mapping[str, Any]], Tensor], str | None]] = {
    "dense": (lambda s, c: s.density > c["sparsity_max"], None),
    "too_sparse": (lambda s, c: s.density < c["sparsity_min"], None),
    "low_entropy": (lambda s, c: s.prompt_entropy < c["entropy_threshold_low"], None),
    "high_entropy": (lambda s, c: s.prompt_entropy > c["entropy_threshold_high"], None),
    "single_token": (
        lambda s, c: s.token_entropy < c["min_token_entropy"],
        "drop_single_token",
    ),
    "positional": (
        lambda s, c: s.positional_share_at(int(c["positional_window"])) > c["max_positional_share"],
        "drop_positional",
    ),
}


@dataclass
class FeatureSet:
    """The outcome of filtering: kept SAE feature ids and the reasons / flags of every feature."""

    d_sae: int
    kept: Tensor  # Int64[Tensor, "n_features"], original SAE ids, ascending
    reasons: dict[int, list[str]]
    """Every dropped feature's reasons (non-empty)."""
    flags: dict[int, list[str]]
    """Kept features' flags (e.g. 'single_token' when drop_single_token is off)."""
    filtering: dict[str, Any] = field(default_factory=dict)
    """The filtering config that produced it."""

    def __len__(self) -> int:
        return len(self.kept)

    def summary(self) -> dict[str, int]:
        """Counts: 'kept', then how many features each reason drops (a feature may count twice)."""
        counts = Counter(r for rs in self.reasons.values() for r in rs)
        return {"kept": len(self), **{r: counts[r] for r in REASONS}}

    def save(self, folder: str | Path) -> None:
        """Write `feature_set.json` atomically into `folder`."""
        save_json(
            Path(folder) / FEATURE_SET_FILE,
            {
                "d_sae": self.d_sae,
                "kept": self.kept.tolist(),
                "reasons": {str(k): v for k, v in sorted(self.reasons.items())},
                "flags": {str(k): v for k, v in sorted(self.flags.items())},
                "filtering": self.filtering,
                "summary": self.summary(),
            },
        )

    @classmethod
    def load(cls, folder: str | Path) -> FeatureSet:
        path = Path(folder) / FEATURE_SET_FILE
        data = load_json(path)
        try:
            return cls(
                d_sae=int(data["d_sae"]),
                kept=torch.tensor(data["kept"], dtype=torch.long),
                reasons={int(k): list(v) for k, v in data["reasons"].items()},
                flags={int(k): list(v) for k, v in data["flags"].items()},
                filtering=dict(data["filtering"]),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise ArtifactError(f"artifact {path} is unreadable: {err}") from err


def filter_features(stats: FeatureStats, filtering_cfg: Mapping[str, Any]) -> FeatureSet:
    """Apply the rules in the module docstring; every dropped feature records its reasons."""
    dead = stats.firing_count == 0
    holds = {name: rule(stats, filtering_cfg) & ~dead for name, (rule, _) in _RULES.items()}
    drops = dead.clone()
    for name, (_, switch) in _RULES.items():
        if switch is None or filtering_cfg[switch]:
            drops |= holds[name]
    reasons: dict[int, list[str]] = {}
    flags: dict[int, list[str]] = {}
    labels = {fid: ["dead"] for fid in dead.nonzero().squeeze(1).tolist()}
    for name in _RULES:
        for fid in holds[name].nonzero().squeeze(1).tolist():
            labels.setdefault(fid, []).append(name)
    for fid, names in labels.items():
        (reasons if drops[fid] else flags)[fid] = names
    kept = (~drops).nonzero().squeeze(1)
    filtering = (
        filtering_cfg.to_dict() if hasattr(filtering_cfg, "to_dict") else dict(filtering_cfg)
    )
    result = FeatureSet(stats.d_sae, kept, reasons, flags, filtering)
    logger.info("filtering: %s", result.summary())
    return result
