"""Who writes explanations and who checks them: a small registry of backends.

A backend pairs an explainer (evidence -> an ``Explanation``: a plain sentence, then the rule
when it writes one; a plain string is a sentence) with a scorer that answers the scoring
questions from an explanation alone (``saeinverse.explain.scoring``). A scorer's ``reads`` says
which part it scores: the rule simulator reads the rule (the sentence when there is none), a
language model reads the sentence.

- ``context`` (the default): deterministic. A rule naming the feature's tokens and the context
  they fire in, its size chosen by cross-validation on the explaining side
  (``context.ContextExplainer``), after a sentence built from it (``sentence.describe``, its
  parts chosen on the explaining side by ``wording.SentenceFitter`` when
  ``explanation.fit_sentence``); its scorer simulates the rule (``rules.RuleSimulator``).
- ``tokens``: deterministic. The tokens carrying most of the feature's activation mass
  (JSON-quoted) with two short contexts, scored by the same simulator.
- ``llm``: a local Hugging Face causal LM through its chat template (greedy); the explainer
  answers ``prompts.explain_conversation`` (its sentence), the scorer answers yes / no questions.
- ``openai``: the same prompts sent to an OpenAI-compatible endpoint.

``register_explainer`` adds a backend (names are unique). Factories receive the typed
``ExplanationConfig`` section."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from saeinverse.config import ExplanationConfig
from saeinverse.errors import ConfigError
from saeinverse.explain import prompts
from saeinverse.explain.chat import ChatModel
from saeinverse.explain.context import ContextExplainer, Describe, TokensExplainer
from saeinverse.explain.evidence import ExplainEvidence
from saeinverse.explain.llm import HFChat, load_chat_lm
from saeinverse.explain.rules import RuleSimulator
from saeinverse.explain.scoring import Scorer, ScoringItem, Task
from saeinverse.explain.sentence import Explanation, describe

SCORE_MAX_NEW_TOKENS = 3
"""A yes / no answer needs no more."""


class Explainer(Protocol):
    def explain_many(self, evidence: Sequence[ExplainEvidence]) -> list[Explanation | str]: ...


@dataclass
class Backend:
    """An explainer and the scorer that goes with it."""

    name: str
    explainer: Explainer
    scorer: Scorer
    scorer_name: str = ""
    """Whose scorer it is (empty: this backend's own)."""

    def __post_init__(self) -> None:
        self.scorer_name = self.scorer_name or self.name


BackendFactory = Callable[[ExplanationConfig, Any, Any], Backend]
EXPLAINERS: dict[str, BackendFactory] = {}
"""Backend factories by name: ``factory(settings, lm, tokenizer) -> Backend``."""


def register_explainer(name: str) -> Callable[[BackendFactory], BackendFactory]:
    """Decorator registering a backend factory under ``name`` (duplicates are an error)."""

    def add(factory: BackendFactory) -> BackendFactory:
        if name in EXPLAINERS:
            raise ValueError(f"an explainer named {name!r} is already registered")
        EXPLAINERS[name] = factory
        return factory

    return add


def make_backend(settings: ExplanationConfig, lm: Any = None, tokenizer: Any = None) -> Backend:
    """The backend ``settings.explainer`` names, scoring with ``settings.scorer``'s when one is set.

    ``ConfigError`` lists the valid names when either is unknown.
    """
    backend = _factory(settings.explainer, "explainer")(settings, lm, tokenizer)
    scorer_name = settings.scorer
    if scorer_name and scorer_name != backend.name:
        other = _factory(scorer_name, "scorer")(settings, lm, tokenizer)
        backend = Backend(backend.name, backend.explainer, other.scorer, other.name)
    return backend


def _factory(name: str, key: str) -> BackendFactory:
    factory = EXPLAINERS.get(name)
    if factory is None:
        raise ConfigError(f"explanation.{key} {name!r} is unknown; valid: {sorted(EXPLAINERS)}")
    return factory


# ----------------------------------------------------------------------------- rules


def rule_sentence(cfg: ExplanationConfig) -> Describe:
    """How the rule explainers word their sentence: fitted on the explaining side with the
    embedding judge's model (``explanation.fit_sentence``), else ``sentence.describe``."""
    if not cfg.fit_sentence:
        return describe
    from saeinverse.explain.judge import EmbeddingJudge
    from saeinverse.explain.wording import SentenceFitter

    return SentenceFitter(EmbeddingJudge().embed).describe


@register_explainer("context")
def _context_backend(cfg: ExplanationConfig, lm: Any, tokenizer: Any) -> Backend:
    explainer = ContextExplainer(int(cfg.n_top_tokens), sentence=rule_sentence(cfg))
    return Backend("context", explainer, RuleSimulator())


@register_explainer("tokens")
def _tokens_backend(cfg: ExplanationConfig, lm: Any, tokenizer: Any) -> Backend:
    explainer = TokensExplainer(int(cfg.n_top_tokens), sentence=rule_sentence(cfg))
    return Backend("tokens", explainer, RuleSimulator())


# ----------------------------------------------------------------------------- chat models


class ChatExplainer:
    """Asks a chat model for a one-sentence explanation of each feature's explaining evidence.

    A chat model that can continue a started answer (``supports_prefill``, as ``HFChat``) gets
    the answer's first words (``prompts.EXPLAIN_PREFILL``) and continues them.
    """

    def __init__(self, chat: ChatModel, max_new_tokens: int = 48):
        self.chat, self.max_new_tokens = chat, int(max_new_tokens)

    def explain_many(self, evidence: Sequence[ExplainEvidence]) -> list[str]:
        prefill = bool(getattr(self.chat, "supports_prefill", False))
        conversations = [prompts.explain_conversation(e, prefill) for e in evidence]
        replies = self.chat.complete_many(conversations, self.max_new_tokens)
        if prefill:
            replies = [f"{prompts.EXPLAIN_PREFILL} {r.strip()}" for r in replies]
        return [prompts.clean_explanation(r) or "(no explanation)" for r in replies]


class ChatScorer:
    """Asks a chat model a yes / no question per scoring item.

    A chat model with ``yes_probability_many`` (``HFChat``) answers with its P(yes); any other
    replies in words, read by ``prompts.parse_yes_no``.
    """

    reads = "sentence"

    def __init__(self, chat: ChatModel):
        self.chat = chat

    def predict(
        self, explanation: str, items: Sequence[ScoringItem], task: Task
    ) -> list[float | None]:
        if task == "detection":
            conversations = [
                prompts.detection_conversation(explanation, it.sequence) for it in items
            ]
        else:
            conversations = [
                prompts.fuzzing_conversation(explanation, it.sequence, list(it.marks or ()))
                for it in items
            ]
        if hasattr(self.chat, "yes_probability_many"):
            return self.chat.yes_probability_many(conversations)
        replies = self.chat.complete_many(conversations, SCORE_MAX_NEW_TOKENS)
        answers = [prompts.parse_yes_no(r) for r in replies]
        return [None if a is None else float(a) for a in answers]


def chat_backend(name: str, chat: ChatModel, settings: ExplanationConfig) -> Backend:
    return Backend(name, ChatExplainer(chat, settings.max_new_tokens), ChatScorer(chat))


@register_explainer("llm")
def _llm_backend(settings: ExplanationConfig, lm: Any, tokenizer: Any) -> Backend:
    if hasattr(lm, "complete_many"):  # already a chat model
        return chat_backend("llm", lm, settings)
    if lm is None or tokenizer is None:
        lm, tokenizer = load_chat_lm(settings.llm_name)
    return chat_backend("llm", HFChat(lm, tokenizer, batch_size=settings.batch_size), settings)


@register_explainer("openai")
def _openai_backend(settings: ExplanationConfig, lm: Any, tokenizer: Any) -> Backend:
    from saeinverse.explain.openai_client import OpenAIChat

    chat = OpenAIChat(
        settings.base_url,
        settings.api_model,
        settings.api_key_env,
        timeout_s=float(settings.request_timeout),
        max_retries=int(settings.max_retries),
    )
    return chat_backend("openai", chat, settings)
