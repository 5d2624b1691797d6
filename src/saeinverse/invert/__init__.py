"""Inversion: find inputs that make each target SAE feature fire, batched over features.

Soft prompts (optimised with the nearest tokens forwarded, PEZ-style) give a first hard prompt;
gradient-guided token swaps refine it; every reported prompt is re-scored by a fresh forward.
"""

from saeinverse.invert.inputs import dataset_maxima, exemplar_tails
from saeinverse.invert.objective import FeatureTarget, sae_kind
from saeinverse.invert.optimize import optimize_feature, optimize_features, resolve_settings
from saeinverse.invert.project import (
    nearest_tokens,
    prompt_cross_entropy,
    score_prompt,
    score_prompts,
)
from saeinverse.invert.result import Inversion, load_inversions, save_inversions

__all__ = [
    "FeatureTarget",
    "Inversion",
    "dataset_maxima",
    "exemplar_tails",
    "load_inversions",
    "nearest_tokens",
    "optimize_feature",
    "optimize_features",
    "prompt_cross_entropy",
    "resolve_settings",
    "sae_kind",
    "save_inversions",
    "score_prompt",
    "score_prompts",
]
