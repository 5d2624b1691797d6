"""A local Hugging Face causal LM as a chat model (the `llm` explainer and scorer).

A chat model (``saeinverse.explain.chat``) answers conversations; ``HFChat`` runs a causal LM with its own chat template, greedily
(deterministic), in left-padded batches. It also answers yes / no questions by reading its own
next-token distribution (``yes_probability_many``): P(yes) / (P(yes) + P(no)) over the yes / no
spellings that are single tokens. That needs one forward and no decoding, and a small model that
would reply with a sentence instead of a word still gives an answer.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch

from saeinverse.explain.chat import Conversation
from saeinverse.explain.prompts import parse_yes_no

logger = logging.getLogger(__name__)

T = TypeVar("T")
YES_SPELLINGS = ("yes", "Yes", " yes", " Yes", "YES")
NO_SPELLINGS = ("no", "No", " no", " No", "NO")
MIN_SHARED_PREFIX = 16
"""Below this many shared tokens the questions run whole (the cache copy would not pay)."""


class HFChat:
    """A local transformers causal LM, prompted through its chat template, greedy decoding."""

    supports_prefill = True
    """A conversation ending with an assistant message is continued from that message."""

    def __init__(self, lm, tokenizer, batch_size: int = 8):
        if lm is None or tokenizer is None:
            raise ValueError("HFChat needs both a causal LM and its tokenizer")
        self.lm, self.tokenizer, self.batch_size = lm, tokenizer, int(batch_size)
        self._yes = _single_token_ids(tokenizer, YES_SPELLINGS)
        self._no = _single_token_ids(tokenizer, NO_SPELLINGS)

    def prompt_ids(self, conversation: Conversation) -> list[int]:
        """Token ids of the conversation, ready for the reply (plain text without a template).

        When the last message is the assistant's, the reply continues it.
        """
        tok = self.tokenizer
        prefill = bool(conversation) and conversation[-1]["role"] == "assistant"
        if getattr(tok, "chat_template", None):
            text = tok.apply_chat_template(
                conversation,
                tokenize=False,
                add_generation_prompt=not prefill,
                continue_final_message=prefill,
            )
            return list(tok(text, add_special_tokens=False)["input_ids"])
        lines = [f"{m['role'].capitalize()}: {m['content']}" for m in conversation]
        text = "\n\n".join(lines) if prefill else "\n\n".join(lines) + "\n\nAssistant:"
        return list(tok(text)["input_ids"])

    def complete_many(
        self, conversations: Sequence[Conversation], max_new_tokens: int
    ) -> list[str]:
        """Each conversation's greedy reply (special tokens dropped, whitespace stripped)."""
        prompts = [self.prompt_ids(c) for c in conversations]
        return self._batched(prompts, lambda ids, mask: self._generate(ids, mask, max_new_tokens))

    def complete(self, conversation: Conversation, max_new_tokens: int) -> str:
        return self.complete_many([conversation], max_new_tokens)[0]

    def yes_probability_many(self, conversations: Sequence[Conversation]) -> list[float | None]:
        """P(yes) / (P(yes) + P(no)) for the reply's first token (a plain yes / no read from a
        short reply when the vocabulary has no single-token yes or no).

        Questions about one explanation share a long start (template, system prompt,
        explanation): it is run once and its key / value cache reused for every question.
        """
        if not self._yes or not self._no:
            answers = self.complete_many(conversations, 3)
            return [None if (a := parse_yes_no(r)) is None else float(a) for r in answers]
        prompts = [self.prompt_ids(c) for c in conversations]
        shared = _shared_prefix_length(prompts)
        if shared >= MIN_SHARED_PREFIX:
            return self._yes_after_prefix(prompts, shared)
        return self._batched(prompts, self._yes_probability)

    # ------------------------------------------------------------------ batches

    def _batched(self, prompts: list[list[int]], run: Callable[[Any, Any], list[T]]) -> list[T]:
        """Run ``run(ids, mask)`` on left-padded batches of similar length; results in input order."""
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        results: list[Any] = [None] * len(prompts)
        device = next(self.lm.parameters()).device
        for lo in range(0, len(order), self.batch_size):
            chunk = order[lo : lo + self.batch_size]
            ids, mask = _left_pad([prompts[i] for i in chunk], self._pad_id())
            with torch.inference_mode():
                out = run(ids.to(device), mask.to(device))
            for i, value in zip(chunk, out, strict=True):
                results[i] = value
        return results

    def _pad_id(self) -> int:
        tok = self.tokenizer
        for candidate in (tok.pad_token_id, tok.eos_token_id):
            if candidate is not None:
                return int(candidate)
        return 0

    def _generate(self, ids, mask, max_new_tokens: int) -> list[str]:
        out = self.lm.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=int(max_new_tokens),
            do_sample=False,
            pad_token_id=self._pad_id(),
            **_greedy(self.lm),
        )
        new = out[:, ids.shape[1] :].cpu()
        return [t.strip() for t in self.tokenizer.batch_decode(new, skip_special_tokens=True)]

    def _yes_probability(self, ids, mask) -> list[float]:
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        kwargs = dict(input_ids=ids, attention_mask=mask, position_ids=positions)
        return self._yes_share(self._logits_at(kwargs, torch.full((len(ids),), ids.shape[1] - 1)))

    def _yes_after_prefix(self, prompts: list[list[int]], shared: int) -> list[float]:
        """Yes-probabilities with the shared start run once, its cache copied into each batch."""
        import copy

        device = next(self.lm.parameters()).device
        with torch.inference_mode():
            start = torch.tensor([prompts[0][:shared]], device=device)
            out = self.lm(input_ids=start, use_cache=True)
        cache = getattr(out, "cache", None) or out.past_key_values  # renamed in transformers 5.2x
        cache_arg = (
            "cache"
            if "cache" in inspect.signature(self.lm.forward).parameters
            else "past_key_values"
        )
        rests = [p[shared:] for p in prompts]
        order = sorted(range(len(rests)), key=lambda i: len(rests[i]))
        results: list[float] = [0.0] * len(prompts)
        for lo in range(0, len(order), self.batch_size):
            chunk = order[lo : lo + self.batch_size]
            ids, mask = _right_pad([rests[i] for i in chunk], self._pad_id())
            batch_cache = copy.deepcopy(cache)
            batch_cache.batch_repeat_interleave(len(chunk))
            kwargs = dict(
                input_ids=ids.to(device),
                attention_mask=torch.cat(
                    [torch.ones(len(chunk), shared, dtype=mask.dtype), mask], 1
                ).to(device),
                position_ids=(shared + torch.arange(ids.shape[1]))
                .expand(len(chunk), -1)
                .to(device),
                **{cache_arg: batch_cache},
                use_cache=True,
            )
            with torch.inference_mode():
                values = self._yes_share(self._logits_at(kwargs, mask.sum(-1) - 1))
            for i, value in zip(chunk, values, strict=True):
                results[i] = value
        return results

    def _logits_at(self, kwargs: dict[str, Any], last: torch.Tensor) -> torch.Tensor:
        """Each row's logits at position ``last[row]``, computing the vocabulary head only there."""
        keep = torch.unique(last)
        rows = torch.arange(len(last))
        try:
            logits = self.lm(**kwargs, logits_to_keep=keep.to(kwargs["input_ids"].device)).logits
            return logits[rows, torch.searchsorted(keep, last).to(logits.device)]
        except TypeError:  # a model without logits_to_keep
            logits = self.lm(**kwargs).logits
            return logits[rows, last.to(logits.device)]

    def _yes_share(self, logits: torch.Tensor) -> list[float]:
        probs = logits.float().softmax(-1)
        yes, no = probs[:, self._yes].sum(-1), probs[:, self._no].sum(-1)
        return (yes / (yes + no).clamp(min=1e-30)).tolist()


