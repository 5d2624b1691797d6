"""Inversion: find inputs that make each target SAE feature fire, batched over features.

Soft prompts (optimised with the nearest tokens forwarded, PEZ-style) give a first hard prompt;
a population of gradient-guided token-swap rows (unconstrained and fluent) refines it; every
reported prompt is re-scored by a fresh forward, and each feature's front, headline (the most
active prompt within the real-text cross-entropy bound) and unconstrained best are recorded.
"""

from saeinverse.invert.budget import plan_budget
from saeinverse.invert.fluency import Fluency, FluencyBound, measure_bound
from saeinverse.invert.inputs import dataset_maxima, exemplar_tails
from saeinverse.invert.objective import FeatureTarget, sae_kind
from saeinverse.invert.optimize import optimize_feature, optimize_features
from saeinverse.invert.project import nearest_tokens, score_prompt, score_prompts
from saeinverse.invert.result import Inversion, load_inversions, save_inversions

__all__ = [
    "FeatureTarget",
    "Fluency",
    "FluencyBound",
    "Inversion",
    "dataset_maxima",
    "exemplar_tails",
    "load_inversions",
    "measure_bound",
    "nearest_tokens",
    "optimize_feature",
    "optimize_features",
    "plan_budget",
    "sae_kind",
    "save_inversions",
    "score_prompt",
    "score_prompts",
]
