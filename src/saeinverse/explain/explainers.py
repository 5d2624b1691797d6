"""Who writes explanations and who checks them: a small registry of backends.

A backend pairs an explainer (evidence -> one sentence) with a scorer that answers the scoring
questions from an explanation alone (``saeinverse.explain.scoring``):

- ``tokens``: deterministic. The explanation lists the tokens carrying most of the feature's
  activation mass (JSON-quoted) with two short contexts; its scorer is a *simulator* that
  predicts "fires" when a sequence holds one of the quoted tokens (detection) or when at least
  half of the marked tokens are quoted ones (fuzzing).
- ``llm``: a local Hugging Face causal LM through its chat template (greedy); the explainer
  answers ``prompts.explain_conversation``, the scorer answers yes / no questions.
- ``openai``: the same prompts sent to an OpenAI-compatible endpoint.

``register_explainer`` adds a backend (names are unique).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Protocol

from saeinverse.errors import ConfigError
from saeinverse.explain import prompts
from saeinverse.explain.evidence import ExplainEvidence, TokenSequence, display
from saeinverse.explain.llm import ChatModel, HFChat, load_chat_lm
from saeinverse.explain.scoring import Scorer, ScoringItem, Task

SCORE_MAX_NEW_TOKENS = 3
"""A yes / no answer needs no more."""
TOKEN_MASS_COVERED = 0.8
"""The tokens explainer lists top tokens until they carry this share of the mass."""
N_CONTEXTS = 2
CONTEXT_RADIUS = 4


class Explainer(Protocol):
    def explain_many(self, evidence: Sequence[ExplainEvidence]) -> list[str]: ...


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


BackendFactory = Callable[[SimpleNamespace, Any, Any], Backend]
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


def make_backend(settings: SimpleNamespace, lm: Any = None, tokenizer: Any = None) -> Backend:
    """The backend ``settings.explainer`` names, scoring with ``settings.scorer``'s when one is set.

    ``ConfigError`` lists the valid names when either is unknown.
    """
    backend = _factory(settings.explainer, "explainer")(settings, lm, tokenizer)
    scorer_name = getattr(settings, "scorer", None)
    if scorer_name and scorer_name != backend.name:
        other = _factory(scorer_name, "scorer")(settings, lm, tokenizer)
        backend = Backend(backend.name, backend.explainer, other.scorer, other.name)
    return backend


def _factory(name: str, key: str) -> BackendFactory:
    factory = EXPLAINERS.get(name)
    if factory is None:
        raise ConfigError(f"explanation.{key} {name!r} is unknown; valid: {sorted(EXPLAINERS)}")
    return factory


# ----------------------------------------------------------------------------- tokens


def _norm(token: str) -> str:
    """Tokens compare case- and space-insensitively (a space-only token compares as itself)."""
    token = display(token)
    return token.strip().lower() or token


class TokensExplainer:
    """'Fires on "a", "b" (as in: “…«a»…”)': built from the evidence, deterministic."""

    def __init__(self, max_tokens: int = 8):
        self.max_tokens = max_tokens

    def explain_many(self, evidence: Sequence[ExplainEvidence]) -> list[str]:
        return [self.explain(e) for e in evidence]

    def explain(self, evidence: ExplainEvidence) -> str:
        tokens = self._tokens(evidence)
        if not tokens:
            return "Fires on nothing seen in the evidence."
        text = "Fires on " + ", ".join(prompts.quote(t) for t in tokens)
        contexts = [_short_context(s) for s in evidence.sequences()[:N_CONTEXTS]]
        if contexts:
            text += " (as in: " + "; ".join(f"“{c}”" for c in contexts) + ")"
        return text + "."

    def _tokens(self, evidence: ExplainEvidence) -> list[str]:
        chosen, seen, covered = [], set(), 0.0
        for token, share in evidence.top_tokens:
            if covered >= TOKEN_MASS_COVERED or len(chosen) >= self.max_tokens:
                break
            if _norm(token) not in seen:
                chosen.append(token)
                seen.add(_norm(token))
            covered += share
        return chosen


def _short_context(seq: TokenSequence) -> str:
    """A few tokens either side of the peak, marked, with no straight double quotes."""
    peak = max(range(len(seq.activations)), key=lambda i: seq.activations[i], default=0)
    lo, hi = max(0, peak - CONTEXT_RADIUS), peak + CONTEXT_RADIUS + 1
    part = TokenSequence(
        seq.tokens[lo:hi], seq.token_ids[lo:hi], seq.activations[lo:hi], seq.source
    )
    return part.render().strip().replace('"', "'")


_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"')


def explanation_tokens(explanation: str) -> set[str]:
    """The JSON-quoted tokens of an explanation (normalised); its words when nothing is quoted."""
    found = set()
    for body in _QUOTED.findall(explanation):
        try:
            found.add(_norm(json.loads(f'"{body}"')))
        except json.JSONDecodeError:
            found.add(_norm(body))
    if not found:
        found = {w.lower() for w in re.findall(r"\w+", explanation) if w.lower() not in _FILLER}
    return found


_FILLER = {
    "fires",
    "on",
    "the",
    "a",
    "an",
    "of",
    "in",
    "as",
    "and",
    "or",
    "tokens",
    "token",
    "like",
}


class TokenSimulator:
    """Scores with no language model: does the sequence (or its marks) hold the explanation's tokens?"""

    def predict(
        self, explanation: str, items: Sequence[ScoringItem], task: Task
    ) -> list[float | None]:
        wanted = explanation_tokens(explanation)
        out: list[float | None] = []
        for item in items:
            tokens = [_norm(t) for t in item.sequence.tokens]
            if task == "detection":
                out.append(float(any(t in wanted for t in tokens)))
            else:
                marked = [t for t, m in zip(tokens, item.marks or (), strict=True) if m]
                hits = sum(t in wanted for t in marked)
                out.append(float(bool(marked) and hits * 2 >= len(marked)))
        return out


@register_explainer("tokens")
def _tokens_backend(settings: SimpleNamespace, lm: Any, tokenizer: Any) -> Backend:
    return Backend("tokens", TokensExplainer(int(settings.n_top_tokens)), TokenSimulator())


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


def chat_backend(name: str, chat: ChatModel, settings: SimpleNamespace) -> Backend:
    return Backend(name, ChatExplainer(chat, settings.max_new_tokens), ChatScorer(chat))


@register_explainer("llm")
def _llm_backend(settings: SimpleNamespace, lm: Any, tokenizer: Any) -> Backend:
    if hasattr(lm, "complete_many"):  # already a chat model
        return chat_backend("llm", lm, settings)
    if lm is None or tokenizer is None:
        lm, tokenizer = load_chat_lm(settings.llm_name)
    return chat_backend("llm", HFChat(lm, tokenizer, batch_size=settings.batch_size), settings)


@register_explainer("openai")
def _openai_backend(settings: SimpleNamespace, lm: Any, tokenizer: Any) -> Backend:
    from saeinverse.explain.openai_client import OpenAIChat

    chat = OpenAIChat(
        settings.base_url,
        settings.api_model,
        settings.api_key_env,
        timeout_s=float(settings.request_timeout),
        max_retries=int(settings.max_retries),
        backoff_s=float(settings.retry_backoff),
    )
    return chat_backend("openai", chat, settings)
