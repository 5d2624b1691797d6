"""What explainers and scorers need from a language model: a chat model.

A chat model is anything with ``complete_many(conversations, max_new_tokens) -> list[str]``,
where a conversation is a list of ``{"role": ..., "content": ...}`` messages. Two ship:
``llm.HFChat`` (a local Hugging Face causal LM) and ``openai_client.OpenAIChat`` (an
OpenAI-compatible endpoint).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

Conversation = list[dict[str, str]]


class ChatModel(Protocol):
    """What explainers and scorers need from a language model."""

    def complete_many(
        self, conversations: Sequence[Conversation], max_new_tokens: int
    ) -> list[str]: ...
