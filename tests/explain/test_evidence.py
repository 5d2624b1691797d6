"""Evidence: per-token activations, the held-out split, negatives and leak-free top tokens."""

from __future__ import annotations

import pytest
import torch

from saeinverse.collect.activations import collect_activations
from saeinverse.config import get_default_config
from saeinverse.explain.evidence import TokenSequence
from saeinverse.explain.pool import forward_features
from saeinverse.explain.sampling import FIT_PROMPTS, build_evidence
from saeinverse.invert import score_prompts
from tests.explain.planted import PLANTED_LETTERS, planted_model_and_sae, planted_stats


@pytest.fixture(scope="module")
def planted():
    model, sae = planted_model_and_sae()
    return model, sae, planted_stats(model, sae)


def explain_prompts(evidence) -> set[tuple[str, int]]:
    ex = evidence.explain
    seen = ex.sequences() + ex.firing + ex.silent
    return {(s.origin, s.prompt_index) for s in seen if s.prompt_index is not None}


def heldout_prompts(evidence) -> set[tuple[str, int]]:
    held = evidence.heldout
    return {
        (s.origin, s.prompt_index) for s in held.positives + held.negatives + held.hard_negatives
    }


def test_sequences_carry_each_tokens_activation(planted):
    model, sae, stats = planted
    evidence = build_evidence(
        model, sae, [0, 1], stats, {"n_heldout": 5, "heldout_prompts": 0}, seed=0
    )
    for ev in evidence:
        letter = PLANTED_LETTERS[ev.feature_id]
        sequences = ev.explain.sequences() + ev.heldout.positives + ev.heldout.negatives
        assert len(ev.explain.exemplars) == 8 and len(ev.heldout.positives) == 5
        for seq in sequences:
            assert seq.firing == [t == letter for t in seq.tokens]
            assert (
                seq.tokens
                == list(stats.prompts[seq.prompt_index])[seq.start - 1 :][: len(seq.tokens)]
            )
        peaks = {round(s.max_activation, 4) for s in ev.explain.exemplars}
        assert peaks == {round(float(stats.max_activation[ev.feature_id]), 4)}


def test_forward_matches_a_fresh_forward_per_prompt(tiny_model, tiny_topk_sae, tiny_stats):
    rows = [tiny_stats.tokens[p, : int(tiny_stats.lengths[p])].tolist() for p in range(6)]
    batched = forward_features(tiny_model, tiny_topk_sae, rows, [3, 7])
    for row, acts in zip(rows, batched, strict=True):
        for j, fid in enumerate([3, 7]):
            for end in (3, len(row)):  # the last position of a prefix, start token included
                fresh = score_prompts(tiny_model, tiny_topk_sae, [fid], [row[1:end]], "last")[0]
                assert acts[end - 1, j].item() == pytest.approx(fresh, abs=1e-5)


def test_heldout_is_disjoint_from_what_the_explainer_sees_and_follows_the_seed(planted):
    model, sae, stats = planted
    first = build_evidence(
        model, sae, [0, 1, 2], stats, {"n_heldout": 6, "heldout_prompts": 0}, seed=0
    )
    again = build_evidence(
        model, sae, [0, 1, 2], stats, {"n_heldout": 6, "heldout_prompts": 0}, seed=0
    )
    other = build_evidence(
        model, sae, [0, 1, 2], stats, {"n_heldout": 6, "heldout_prompts": 0}, seed=1
    )
    for ev, ev2, ev3 in zip(first, again, other, strict=True):
        assert explain_prompts(ev) and heldout_prompts(ev)
        assert not explain_prompts(ev) & heldout_prompts(ev)
        assert ev.explain.firing and all(s.max_activation > 0 for s in ev.explain.firing)
        fitted = {(s.origin, s.prompt_index) for s in ev.explain.firing}
        shown = {
            (s.origin, s.prompt_index) for s in ev.explain.exemplars + ev.explain.decile_samples
        }
        assert not fitted & shown
        assert heldout_prompts(ev) == heldout_prompts(ev2)
        assert heldout_prompts(ev) != heldout_prompts(ev3)
        assert all(s.max_activation > 0 for s in ev.heldout.positives)
        assert len(ev.heldout.negatives) == 6
        assert all(not any(s.firing) for s in ev.heldout.negatives)


def test_positives_span_the_deciles_and_never_take_more_than_half(tiny_model, tiny_sae, tiny_stats):
    dense = tiny_stats.prompt_feature_dense(list(range(64)))
    fid = int(((dense > 0).sum(0) - 40).abs().argmin())  # fires in about half the prompts
    column = dense[:, fid]
    firing = column[column > 0]
    (ev,) = build_evidence(
        tiny_model, tiny_sae, [fid], tiny_stats, {"n_heldout": 1000, "heldout_prompts": 0}, seed=0
    )
    assert len(ev.heldout.positives) == len(firing) // 2
    (ev,) = build_evidence(
        tiny_model, tiny_sae, [fid], tiny_stats,
        {"n_heldout": 10, "n_exemplars": 1, "n_decile_samples": 2, "heldout_prompts": 0},
    )  # fmt: skip
    assert {s.source for s in ev.explain.decile_samples} >= {"decile:0", "decile:9"}
    peaks = torch.tensor([float(column[s.prompt_index]) for s in ev.heldout.positives])
    assert peaks.min() < firing.quantile(0.2) and peaks.max() > firing.quantile(0.8)


