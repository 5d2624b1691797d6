"""generate_explanations end to end: tokens, llm and openai backends, artifacts, inputs."""

from __future__ import annotations

import json
import re

import pytest

from saeinverse.errors import ArtifactError, ConfigError
from saeinverse.explain import (
    EXPLANATIONS_FILE,
    build_evidence,
    generate_explanations,
    load_explanations,
    register_explainer,
    save_explanations,
    summarize,
)
from saeinverse.explain.prompts import EXPLAIN_SYSTEM
from saeinverse.invert import Inversion, score_prompt
from tests.explain.conftest import completion
from tests.explain.planted import planted_model_and_sae, planted_stats

FAST = {
    "n_heldout": 10,
    "heldout_prompts": 0,
    "explain_prompts": 0,
    "judge": False,
    "fit_sentence": False,
}
"""Both sides from the run's prompts only, no embedding judge: fast, same code paths."""


@pytest.fixture(scope="module")
def planted():
    model, sae = planted_model_and_sae()
    return model, sae, planted_stats(model, sae)


class CapturingChat:
    """A chat model that records every conversation and answers 'Fires on x.' or 'yes'."""

    def __init__(self):
        self.conversations = []

    def complete_many(self, conversations, max_new_tokens):
        self.conversations += conversations
        return [
            "Fires on x." if c[0]["content"] == EXPLAIN_SYSTEM else "yes" for c in conversations
        ]

    def explainer_prompts(self):
        return [c[-1]["content"] for c in self.conversations if c[0]["content"] == EXPLAIN_SYSTEM]


def n_questions(result) -> int:
    """Questions a scorer answered for one feature: detection (positives, random and hard
    negatives) and fuzzing, for its explanation and for the baseline's."""
    scores = result.scores
    detection = scores["detection"]["n"] + scores["detection_hard"]["n_negative"]
    return 2 * (detection + scores["fuzzing"]["n"])


def refined_inversion(model, sae, feature: int, text: str, dataset_max: float) -> Inversion:
    ids = model.to_tokens(text, prepend_bos=False)[0].tolist()
    activation = score_prompt(model, sae, feature, ids, "max")
    return Inversion(feature, 0.0, [], "", 0.0, ids, text, activation, dataset_max, "max")


def test_tokens_explainer_end_to_end_scores_planted_features_above_the_baseline(planted, tmp_path):
    model, sae, stats = planted
    inversion = refined_inversion(model, sae, 0, "abxcd", float(stats.max_activation[0]))
    results = generate_explanations(
        model, sae, [0, 1, 2, 3], None, None, {**FAST, "explainer": "tokens"},
        stats=stats, inversions=[inversion], seed=0,
    )  # fmt: skip
    assert [r.feature_id for r in results] == [0, 1, 2, 3]
    first = results[0]
    assert first.rule.startswith('Fires on "x" (as in: “') and first.sentence.startswith(
        'Fires on "x"'
    )
    assert first.explanation == f"{first.sentence} Rule: {first.rule}"
    assert first.scored == {"detection": "rule", "detection_hard": "rule", "fuzzing": "rule"}
    for r in results:
        assert r.explainer == "tokens"
        assert r.detection == 1.0 and r.fuzzing == 1.0
        assert r.baseline_feature not in (None, r.feature_id)
        assert r.scores["detection"]["n"] == 20
        assert r.interval("detection") == (1.0, 1.0) and r.verdict in ("beats", "undecided")
    means = summarize(results)
    assert means["baseline_detection"] < 0.75 and means["baseline_fuzzing"] < 0.6
    check = results[0].inversion
    assert check["fires"] and check["ratio"] == pytest.approx(1.0, rel=1e-5)
    assert results[1].inversion is None
    path = save_explanations(tmp_path, results)
    assert path.name == EXPLANATIONS_FILE and len(path.read_text().splitlines()) == 4
    assert json.loads(path.read_text().splitlines()[0])["version"] == 3
    assert load_explanations(tmp_path) == results
    again = generate_explanations(model, sae, [0, 1, 2, 3], None, None, FAST, stats=stats)
    assert [r.explanation for r in again] == [r.explanation for r in results]


