"""Explanations: evidence per feature, explainers that put it in words, scorers that test the words.

``generate_explanations`` is the stage; ``save_explanations`` / ``load_explanations`` read and
write ``explanations.jsonl``. Explainers live in a small registry (``EXPLAINERS``: ``context``,
``tokens``, ``llm``, ``openai``); scores are balanced accuracies on held-out evidence
(``scoring``) and the embedding judge's ROC AUC (``judge``), each with a bootstrap 95% interval,
the same score with explanations shuffled across features, and a verdict (``intervals``).
"""

from saeinverse.explain.chat import ChatModel, Conversation
from saeinverse.explain.context import ContextExplainer, TokensExplainer
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
    make_backend,
    register_explainer,
)
from saeinverse.explain.intervals import compare, verdict
from saeinverse.explain.judge import EmbeddingJudge
from saeinverse.explain.llm import HFChat
from saeinverse.explain.openai_client import EndpointError, OpenAIChat
from saeinverse.explain.results import (
    EXPLANATIONS_FILE,
    SCORE_NAMES,
    ExplanationResult,
    load_explanations,
    save_explanations,
    summarize,
)
from saeinverse.explain.rules import Rule, RuleSimulator, parse_rule
from saeinverse.explain.sampling import build_evidence
from saeinverse.explain.scoring import balanced_accuracy, derangement, score_explanation
from saeinverse.explain.sentence import Explanation
from saeinverse.explain.stage import generate_explanations

__all__ = [
    "EXPLAINERS",
    "EXPLANATIONS_FILE",
    "SCORE_NAMES",
    "Backend",
    "ChatExplainer",
    "ChatModel",
    "ChatScorer",
    "ContextExplainer",
    "Conversation",
    "EmbeddingJudge",
    "EndpointError",
    "ExplainEvidence",
    "Explanation",
    "ExplanationResult",
    "FeatureEvidence",
    "HFChat",
    "HeldoutEvidence",
    "OpenAIChat",
    "Rule",
    "RuleSimulator",
    "TokenSequence",
    "TokensExplainer",
    "balanced_accuracy",
    "build_evidence",
    "compare",
    "derangement",
    "generate_explanations",
    "load_explanations",
    "make_backend",
    "parse_rule",
    "register_explainer",
    "save_explanations",
    "score_explanation",
    "summarize",
    "verdict",
]
