"""Streaming collection equals the same statistics computed densely on the tiny model."""

from __future__ import annotations

import logging
import math

import pytest
import torch

from saeinverse.collect.activations import collect_activations, hook_activations, tokenize_prompts
from saeinverse.collect.stats import FeatureIdError, FeatureStats, log_histogram_edges
from saeinverse.config import get_default_config, update_config
from saeinverse.errors import ArtifactError, DataError

PROMPTS = [
    "The cat sat on the mat.",
    "def f(x):\n    return x * 2",
    "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15",
    "Hi",
    "Paris is the capital of France, and Rome is the capital of Italy.",
    "The cat sat on the mat.",  # a duplicate: exemplar ties must break by prompt index
    "E = mc^2",
]


def data_cfg(**overrides):
    return update_config(get_default_config(), {"data": overrides}).data


def dense_reference(model, sae, prompts, cfg):
    """Every statistic from the full [tokens × d_sae] matrix, one prompt per forward."""
    first = 1 if cfg.exclude_bos else 0
    rows, tokens, prompt_of, position_of = [], [], [], []
    for i, prompt in enumerate(prompts):
        ids = model.to_tokens(prompt)[:, : cfg.max_length]
        with torch.inference_mode():
            acts = sae.encode(hook_activations(model, ids, sae.cfg.metadata.hook_name))[0]
        rows.append(acts[first:])
        tokens.append(ids[0, first:])
        prompt_of += [i] * (ids.shape[1] - first)
        position_of += list(range(first, ids.shape[1]))
    acts = torch.cat(rows).double()  # [tokens, d_sae]
    tokens = torch.cat(tokens)
    prompt_of, position_of = torch.tensor(prompt_of), torch.tensor(position_of)
    fires = acts > 0
    mass = acts.clamp(min=0)
    total = mass.sum(0)
    ref = {
        "n_tokens": acts.shape[0],
        "density": fires.double().mean(0),
        "activation_sum": total,
        "max_activation": mass.max(0).values,
        "mean_activation": total / fires.sum(0).clamp(min=1),
    }
    edges = log_histogram_edges(cfg.histogram_bins)
    bins = (acts[..., None] >= edges).sum(-1)  # 0: underflow .. bins+1: overflow
    ref["histogram"] = torch.stack(
        [
            torch.bincount(bins[fires[:, f], f], minlength=len(edges) + 1)
            for f in range(acts.shape[1])
        ]
    )

    def entropy(masses, n):
        p = masses / masses.sum(0).clamp(min=1e-300)
        h = -(p * p.clamp(min=1e-300).log()).sum(0)
        return torch.where(masses.sum(0) > 0, h / math.log(n), torch.zeros_like(h))

    per_prompt_mass = torch.zeros(len(prompts), acts.shape[1], dtype=torch.float64)
    per_prompt_mass.index_add_(0, prompt_of, mass)
    ref["prompt_entropy"] = entropy(per_prompt_mass, len(prompts))
    per_token_mass = torch.zeros(model.cfg.d_vocab, acts.shape[1], dtype=torch.float64)
    per_token_mass.index_add_(0, tokens, mass)
    ref["token_entropy"] = entropy(per_token_mass, model.cfg.d_vocab)
    window = cfg.filtering.positional_window
    early = position_of < first + window
    ref["positional_share"] = mass[early].sum(0) / total.clamp(min=1e-300)
    ref["prompt_max"] = torch.zeros(len(prompts), acts.shape[1], dtype=torch.float64)
    ref["prompt_max"].scatter_reduce_(0, prompt_of[:, None].expand_as(mass), mass, "amax")
    ref["exemplars"] = []
    for f in range(acts.shape[1]):
        hits = sorted(
            (-float(acts[t, f]), int(prompt_of[t]), int(position_of[t]))
            for t in fires[:, f].nonzero().squeeze(1).tolist()
        )
        ref["exemplars"].append([(p, pos, -neg) for neg, p, pos in hits[: cfg.top_k_exemplars]])
    ref["token_mass"] = per_token_mass
    return ref