def test_heldout_evidence_never_reaches_the_explainer(tiny_model, tiny_sae, tiny_stats):
    chat = CapturingChat()
    fids = [5, 17, 40]
    settings = {**FAST, "explainer": "llm", "n_heldout": 6}
    results = generate_explanations(
        tiny_model, tiny_sae, fids, chat, None, settings, stats=tiny_stats, seed=3
    )
    assert [r.explanation for r in results] == ["Fires on x."] * 3
    shown = [re.sub("[«»]", "", p) for p in chat.explainer_prompts()]
    assert len(shown) == 3
    evidence = build_evidence(tiny_model, tiny_sae, fids, tiny_stats, settings, seed=3)
    for ev, prompt in zip(evidence, shown, strict=True):
        held = ev.heldout.positives + ev.heldout.negatives + ev.heldout.hard_negatives
        assert held
        for seq in held:  # no 10-character run of a held-out prompt appears
            text = tiny_stats.prompts[seq.prompt_index]
            assert not any(text[i : i + 10] in prompt for i in range(len(text) - 9))
        assert all(seq.plain() in prompt for seq in ev.explain.exemplars)  # the check can fail
    n_scoring = len(chat.conversations) - 3
    assert n_scoring == sum(map(n_questions, results))


def test_openai_explainer_and_scorer_over_http(fake_openai, planted, monkeypatch):
    model, sae, stats = planted
    monkeypatch.setenv("SAEINVERSE_TEST_KEY", "sk-test")

    def respond(body):  # an oracle: names the top token, then answers by the explanation's letter
        system, question = body["messages"][0]["content"], body["messages"][-1]["content"]
        if system == EXPLAIN_SYSTEM:
            top = question.split("Tokens carrying most of its activation: ")[1][1]
            return completion(f"Fires on the letter {top}.")
        letter = question.split("Fires on the letter ")[1][0]
        text = question.split("Text: ")[1].split("\n")[0]
        if "«" in text:
            marked = text.split("«")[1:]
            return completion("Yes" if all(m.startswith(letter) for m in marked) else "No")
        return completion("Yes" if letter in text else "No")

    fake_openai.respond = respond
    settings = {
        **FAST, "explainer": "openai", "base_url": fake_openai.url, "api_model": "fake-gpt",
        "api_key_env": "SAEINVERSE_TEST_KEY", "n_heldout": 4,
    }  # fmt: skip
    fake_openai.script = [(500, {}, b"warming up")]  # the first request fails once
    results = generate_explanations(model, sae, [0, 1], None, None, settings, stats=stats)
    assert [r.explanation for r in results] == ["Fires on the letter x.", "Fires on the letter q."]
    for r in results:
        assert r.detection == 1.0 and r.fuzzing == 1.0
        assert r.baseline_detection < 1.0 and r.baseline_fuzzing < 1.0
    bodies = fake_openai.bodies()
    assert all(b["model"] == "fake-gpt" for b in bodies)
    assert all(r["headers"]["Authorization"] == "Bearer sk-test" for r in fake_openai.requests)
    n_items = sum(map(n_questions, results))
    assert len(bodies) == 1 + 2 + n_items  # the failed try, two explanations, the questions