def _shared_prefix_length(prompts: list[list[int]]) -> int:
    """Length of the start all prompts share, leaving each at least one token of its own."""
    if not prompts:
        return 0
    limit = min(len(p) for p in prompts) - 1
    first = prompts[0]
    for n in range(limit):
        if any(p[n] != first[n] for p in prompts[1:]):
            return n
    return max(limit, 0)


def _right_pad(prompts: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids and attention mask (under causal attention no real token sees a pad)."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, : len(prompt)] = torch.tensor(prompt, dtype=torch.long)
        mask[row, : len(prompt)] = 1
    return ids, mask


def _left_pad(prompts: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded ids and attention mask: every prompt ends at the last column."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
        mask[row, width - len(prompt) :] = 1
    return ids, mask


def _single_token_ids(tokenizer, spellings: Sequence[str]) -> list[int]:
    ids = set()
    for word in spellings:
        encoded = tokenizer.encode(word, add_special_tokens=False)
        if len(encoded) == 1:
            ids.add(int(encoded[0]))
    return sorted(ids)


def _greedy(lm) -> dict[str, Any]:
    """Unset the sampling knobs a generation config may carry (they only warn under greedy)."""
    config = getattr(lm, "generation_config", None)
    knobs = ("temperature", "top_p", "top_k")
    return {k: None for k in knobs if config is not None and getattr(config, k, None) is not None}


def load_chat_lm(llm_name: str, device: str = "cpu"):
    """``(lm, tokenizer)`` for ``explanation.llm_name``: the embedded SmolLM2 (any of its aliases,
    ``HuggingFaceTB/SmolLM2-135M-Instruct`` included: ``models.default.is_embedded``) or a
    Hugging Face name / local path."""
    from saeinverse.models.default import is_embedded

    if is_embedded(llm_name):
        from saeinverse.models.default import load_default_hf

        lm, tokenizer = load_default_hf()
    else:
        from saeinverse.models.from_config import load_hf_lm

        lm, tokenizer = load_hf_lm(llm_name)
    return lm.to(device).eval(), tokenizer
