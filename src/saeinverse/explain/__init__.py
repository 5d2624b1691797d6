"""Explanations: evidence per feature, explainers that put it in words, scorers that test the words.

``generate_explanations`` is the stage; ``save_explanations`` / ``load_explanations`` read and
write ``explanations.jsonl``. Explainers live in a small registry (``EXPLAINERS``:
``tokens``, ``llm``, ``openai``); scores are balanced accuracies on held-out evidence
(``scoring``), reported beside the same score with explanations shuffled across features.
"""

from saeinverse.explain.evidence import (
    ExplainEvidence,
    FeatureEvidence,
    HeldoutEvidence,
    TokenSequence,
)
from saeinverse.explain.explainers import (
    EXPLAINERS,
    Backend,
    ChatExplainer,
    ChatScorer,
    TokensExplainer,
    TokenSimulator,
    make_backend,
    register_explainer,
)
from saeinverse.explain.llm import HFChat
from saeinverse.explain.openai_client import EndpointError, OpenAIChat
from saeinverse.explain.sampling import build_evidence
from saeinverse.explain.scoring import balanced_accuracy, derangement, score_explanation
from saeinverse.explain.settings import resolve_settings
from saeinverse.explain.stage import (
    EXPLANATIONS_FILE,
    ExplanationResult,
    generate_explanations,
    load_explanations,
    save_explanations,
    summarize,
)

__all__ = [
    "EXPLAINERS",
    "EXPLANATIONS_FILE",
    "Backend",
    "ChatExplainer",
    "ChatScorer",
    "EndpointError",
    "ExplainEvidence",
    "ExplanationResult",
    "FeatureEvidence",
    "HFChat",
    "HeldoutEvidence",
    "OpenAIChat",
    "TokenSequence",
    "TokenSimulator",
    "TokensExplainer",
    "balanced_accuracy",
    "build_evidence",
    "derangement",
    "generate_explanations",
    "load_explanations",
    "make_backend",
    "register_explainer",
    "resolve_settings",
    "save_explanations",
    "score_explanation",
    "summarize",
]
