"""``FeatureCard``: what every SAE dashboard shows of one feature, saved once per run.

A card holds, for one feature (definitions in ``saeinverse.cards.logits`` and
``saeinverse.cards.compute``):

- its statistics from collection (density = firing tokens / tokens, firing tokens, max
  activation) and its activation histogram: collection's log-spaced bins over the firing
  activations, from the first non-empty bin to the last;
- its logit effects: the ``k`` tokens its decoder direction promotes most and suppresses most;
- its nearest features by decoder cosine;
- its top exemplars and interval samples: token windows with every token's activation.

``FeatureCards.save`` writes ``feature_cards.json``; ``load`` reads it back.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from saeinverse import artifacts
from saeinverse.errors import ArtifactError
from saeinverse.io import load_json, save_json

CARDS_VERSION = 1


@dataclass
class TokenWindow:
    """A stretch of one prompt around the feature's peak there, with every token's activation."""

    prompt_index: int
    """The prompt in the collection (``FeatureStats.prompts``)."""
    start: int
    """Position of the first token of the window in the prompt."""
    token_ids: list[int]
    tokens: list[str]
    values: list[float]
    """The feature's activation on each token."""
    peak: int
    """Index in the window of the token the window centres on (the prompt's maximum)."""

    @property
    def activation(self) -> float:
        """The activation at the peak token."""
        return self.values[self.peak]


@dataclass
class Interval:
    """One equal-width interval of 0 .. max activation, and prompts whose maximum lies in it."""

    low: float
    high: float
    n_prompts: int
    """Prompts whose maximum activation lies in [low, high) (the last interval: [low, high])."""
    samples: list[TokenWindow]


@dataclass
class HistogramBar:
    """Firing activations counted in [low, high)."""

    low: float
    high: float
    count: int


@dataclass
class LogitEffect:
    token_id: int
    token: str
    value: float


@dataclass
class Neighbour:
    feature_id: int
    cosine: float


@dataclass
class FeatureCard:
    """What every SAE dashboard shows of one feature (module docstring)."""

    feature_id: int
    density: float
    firing_count: int
    n_tokens: int
    max_activation: float
    histogram: list[HistogramBar]
    logit_path: str | None
    """How the decoder row reaches the logits ("W_dec @ W_U", ...); None: no direct path."""
    positive_logits: list[LogitEffect]
    """The tokens the direction promotes most, highest first."""
    negative_logits: list[LogitEffect]
    """The tokens it suppresses most, lowest first."""
    neighbours: list[Neighbour]
    """The other features with the highest decoder cosine, highest first."""
    exemplars: list[TokenWindow]
    """The top exemplars, highest first."""
    intervals: list[Interval]

    @property
    def histogram_title(self) -> str:
        """'Activation density 1.23e-03 (456 of 370,000 tokens)'."""
        return (
            f"Activation density {self.density:.3g} "
            f"({self.firing_count:,} of {self.n_tokens:,} tokens)"
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FeatureCard:
        data = dict(data)
        data["histogram"] = [HistogramBar(**b) for b in data["histogram"]]
        data["positive_logits"] = [LogitEffect(**e) for e in data["positive_logits"]]
        data["negative_logits"] = [LogitEffect(**e) for e in data["negative_logits"]]
        data["neighbours"] = [Neighbour(**n) for n in data["neighbours"]]
        data["exemplars"] = [TokenWindow(**w) for w in data["exemplars"]]
        data["intervals"] = [
            Interval(**{**i, "samples": [TokenWindow(**w) for w in i["samples"]]})
            for i in data["intervals"]
        ]
        return cls(**data)


@dataclass
class FeatureCards:
    """The run's feature cards, in the order of its target features."""

    cards: list[FeatureCard]
    meta: dict[str, Any] = field(default_factory=dict)
    """How they were computed: hook, logit path, k's, intervals, seed."""

    def __getitem__(self, feature_id: int) -> FeatureCard:
        for card in self.cards:
            if card.feature_id == int(feature_id):
                return card
        raise KeyError(f"feature {feature_id} has no card; cards: {self.feature_ids}")

    def __contains__(self, feature_id: object) -> bool:
        return any(card.feature_id == feature_id for card in self.cards)

    def __len__(self) -> int:
        return len(self.cards)

    @property
    def feature_ids(self) -> list[int]:
        return [card.feature_id for card in self.cards]

    def save(self, folder: str | Path) -> None:
        """Write ``feature_cards.json`` into ``folder``."""
        save_json(
            Path(folder) / artifacts.CARDS_FILE,
            {
                "version": CARDS_VERSION,
                "meta": self.meta,
                "cards": [c.to_dict() for c in self.cards],
            },
        )

    @classmethod
    def load(cls, folder: str | Path) -> FeatureCards:
        """Read what ``save`` wrote; ``ArtifactError`` if it is not a cards file."""
        path = Path(folder) / artifacts.CARDS_FILE
        data = load_json(path)
        if not isinstance(data, dict) or data.get("version") != CARDS_VERSION:
            raise ArtifactError(f"artifact {path} is not a saeinverse feature-cards file")
        try:
            return cls([FeatureCard.from_dict(c) for c in data["cards"]], data.get("meta", {}))
        except (KeyError, TypeError) as err:
            raise ArtifactError(f"artifact {path} is unreadable: {err}") from err


def feature_cards(run_dir: str | Path) -> FeatureCards:
    """The feature cards a run's ``cards`` stage saved (``<run_dir>/cards/feature_cards.json``)."""
    return FeatureCards.load(Path(run_dir) / "cards")