def assert_matches_reference(stats: FeatureStats, ref, d_sae):
    assert stats.n_tokens == ref["n_tokens"]
    for name in (
        "density",
        "activation_sum",
        "max_activation",
        "mean_activation",
        "prompt_entropy",
        "token_entropy",
        "positional_share",
    ):
        torch.testing.assert_close(
            getattr(stats, name).double(), ref[name], rtol=1e-5, atol=1e-6, msg=name
        )
    assert torch.equal(stats.histogram, ref["histogram"])
    torch.testing.assert_close(stats.prompt_feature_dense().double(), ref["prompt_max"])
    for f in range(d_sae):
        got = [(e.prompt_index, e.position, e.activation) for e in stats.top_exemplars(f)]
        assert [g[:2] for g in got] == [r[:2] for r in ref["exemplars"][f]], f
        torch.testing.assert_close(
            torch.tensor([g[2] for g in got]), torch.tensor([r[2] for r in ref["exemplars"][f]])
        )


@pytest.mark.parametrize("sae_name", ["tiny_sae", "tiny_topk_sae"])
def test_streaming_equals_dense(request, tiny_model, sae_name):
    sae = request.getfixturevalue(sae_name)
    cfg = data_cfg(batch_size=1, max_length=24, top_k_exemplars=5, context_window=3)
    stats = collect_activations(tiny_model, sae, PROMPTS, cfg, progress=False)
    ref = dense_reference(tiny_model, sae, PROMPTS, cfg)
    assert_matches_reference(stats, ref, sae.cfg.d_sae)
    assert stats.n_prompts == len(PROMPTS) and stats.prompts == PROMPTS
    # top tokens: shares of the feature's mass, largest first, matching the dense token mass
    f = int(stats.firing_count.argmax())
    tokens = stats.top_tokens(f, 3)
    expected = ref["token_mass"][:, f].topk(3)
    assert [t[0] for t in tokens] == expected.indices.tolist()
    shares = torch.tensor([t[2] for t in tokens], dtype=torch.float64)
    torch.testing.assert_close(shares, expected.values / ref["activation_sum"][f])