def tiny_hf_chat_lm():
    """A random 2-layer Llama over the char tokenizer, with a simple chat template."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from tests import builders

    tokenizer = builders.char_tokenizer()
    tokenizer.chat_template = (
        "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}<assistant>{% endif %}"
    )
    config = LlamaConfig(
        vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
        bos_token_id=0, eos_token_id=0, pad_token_id=1,
    )  # fmt: skip
    torch.manual_seed(0)
    return LlamaForCausalLM(config).eval(), tokenizer


def test_llm_explainer_runs_a_local_hf_model(planted):
    from saeinverse.explain.llm import HFChat

    model, sae, stats = planted
    lm, tokenizer = tiny_hf_chat_lm()
    chat = HFChat(lm, tokenizer, batch_size=3)
    conversations = [[{"role": "user", "content": "a" * n}] for n in (1, 7, 3, 12)]
    batched = chat.complete_many(conversations, max_new_tokens=5)
    assert batched == [chat.complete(c, 5) for c in conversations]  # left padding changes nothing
    assert tokenizer.decode(chat.prompt_ids(conversations[0])).endswith("<assistant>")
    started = [*conversations[0], {"role": "assistant", "content": "The feature fires on"}]
    assert tokenizer.decode(chat.prompt_ids(started)).endswith("<assistant>The feature fires on")
    chat._yes, chat._no = (
        [tokenizer.convert_tokens_to_ids("y")],
        [tokenizer.convert_tokens_to_ids("n")],
    )
    probabilities = chat.yes_probability_many(conversations)
    single = [chat.yes_probability_many([c])[0] for c in conversations]
    assert probabilities == pytest.approx(single, abs=1e-5) and 0 < min(probabilities) < 1
    system = {"role": "system", "content": "A long shared start: " * 4}  # the cached prefix path
    questions = [[system, {"role": "user", "content": "b" * n}] for n in (1, 9, 4)]
    cached = chat.yes_probability_many(questions)
    whole = [chat._batched([chat.prompt_ids(q)], chat._yes_probability)[0] for q in questions]
    assert cached == pytest.approx(whole, abs=1e-5)
    settings = {**FAST, "explainer": "llm", "n_heldout": 3, "max_new_tokens": 6}
    results = generate_explanations(model, sae, [0, 1], lm, tokenizer, settings, stats=stats)
    for r in results:
        assert r.explainer == "llm" and r.explanation.startswith("The feature fires on")
        assert r.detection is None or 0.0 <= r.detection <= 1.0


def test_feature_results_may_be_ids_a_selection_or_inversions(planted):
    from types import SimpleNamespace

    model, sae, stats = planted
    inversion = refined_inversion(model, sae, 2, "zz", 1.0)
    off = {**FAST, "score": False}
    by_ids = generate_explanations(model, sae, [2], stats=stats, explanation_cfg=off)
    by_selection = generate_explanations(
        model, sae, SimpleNamespace(feature_ids=[2]), stats=stats, explanation_cfg=off
    )
    by_inversions = generate_explanations(
        model, sae, [inversion], stats=stats, explanation_cfg=FAST
    )
    assert by_ids[0].explanation == by_selection[0].explanation == by_inversions[0].explanation
    assert by_ids[0].detection is None and by_inversions[0].detection == 1.0
    assert by_inversions[0].inversion["fires"]
    no_stats = generate_explanations(model, sae, [inversion])
    assert no_stats[0].explanation.startswith('Fires on "z"') and no_stats[0].detection is None
    assert generate_explanations(model, sae, []) == []


def test_unknown_explainer_and_duplicate_registration_are_errors(planted):
    model, sae, stats = planted
    with pytest.raises(ConfigError, match="explanation.explainer.*'gpt'"):
        generate_explanations(model, sae, [0], explanation_cfg={"explainer": "gpt"}, stats=stats)
    with pytest.raises(ValueError, match="already registered"):
        register_explainer("tokens")(lambda settings, lm, tokenizer: None)


def test_config_section_or_the_whole_config_is_accepted(planted):
    from saeinverse.config import get_default_config, update_config

    model, sae, stats = planted
    config = update_config(get_default_config(), {"explanation": FAST})
    for given in (config, config.explanation):
        results = generate_explanations(model, sae, [0], None, None, given, stats=stats)
        assert results[0].explainer == "context" and results[0].detection == 1.0
        assert results[0].scores["detection"]["n"] == 20


def test_corrupt_artifacts_are_named(tmp_path):
    with pytest.raises(ArtifactError, match="does not exist"):
        load_explanations(tmp_path)
    (tmp_path / EXPLANATIONS_FILE).write_text('{"feature_id": 1}\n{oops\n')
    with pytest.raises(ArtifactError, match="line 1 is malformed"):
        load_explanations(tmp_path)


def test_bad_settings_fail_before_any_work(planted):
    model, sae, stats = planted
    with pytest.raises(ConfigError, match="explanation.n_heldout must be ≥ 1, got 0"):
        generate_explanations(model, sae, [0], explanation_cfg={"n_heldout": 0}, stats=stats)
    with pytest.raises(ConfigError, match="n_heldot"):
        generate_explanations(model, sae, [0], explanation_cfg={"n_heldot": 3}, stats=stats)


def test_a_separate_scorer_checks_another_backends_explanations(planted):
    model, sae, stats = planted
    settings = {**FAST, "explainer": "llm", "scorer": "tokens", "n_heldout": 5}
    (result,) = generate_explanations(model, sae, [0], CapturingChat(), None, settings, stats=stats)
    assert (result.explainer, result.scorer) == ("llm", "tokens")
    assert result.explanation == "Fires on x." and result.detection == 1.0
    with pytest.raises(ConfigError, match="explanation.scorer expects one of .*got 'judge'"):
        generate_explanations(model, sae, [0], explanation_cfg={"scorer": "judge"}, stats=stats)


def test_every_alias_of_the_embedded_model_loads_the_embedded_model(monkeypatch):
    from saeinverse.explain import llm
    from saeinverse.models import default

    class Stub:
        def to(self, device):
            return self

        def eval(self):
            return self

    loaded = []
    monkeypatch.setattr(default, "load_default_hf", lambda: loaded.append(1) or (Stub(), "tok"))
    for name in ("smollm2-135m", "SmolLM2-135M-Instruct", "HuggingFaceTB/SmolLM2-135M-Instruct"):
        lm, tokenizer = llm.load_chat_lm(name)
        assert isinstance(lm, Stub) and tokenizer == "tok"
    assert len(loaded) == 3  # never a hub download