def test_top_tokens_leave_out_the_heldout_prompts(tiny_model, tiny_sae, tiny_stats):
    fid = int(
        torch.where(tiny_stats.firing_count > 0, tiny_stats.firing_count, 10**9).argmin()
    )  # sparsest
    (ev,) = build_evidence(
        tiny_model,
        tiny_sae,
        [fid],
        tiny_stats,
        {"n_heldout": 5, "n_top_tokens": 100, "heldout_prompts": 0},
    )
    held = {s.prompt_index for s in ev.heldout.positives}
    assert held
    rest = [p for i, p in enumerate(tiny_stats.prompts) if i not in held]
    reference = collect_activations(
        tiny_model, tiny_sae, rest, get_default_config().data, progress=False
    )
    expected = {token: share for _, token, share in reference.top_tokens(fid, n=100)}
    got = dict(ev.explain.top_tokens)
    assert got.keys() == expected.keys()
    for token, share in expected.items():
        assert got[token] == pytest.approx(share, abs=1e-4)


def test_weakly_firing_prompts_give_negatives_when_no_prompt_is_silent(
    tiny_model, tiny_sae, tiny_stats
):
    dense = tiny_stats.prompt_feature_dense(list(range(64)))
    fid = int((dense > 0).sum(0).argmax())  # the feature firing in the most prompts
    (ev,) = build_evidence(
        tiny_model,
        tiny_sae,
        [fid],
        tiny_stats,
        {"n_heldout": 4, "context_window": 2, "heldout_prompts": 0},
    )
    for seq in ev.heldout.negatives:
        assert not any(seq.firing)
    assert not explain_prompts(ev) & heldout_prompts(ev)


def test_render_marks_runs_of_firing_tokens():
    seq = TokenSequence(list("ab\ncd"), [0] * 5, [0.0, 1.0, 2.0, 0.0, 3.0], "exemplar")
    assert seq.render() == "a«b\\n»c«d»"
    assert seq.plain() == "ab\\ncd"
    assert seq.render([True, False, False, False, False]) == "«a»b\\ncd"


def test_extra_corpus_prompts_top_up_the_heldout_positives(planted):
    model, sae, stats = planted
    cfg = {"n_heldout": 60, "heldout_prompts": 512}
    (ev,) = build_evidence(model, sae, [0], stats, cfg, seed=0)
    origins = [s.origin for s in ev.heldout.positives]
    assert len(ev.heldout.positives) == 60 and "extra" in origins and "run" in origins
    assert origins.count("run") <= int((stats.prompt_feature_dense([0]) > 0).sum()) // 2
    for seq in ev.heldout.positives:  # the planted feature fires exactly on its letter
        assert seq.max_activation > 0 and seq.firing == [t == "x" for t in seq.tokens]
    assert all(not any(s.firing) for s in ev.heldout.negatives)
    assert len(ev.heldout.negatives) == 60
    (alone,) = build_evidence(model, sae, [0], stats, {**cfg, "heldout_prompts": 0}, seed=0)
    assert {s.origin for s in alone.heldout.positives} == {"run"} and len(
        alone.heldout.positives
    ) < 60


def test_hard_negatives_hold_the_top_tokens_and_stay_silent(tiny_model, tiny_sae, tiny_stats):
    from saeinverse.explain.evidence import normalise

    fids = list(range(24))
    evidence = build_evidence(
        tiny_model, tiny_sae, fids, tiny_stats, {"n_heldout": 8, "heldout_prompts": 0}, seed=0
    )
    found = 0
    for ev in evidence:
        top = {normalise(t) for t, _ in ev.explain.top_tokens}
        for seq in ev.heldout.hard_negatives:
            assert seq.source == "hard:token" and not any(seq.firing)
            assert top & {normalise(t) for t in seq.tokens}
            found += 1
        assert not explain_prompts(ev) & {
            (s.origin, s.prompt_index) for s in ev.heldout.hard_negatives
        }
        assert not {(s.origin, s.prompt_index) for s in ev.explain.silent} & heldout_prompts(ev)
    assert found >= 20  # the check above ran on real cases


