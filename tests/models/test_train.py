"""Training an SAE with SAELens's runner, saving it, and measuring it on held-out text."""

from __future__ import annotations

import json
import math
import random

import pytest
import torch
from sae_lens import SAE, TopKSAE
from transformer_lens import HookedTransformer

from saeinverse.errors import CompatibilityError, ConfigError
from saeinverse.models.evaluate import (
    QUALITY_FILENAME,
    evaluate_sae,
    hook_activations,
    tokenize_for_eval,
)
from saeinverse.models.train import train_sae
from tests import builders

HOOK = "blocks.0.hook_resid_post"
D_MODEL = 32
WORDS = (
    "the cat sat on a mat while dogs ran fast over green hills and birds sang old songs "
    "in the quiet morning light near rivers full of silver fish"
).split()


@pytest.fixture(scope="module")
def texts() -> list[str]:
    rng = random.Random(0)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 30))) for _ in range(240)]


def _topk_sae(d_sae: int, k: int) -> TopKSAE:
    return builders.tiny_sae(hook_name=HOOK, d_in=D_MODEL, d_sae=d_sae, k=k)


def _identity_sae() -> TopKSAE:
    """Features relu(x) and relu(-x), decoded as relu(x) - relu(-x): x exactly."""
    sae = _topk_sae(2 * D_MODEL, D_MODEL)
    sae.cfg.apply_b_dec_to_input = False
    eye = torch.eye(D_MODEL)
    with torch.no_grad():
        sae.W_enc.copy_(torch.cat([eye, -eye], dim=1))
        sae.W_dec.copy_(torch.cat([eye, -eye], dim=0))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    return sae


def _zero_sae() -> TopKSAE:
    sae = _topk_sae(16, 4)
    with torch.no_grad():
        for param in sae.parameters():
            param.zero_()
    return sae


def _eval_tokens(model: HookedTransformer, texts: list[str], context_size: int) -> torch.Tensor:
    """The activations evaluate_sae sees: real tokens at positions >= 1."""
    tokens, mask = tokenize_for_eval(model, texts, context_size)
    with torch.inference_mode():
        return hook_activations(model, tokens, HOOK)[mask]


def test_tokenize_for_eval_masks_padding_and_position_0(tiny_model: HookedTransformer) -> None:
    tokens, mask = tokenize_for_eval(tiny_model, ["abcdef", "ab", "a" * 100], context_size=8)

    assert tokens.shape == (3, 8)
    assert (tokens[:, 0] == 0).all()  # the start token
    assert mask.sum(1).tolist() == [6, 2, 7]  # text tokens, cut at context_size - 1


def test_identity_sae_explains_everything(tiny_model: HookedTransformer, texts: list[str]) -> None:
    quality = evaluate_sae(tiny_model, _identity_sae(), texts[:12], hook_name=HOOK, context_size=24)

    assert quality.explained_variance == 1.0
    assert quality.mse == 0.0
    assert quality.ce_loss_sae == quality.ce_loss_clean
    assert quality.ce_recovered == 1.0
    assert quality.l0 == pytest.approx(D_MODEL, abs=0.01)  # one of relu(x_i), relu(-x_i) fires
    assert quality.dead_fraction == 0.0
    expected_tokens = sum(min(len(text), 23) for text in texts[:12])
    assert quality.n_tokens == expected_tokens
    # ce_sequences=8 texts; each text's last token predicts nothing
    assert quality.n_ce_tokens == sum(min(len(text), 23) - 1 for text in texts[:8])


def test_zero_sae_recovers_nothing(tiny_model: HookedTransformer, texts: list[str]) -> None:
    quality = evaluate_sae(tiny_model, _zero_sae(), texts[:12], hook_name=HOOK, context_size=24)

    acts = _eval_tokens(tiny_model, texts[:12], context_size=24).double()
    centred = acts - acts.mean(0)
    expected_ev = 1 - float((acts**2).sum() / (centred**2).sum())
    assert quality.explained_variance == pytest.approx(expected_ev, rel=1e-6)
    assert quality.ce_loss_sae == pytest.approx(quality.ce_loss_zero, abs=1e-6)
    assert quality.ce_recovered == pytest.approx(0.0, abs=1e-6)
    assert quality.ce_loss_zero > quality.ce_loss_clean
    assert quality.l0 == 0.0
    assert quality.dead_fraction == 1.0


