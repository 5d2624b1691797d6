"""The words sent to a chat model: the explainer's prompt and the two scorers' yes/no questions.

Everything the explainer is shown comes from an ``ExplainEvidence``; the held-out sequences only
ever appear in the scorers' questions.
"""

from __future__ import annotations

import re

from saeinverse.explain.chat import Conversation
from saeinverse.explain.evidence import ExplainEvidence, TokenSequence
from saeinverse.explain.rules import quote

EXPLAIN_SYSTEM = (
    "You explain what one feature of a language model responds to. Texts are shown with the "
    "tokens where the feature is active marked «like this». Answer in one short sentence: "
    "which words or tokens, in which contexts."
)
EXPLAIN_PREFILL = "The feature fires on"
"""The start of the answer, written for the model when it can continue one (a local LM)."""
SCORE_SYSTEM = "You check explanations of a language model feature. Answer yes or no."
MAX_PROMPT_SEQUENCES = 12
"""Evidence sequences shown to the explainer at most (top exemplars first)."""


def explain_conversation(evidence: ExplainEvidence, prefill: bool = False) -> Conversation:
    """The explainer's conversation for one feature (only explaining evidence goes in).

    ``prefill`` ends it with the start of the answer (``EXPLAIN_PREFILL``) for the model to
    continue: small local models then describe the feature instead of the instructions.
    """
    lines = ["Texts where the feature is active (strongest first):"]
    shown = [*evidence.exemplars, *sorted(evidence.decile_samples, key=lambda s: -s.max_activation)]
    for i, seq in enumerate(shown[:MAX_PROMPT_SEQUENCES], 1):
        lines.append(f"{i}. {seq.render()}")
    if evidence.refined:
        lines.append("")
        lines.append("Inputs optimised to make the feature fire:")
        lines += [f"- {seq.render()}" for seq in evidence.refined]
    if evidence.top_tokens:
        tokens = ", ".join(f"{quote(t)} ({share:.0%})" for t, share in evidence.top_tokens)
        lines.append("")
        lines.append(f"Tokens carrying most of its activation: {tokens}")
    lines.append("")
    lines.append("What does the feature respond to? Answer in one sentence.")
    conversation = [
        {"role": "system", "content": EXPLAIN_SYSTEM},
        {"role": "user", "content": "\n".join(lines)},
    ]
    if prefill:
        conversation.append({"role": "assistant", "content": EXPLAIN_PREFILL})
    return conversation


def detection_conversation(explanation: str, sequence: TokenSequence) -> Conversation:
    """Does the explanation predict that the feature fires somewhere in this (unmarked) text?"""
    question = (
        f"Explanation of the feature: {explanation}\n"
        f"Text: {sequence.plain()}\n"
        "Does the feature fire in this text? Answer yes or no."
    )
    return [{"role": "system", "content": SCORE_SYSTEM}, {"role": "user", "content": question}]


def fuzzing_conversation(
    explanation: str, sequence: TokenSequence, marks: list[bool]
) -> Conversation:
    """Are the marked tokens the ones the explanation says the feature fires on?"""
    question = (
        f"Explanation of the feature: {explanation}\n"
        f"Text: {sequence.render(marks)}\n"
        "Are the tokens marked «like this» the ones where the feature fires? Answer yes or no."
    )
    return [{"role": "system", "content": SCORE_SYSTEM}, {"role": "user", "content": question}]


_YES_NO = re.compile(r"\b(yes|no)\b", re.IGNORECASE)


def parse_yes_no(reply: str) -> bool | None:
    """The first 'yes' / 'no' word in a reply, or None when there is neither."""
    match = _YES_NO.search(reply or "")
    return None if match is None else match.group(1).lower() == "yes"


def clean_explanation(reply: str, limit: int = 300) -> str:
    """The first sentence of a generated explanation's first non-empty line, unquoted, ≤ ``limit``."""
    for line in (reply or "").splitlines():
        line = line.strip().strip('"').strip()
        if line:
            match = re.match(r"(.+?[.!?])(\s|$)", line)
            return (match.group(1) if match else line)[:limit]
    return ""
