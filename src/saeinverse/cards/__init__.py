"""Feature cards: what every SAE dashboard shows of a feature (logit effects, activation
histogram, examples across the activation range with every token's value, nearest features),
computed once per run by the ``cards`` stage and read by the report, the export and notebooks.
"""

from saeinverse.cards.card import (
    FeatureCard,
    FeatureCards,
    HistogramBar,
    Interval,
    LogitEffect,
    Neighbour,
    TokenWindow,
    feature_cards,
)
from saeinverse.cards.compute import compute_cards
from saeinverse.cards.logits import LogitPathError, decoder_logits, logit_path, nearest_features

__all__ = [
    "FeatureCard",
    "FeatureCards",
    "HistogramBar",
    "Interval",
    "LogitEffect",
    "LogitPathError",
    "Neighbour",
    "TokenWindow",
    "compute_cards",
    "decoder_logits",
    "feature_cards",
    "logit_path",
    "nearest_features",
]