def test_batching_and_padding_do_not_change_statistics(tiny_model, tiny_sae):
    one = collect_activations(tiny_model, tiny_sae, PROMPTS, data_cfg(batch_size=1), progress=False)
    many = collect_activations(
        tiny_model, tiny_sae, PROMPTS, data_cfg(batch_size=4), progress=False
    )
    assert many.n_tokens == one.n_tokens
    assert torch.equal(many.firing_count, one.firing_count)
    torch.testing.assert_close(many.activation_sum, one.activation_sum, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(many.prompt_feature_dense(), one.prompt_feature_dense())


def test_position_zero_excluded_by_default_and_included_when_asked(tiny_model, tiny_sae):
    assert get_default_config().data.exclude_bos is True
    cfg_in = data_cfg(exclude_bos=False, batch_size=1, top_k_exemplars=5)
    excluded = collect_activations(tiny_model, tiny_sae, PROMPTS, data_cfg(), progress=False)
    included = collect_activations(tiny_model, tiny_sae, PROMPTS, cfg_in, progress=False)
    lengths = [tiny_model.to_tokens(p).shape[1] for p in PROMPTS]
    assert excluded.n_tokens == sum(lengths) - len(PROMPTS)
    assert included.n_tokens == sum(lengths)
    assert int((excluded.exemplar_position[excluded.exemplar_prompt >= 0] == 0).sum()) == 0
    # the start token is the same in every prompt: features firing on it gain one hit per prompt
    with torch.inference_mode():
        bos = tiny_model.to_tokens([""])  # just the start token
        at_zero = tiny_sae.encode(hook_activations(tiny_model, bos, "blocks.0.hook_resid_post"))
    fires_at_zero = (at_zero[0, 0] > 0).long() * len(PROMPTS)
    assert torch.equal(included.firing_count - excluded.firing_count, fires_at_zero)
    assert bool((fires_at_zero > 0).any())
    assert_matches_reference(
        included, dense_reference(tiny_model, tiny_sae, PROMPTS, cfg_in), tiny_sae.cfg.d_sae
    )


def test_merge_equals_one_pass(tiny_model, tiny_topk_sae):
    cfg = data_cfg(batch_size=1, top_k_exemplars=4)
    whole = collect_activations(tiny_model, tiny_topk_sae, PROMPTS, cfg, progress=False)
    head = collect_activations(tiny_model, tiny_topk_sae, PROMPTS[:3], cfg, progress=False)
    tail = collect_activations(tiny_model, tiny_topk_sae, PROMPTS[3:], cfg, progress=False)
    merged = head.merge(tail)
    assert tiny_topk_sae.activation_fn.use_sparse_activations is False  # restored after encode
    assert merged.prompts == whole.prompts and merged.n_tokens == whole.n_tokens
    for name in (
        "firing_count",
        "max_activation",
        "histogram",
        "tokens",
        "lengths",
        "token_mass_keys",
        "exemplar_activation",
        "exemplar_prompt",
        "exemplar_position",
    ):
        assert torch.equal(getattr(merged, name), getattr(whole, name)), name
    for name in ("activation_sum", "prompt_entropy", "token_entropy", "positional_share"):
        torch.testing.assert_close(getattr(merged, name), getattr(whole, name), rtol=1e-12, atol=0)
    assert torch.equal(merged.prompt_feature_dense(), whole.prompt_feature_dense())


def test_collection_stops_at_the_sae_layer(tiny_model, tiny_sae, monkeypatch):
    calls = []
    original = tiny_model.run_with_hooks

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return original(*args, **kwargs)

    monkeypatch.setattr(tiny_model, "run_with_hooks", spy)
    collect_activations(tiny_model, tiny_sae, PROMPTS[:2], data_cfg(), progress=False)
    assert calls and all(c["stop_at_layer"] == 1 for c in calls)
    assert all(c["fwd_hooks"][-1][0] == "blocks.0.hook_resid_post" for c in calls)


def test_exemplar_context_and_save_load(tiny_model, tiny_sae, tmp_path):
    cfg = data_cfg(context_window=2, max_length=12)
    stats = collect_activations(tiny_model, tiny_sae, PROMPTS, cfg, progress=False)
    f = int(stats.firing_count.argmax())
    top = stats.top_exemplars(f)[0]
    row = tiny_model.to_tokens(PROMPTS[top.prompt_index])[0, :12]
    assert top.context_ids == row[max(0, top.position - 2) : top.position + 3].tolist()
    assert top.context_tokens[top.target_index] == tiny_model.to_string(row[top.position])
    assert int(stats.tokens.shape[1]) <= 12

    stats.save(tmp_path / "stats")
    loaded = FeatureStats.load(tmp_path / "stats")
    assert loaded.prompts == stats.prompts and loaded.token_strings == stats.token_strings
    assert torch.equal(loaded.histogram, stats.histogram)
    assert loaded.top_exemplars(f) == stats.top_exemplars(f)
    (tmp_path / "stats" / "feature_stats.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ArtifactError, match="feature_stats.safetensors"):
        FeatureStats.load(tmp_path / "stats")
    with pytest.raises(ArtifactError, match="does not exist"):
        FeatureStats.load(tmp_path / "missing")


def test_feature_id_out_of_range(tiny_model, tiny_sae):
    stats = collect_activations(tiny_model, tiny_sae, PROMPTS[:2], data_cfg(), progress=False)
    with pytest.raises(FeatureIdError, match=r"valid ids are 0\.\.63"):
        stats.top_exemplars(64)
    with pytest.raises(FeatureIdError, match=r"0\.\.63"):
        stats.top_tokens(-1)


def test_short_prompts_dropped_or_rejected(tiny_model, tiny_sae, caplog):
    with caplog.at_level(logging.WARNING):
        stats = collect_activations(
            tiny_model, tiny_sae, ["", "ok then", ""], data_cfg(), progress=False
        )
    assert stats.prompts == ["ok then"]
    assert "dropped 2 of 3 prompts" in caplog.text
    with pytest.raises(DataError, match="after the start token"):
        tokenize_prompts(tiny_model, ["", ""], max_length=8)


def test_hook_z_sae_with_or_without_its_own_reshaping(tiny_model):
    from tests.builders import tiny_sae

    plain = tiny_sae(hook_name="blocks.0.attn.hook_z")
    reshaping = tiny_sae(hook_name="blocks.0.attn.hook_z")
    reshaping.turn_on_forward_pass_hook_z_reshaping()
    a = collect_activations(tiny_model, plain, PROMPTS[:3], data_cfg(), progress=False)
    b = collect_activations(tiny_model, reshaping, PROMPTS[:3], data_cfg(), progress=False)
    assert int(a.firing_count.sum()) > 0
    assert torch.equal(a.firing_count, b.firing_count)
    torch.testing.assert_close(a.activation_sum, b.activation_sum)


def _silenced(sae, rows: slice | None = None):
    """A copy of `sae` whose features in `rows` (all: None) can never fire (encoder bias -1e4)."""
    import copy

    silent = copy.deepcopy(sae)
    with torch.no_grad():
        silent.b_enc[rows if rows is not None else slice(None)] = -1e4
    return silent


@pytest.mark.parametrize("sae_name", ["tiny_sae", "tiny_topk_sae"])
def test_a_dead_sae_collects_all_zero_statistics(request, tiny_model, sae_name, tmp_path):
    """A batch where no feature fires is collected (index_add_ of nothing)."""
    dead = _silenced(request.getfixturevalue(sae_name))
    cfg = data_cfg(batch_size=2)
    stats = collect_activations(tiny_model, dead, PROMPTS, cfg, progress=False)
    lengths = [min(tiny_model.to_tokens(p).shape[1], cfg.max_length) for p in PROMPTS]
    assert stats.n_tokens == sum(lengths) - len(PROMPTS)
    assert int(stats.firing_count.sum()) == 0 and float(stats.max_activation.max()) == 0.0
    assert stats.prompt_entropy.dtype == torch.float64
    assert float(stats.prompt_entropy.abs().sum()) == 0.0
    assert float(stats.token_entropy.abs().sum()) == 0.0
    assert stats.top_exemplars(0) == [] and stats.prompt_feature_index.shape == (2, 0)
    stats.save(tmp_path / "dead")
    assert int(FeatureStats.load(tmp_path / "dead").firing_count.sum()) == 0


def test_silent_batches_among_firing_ones_match_the_dense_reference(tiny_model, tiny_sae):
    """Half the features dead and one prompt per batch: some batches have no firing entry."""
    sae = _silenced(tiny_sae, slice(0, 32))
    prompts = [*PROMPTS, "!", "?"]
    cfg = data_cfg(batch_size=1, max_length=24, top_k_exemplars=5, context_window=3)
    stats = collect_activations(tiny_model, sae, prompts, cfg, progress=False)
    assert int(stats.firing_count[:32].sum()) == 0 and int(stats.firing_count[32:].sum()) > 0
    assert_matches_reference(stats, dense_reference(tiny_model, sae, prompts, cfg), 64)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_sae_weights_fail_with_one_clear_line(tiny_model, tiny_sae, bad):
    """A NaN / inf SAE is an error naming the features, never a silently all-dead result."""
    import copy

    from saeinverse.collect.accumulator import NonFiniteActivationError
    from saeinverse.errors import SaeInverseError

    broken = copy.deepcopy(tiny_sae)
    with torch.no_grad():
        broken.W_enc[:, 7] = bad
        broken.b_enc[7] = bad
    with pytest.raises(NonFiniteActivationError) as info:
        collect_activations(tiny_model, broken, PROMPTS[:3], data_cfg(), progress=False)
    message = str(info.value)
    assert isinstance(info.value, SaeInverseError) and "\n" not in message
    assert "1 feature(s) (ids 7)" in message and "prompt(s) 0, 1, 2" in message
