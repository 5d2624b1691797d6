"""The embedded SmolLM2-135M-Instruct as a chat model (slow: loads the real weights)."""

from __future__ import annotations

import pytest

from saeinverse.explain.llm import HFChat, load_chat_lm
from saeinverse.explain.prompts import parse_yes_no

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm2_chat():
    lm, tokenizer = load_chat_lm("smollm2-135m")
    return HFChat(lm, tokenizer, batch_size=4)


def test_default_explanation_lm_answers_through_its_chat_template(smollm2_chat):
    question = [{"role": "user", "content": "What is the capital of France?"}]
    filler = [{"role": "user", "content": "Write a very long story about a dragon and a knight."}]
    single = smollm2_chat.complete(question, max_new_tokens=12)
    assert "Paris" in single
    assert smollm2_chat.complete_many([filler, question], max_new_tokens=12)[1] == single


def test_default_explanation_lm_gives_readable_yes_no_answers(smollm2_chat):
    questions = [
        [{"role": "user", "content": f"Is {q}? Answer yes or no."}]
        for q in ("Paris in France", "the sun cold", "water wet")
    ]
    answers = [parse_yes_no(a) for a in smollm2_chat.complete_many(questions, max_new_tokens=3)]
    assert all(a is not None for a in answers)
    probabilities = smollm2_chat.yes_probability_many(questions)
    single = [smollm2_chat.yes_probability_many([q])[0] for q in questions]
    assert probabilities == pytest.approx(single, abs=1e-4)  # left padding changes nothing
    assert all(0.0 < p < 1.0 for p in probabilities)
    whole = [
        smollm2_chat._batched([smollm2_chat.prompt_ids(q)], smollm2_chat._yes_probability)[0]
        for q in questions
    ]
    assert probabilities == pytest.approx(
        whole, abs=1e-4
    )  # the shared start, cached, changes nothing