def test_genre_hard_negatives_come_from_the_exemplars_genre(planted):
    from saeinverse.explain.pool import corpus_genres

    model, sae, _ = planted
    genres = corpus_genres()
    texts = sorted(genres)[:400:4]
    stats = collect_activations(model, sae, texts, get_default_config().data, progress=False)
    (ev,) = build_evidence(model, sae, [0], stats, {"n_heldout": 10, "heldout_prompts": 0})
    main = max(
        {s.genre for s in ev.explain.exemplars}, key=[s.genre for s in ev.explain.exemplars].count
    )
    kinds = {s.source for s in ev.heldout.hard_negatives}
    assert kinds == {"hard:genre"}  # the planted feature fires on every "x": no silent "x" window
    assert all(s.genre == main and not any(s.firing) for s in ev.heldout.hard_negatives)


def test_bundled_texts_top_up_the_explaining_side_apart_from_the_heldout_ones(planted):
    model, sae, stats = planted
    cfg = {"n_heldout": 60, "heldout_prompts": 512, "explain_prompts": stats.n_prompts + 512}
    (ev,) = build_evidence(model, sae, [0], stats, cfg, seed=0)
    fitted = {(s.origin, s.prompt_index) for s in ev.explain.firing}
    assert ("extra" in {o for o, _ in fitted}) and len(fitted) <= FIT_PROMPTS
    assert all(
        s.firing == [t == "x" for t in s.tokens] and any(s.firing) for s in ev.explain.firing
    )
    assert len(ev.heldout.positives) == 60
    assert not fitted & heldout_prompts(ev)  # never a held-out positive nor negative
    (alone,) = build_evidence(model, sae, [0], stats, {**cfg, "explain_prompts": 0}, seed=0)
    assert {s.origin for s in alone.explain.firing} <= {"run"}
    assert len(alone.explain.firing) < len(ev.explain.firing)
    assert heldout_prompts(alone) == heldout_prompts(ev) - fitted


def test_explaining_side_takes_silent_windows_around_top_tokens_from_its_firing_prompts_too(
    tiny_model, tiny_sae, tiny_stats
):
    from saeinverse.explain.evidence import normalise

    fids = list(range(24))
    cfg = {"n_heldout": 8, "heldout_prompts": 0, "explain_prompts": 0}
    evidence = build_evidence(tiny_model, tiny_sae, fids, tiny_stats, cfg, seed=0)
    fires = tiny_stats.prompt_feature_dense(fids).numpy() > 0
    from_firing = 0
    for j, ev in enumerate(evidence):
        top = {normalise(t) for t, _ in ev.explain.top_tokens}
        positives = {s.prompt_index for s in ev.explain.positives()}
        near = [s for s in ev.explain.silent if s.source == "silent:token"]
        for seq in near:
            assert not any(seq.firing) and top & {normalise(t) for t in seq.tokens}
        assert not {(s.origin, s.prompt_index) for s in near} & heldout_prompts(ev)
        firing = [s for s in near if fires[s.prompt_index, j]]
        assert {s.prompt_index for s in firing} <= positives  # the explaining side's own prompts
        from_firing += len(firing)
        if firing:  # only once the never-firing prompts ran short
            assert len(near) - len(firing) < 100
    assert from_firing >= 20  # the checks above ran on real cases


def test_extra_prompts_never_draw_a_text_an_inversion_could_start_from(planted, monkeypatch):
    """A text whose reference window a search could start from is neither held out nor fitted."""
    import dataclasses

    import saeinverse.explain.pool as pool
    from saeinverse.collect.activations import tokenize_prompts
    from saeinverse.data.corpus import text_hash
    from saeinverse.invert import Inversion

    model, sae, stats = planted
    texts = [f"{'x' * (i % 5 + 1)}ab{i}cd" for i in range(40)]
    monkeypatch.setattr(pool, "corpus_genres", lambda: dict.fromkeys(texts, "prose"))
    cfg = {"n_heldout": 60, "heldout_prompts": 40, "explain_prompts": 0}
    avoided = texts[::3]
    inversion = Inversion(0, 0.0, [], "", 0.0, [], "", 0.0)
    inversion = dataclasses.replace(inversion, window_texts=[text_hash(t) for t in avoided])

    def extra_rows(inversions):
        (ev,) = build_evidence(model, sae, [0], stats, cfg, seed=0, inversions=inversions)
        held = ev.heldout.positives + ev.heldout.negatives + ev.heldout.hard_negatives
        return {tuple(s.tokens) for s in held if s.origin == "extra"}

    def rows_of(some):
        batch = tokenize_prompts(model, some, int(stats.tokens.shape[1]), 1)
        return [
            model.to_str_tokens(batch.tokens[i, 1 : int(n)]) for i, n in enumerate(batch.lengths)
        ]

    def drawn(rows, windows):
        return {i for i, row in enumerate(rows) for w in windows if _inside(list(w), row)}

    everything = extra_rows({})
    assert drawn(rows_of(avoided), everything)  # without the inversion some are drawn
    assert not drawn(rows_of(avoided), extra_rows({0: inversion}))


def _inside(window: list[str], row: list[str]) -> bool:
    return any(row[i : i + len(window)] == window for i in range(len(row) - len(window) + 1))