def test_mean_sae_explains_no_variance(tiny_model: HookedTransformer, texts: list[str]) -> None:
    sae = _zero_sae()
    acts = _eval_tokens(tiny_model, texts[:12], context_size=24)
    with torch.no_grad():
        sae.b_dec.copy_(acts.double().mean(0).float())

    quality = evaluate_sae(tiny_model, sae, texts[:12], hook_name=HOOK, context_size=24)

    assert quality.explained_variance == pytest.approx(0.0, abs=1e-5)


def test_train_sae_learns_saves_and_reloads(tiny_model, texts, tmp_path) -> None:
    out_dir = tmp_path / "saes" / "tiny"
    heldout = texts[200:]
    fresh = evaluate_sae(tiny_model, _topk_sae(128, 8), heldout, hook_name=HOOK, context_size=32)

    sae, quality = train_sae(
        tiny_model,
        texts[:200],
        heldout,
        hook_name=HOOK,
        d_sae=128,
        k=8,
        training_tokens=6144,
        context_size=32,
        batch_size_tokens=256,
        lr=3e-3,
        out_dir=out_dir,
        progress=False,
    )

    assert isinstance(sae, TopKSAE)
    assert quality.mse < fresh.mse / 2
    assert fresh.explained_variance < 0.0
    # b_dec starts at the mean activation (explained variance ~0): the rest was learned
    assert quality.explained_variance > 0.3
    assert quality.l0 == pytest.approx(8.0)
    assert 0.0 <= quality.dead_fraction < 1.0
    assert {p.name for p in tmp_path.joinpath("saes").iterdir()} == {"tiny"}  # no temp left
    saved = json.loads((out_dir / QUALITY_FILENAME).read_text())
    assert saved["quality"] == quality.to_dict()
    assert saved["training"]["training_tokens"] == 6144
    assert saved["training"]["k"] == 8 and saved["training"]["seconds"] > 0

    loaded = SAE.load_from_disk(out_dir)
    assert isinstance(loaded, TopKSAE)
    assert loaded.cfg.k == 8
    assert loaded.cfg.metadata.hook_name == HOOK
    assert loaded.cfg.metadata.prepend_bos is True
    acts = _eval_tokens(tiny_model, heldout[:4], context_size=32)
    with torch.inference_mode():
        torch.testing.assert_close(loaded.encode(acts), sae.encode(acts), rtol=0, atol=0)


def test_train_sae_replaces_an_existing_folder_and_is_seeded(tiny_model, texts, tmp_path) -> None:
    out_dir = tmp_path / "sae"
    out_dir.mkdir()
    (out_dir / "stale.txt").write_text("old")
    kwargs = dict(hook_name=HOOK, d_sae=32, k=4, training_tokens=512, context_size=16)
    kwargs |= dict(batch_size_tokens=128, progress=False, seed=3)

    first, q1 = train_sae(tiny_model, texts[:40], texts[200:210], out_dir=out_dir, **kwargs)
    second, q2 = train_sae(
        tiny_model, texts[:40], texts[200:210], out_dir=tmp_path / "again", **kwargs
    )

    assert not (out_dir / "stale.txt").exists()
    assert (out_dir / "cfg.json").exists()
    torch.testing.assert_close(first.W_dec, second.W_dec, rtol=0, atol=0)
    assert q1.explained_variance == q2.explained_variance


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"hook_name": "blocks.9.hook_resid_post"}, CompatibilityError),
        ({"k": 0}, ConfigError),
        ({"context_size": 1000}, ConfigError),
    ],
)
def test_train_sae_rejects_bad_inputs(tiny_model, texts, tmp_path, change, error) -> None:
    kwargs = dict(hook_name=HOOK, d_sae=32, k=4, training_tokens=512, out_dir=tmp_path / "s")
    with pytest.raises(error):
        train_sae(tiny_model, texts[:10], texts[10:12], **(kwargs | change))
    assert not any(tmp_path.iterdir())


def test_ce_recovered_is_nan_without_a_loss_gap() -> None:
    from saeinverse.models.evaluate import _recovered

    assert math.isnan(_recovered(1.0, 1.5, 1.0))
    assert _recovered(1.0, 2.0, 3.0) == 0.5
