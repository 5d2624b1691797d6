"""Discrete refinement: prefix sharing changes nothing but the cost; the fluency hinge works as
documented; the front is a front."""

from __future__ import annotations

import pytest
import torch

from saeinverse.config import OptimizationConfig, as_section
from saeinverse.invert.front import ParetoPoint, best_within, update_pareto
from saeinverse.invert.objective import FeatureTarget, allowed_token_mask
from saeinverse.invert.project import Vocabulary
from saeinverse.invert.refine import Population, refine


def run(model, sae, position, share, hinge=(None, None, None), **settings):
    target = FeatureTarget(model, sae, position)
    vocab = Vocabulary(model, allowed_token_mask(model))
    pop = Population(
        feature_ids=torch.tensor([4, 8, 15]),
        init_ids=torch.randint(3, 100, (3, 7), generator=torch.Generator().manual_seed(0)),
        generators=[torch.Generator().manual_seed(i) for i in range(3)],
        scale=[1.0, 1.0, 1.0],
        hinge=list(hinge),
        budget=[None, None, None],
    )
    s = as_section(
        {"refine_steps": 6, "refine_candidates": 24, "refine_top_k": 16, "fluency_candidates": 8,
         "patience": 50, "position": position, **settings},
        OptimizationConfig,
    )  # fmt: skip
    return refine(target, vocab, pop, s, share_prefix=share)


@pytest.mark.parametrize("position", ["last", "max"])
@pytest.mark.parametrize("hinge", [(None, None, None), (None, 4.0, 0.0)])
def test_shared_prefix_screening_finds_the_same_prompts(tiny_model, tiny_topk_sae, position, hinge):
    shared = run(tiny_model, tiny_topk_sae, position, True, hinge)
    full = run(tiny_model, tiny_topk_sae, position, False, hinge)
    assert torch.equal(shared.ids, full.ids)
    assert shared.activation == pytest.approx(full.activation, rel=1e-5, abs=1e-6)
    # the shared prefix costs one forward per step and saves each candidate its prefix: counted
    for row, hinge_row in enumerate(hinge):
        assert shared.forward_passes[row] < full.forward_passes[row]
        if hinge_row is None:  # start, then per step a gradient (3), 24 whole candidates and
            # up to 3 merged swaps (merge_swaps=4), each a whole candidate too
            least = 1 + full.steps[row] * (3 + 24)
            assert least < full.forward_passes[row] <= least + full.steps[row] * 3
    unmerged = run(tiny_model, tiny_topk_sae, position, False, hinge, merge_swaps=0)
    for row, hinge_row in enumerate(hinge):
        if hinge_row is None:
            assert unmerged.forward_passes[row] == pytest.approx(1 + unmerged.steps[row] * 27)


def test_fluency_hinge_penalises_only_cross_entropy_above_it(tiny_model, tiny_sae):
    # A hinge above every cross-entropy: the score is the activation alone, which never falls.
    free = run(tiny_model, tiny_sae, "last", False, (50.0, 50.0, 50.0), refine_steps=10)
    for t in free.trajectory:
        assert t["activation"] == sorted(t["activation"])
    # A hinge at 0 penalises every nat: prompts end more fluent, and some activation is traded.
    strict = run(tiny_model, tiny_sae, "last", False, (0.0, 0.0, 0.0), refine_steps=10)
    free_ce = [t["cross_entropy"][-1] for t in free.trajectory]
    strict_ce = [t["cross_entropy"][-1] for t in strict.trajectory]
    assert sum(strict_ce) < sum(free_ce)
    # Between the two: a hinge at the strict run's level stops pushing once it is reached.
    for t, front in zip(strict.trajectory, strict.front, strict=True):
        assert t["cross_entropy"][-1] <= t["cross_entropy"][0]
        assert front and all(p.activation > 0 for p in front)


def test_unconstrained_rows_score_no_cross_entropy(tiny_model, tiny_sae):
    out = run(tiny_model, tiny_sae, "last", True, (None, 4.0, None))
    assert out.trajectory[0]["cross_entropy"] == [] and out.trajectory[2]["cross_entropy"] == []
    assert len(out.trajectory[1]["cross_entropy"]) == out.steps[1] + 1
    assert out.front[0] == [] and out.front[1]
    # the fluent row pays for its shortlist (8) and expectations on top of the screening
    assert out.forward_passes[1] > out.forward_passes[0]


def test_update_pareto_keeps_the_front_and_spreads_it():
    points = [
        ParetoPoint([1], 1.0, 5.0),
        ParetoPoint([2], 2.0, 6.0),
        ParetoPoint([3], 1.5, 7.0),  # dominated by [2]
        ParetoPoint([4], 3.0, 9.0),
        ParetoPoint([5], 0.0, 1.0),  # silent: never on the front
    ]
    front = update_pareto([], points, size=8)
    assert [p.ids for p in front] == [[1], [2], [4]]
    many = [ParetoPoint([i], float(i + 1), float(i)) for i in range(20)]
    spread = update_pareto([], many, size=4)
    assert len(spread) == 4 and spread[0].ids == [0] and spread[-1].ids == [19]


def test_update_pareto_keeps_the_named_prompt_when_thinning():
    many = [ParetoPoint([i], float(i + 1), float(i)) for i in range(20)]
    thinned = update_pareto([], many, size=4, keep=[[7]])
    assert [7] in [p.ids for p in thinned] and thinned[0].ids == [0] and thinned[-1].ids == [19]


def test_a_thinned_front_keeps_the_most_active_point_at_each_reported_level():
    # 20 points on a front: activation i + 1 at cross-entropy i; the levels fall between them
    many = [ParetoPoint([i], float(i + 1), float(i)) for i in range(20)]
    assert best_within(many, (8.5, 15.2, -1.0)) == [[8], [15]]  # none at or below -1
    plain = [p.ids for p in update_pareto([], many, size=4)]
    assert [8] not in plain and [15] not in plain  # even thinning drops both
    kept = [p.ids for p in update_pareto([], many, size=4, keep=best_within(many, (8.5, 15.2)))]
    assert [8] in kept and [15] in kept and kept[0] == [0] and kept[-1] == [19]


def _one_edit_apart(new: list[int], old: list[int]) -> bool:
    """Whether ``new`` is ``old`` with one token dropped and one token put in (anywhere)."""
    return any(
        new[:i] + new[i + 1 :] == old[:j] + old[j + 1 :]
        for i in range(len(new))
        for j in range(len(old))
    )


def test_edit_moves_insert_or_delete_one_token_and_keep_both_ends():
    from saeinverse.invert.moves import draw_candidates

    old = list(range(10, 22))
    current = torch.tensor([old])
    grad_top = torch.randint(100, 200, (1, 12, 4), generator=torch.Generator().manual_seed(1))
    cands, positions = draw_candidates(
        current, grad_top, [None], 64, [torch.Generator().manual_seed(0)], edits=True
    )
    shifted = 0
    for c in range(64):
        new, p = cands[0, c].tolist(), int(positions[0, c])
        assert len(new) == 12
        assert new[:p] == old[:p], "nothing before the first changed position moves"
        changed = [i for i in range(12) if new[i] != old[i]]
        if c % 8 in (3, 7):
            assert _one_edit_apart(new, old) and new[-1] == old[-1]
            shifted += len(changed) > 1
        else:
            assert changed == [p], "a swap changes one token, at its position"
    assert shifted >= 6, "inserts and deletes shift the tokens between their two positions"
    swaps, _ = draw_candidates(current, grad_top, [None], 64, [torch.Generator().manual_seed(0)])
    assert all(sum(a != b for a, b in zip(row.tolist(), old, strict=True)) == 1 for row in swaps[0])


def test_model_only_rows_draw_every_token_from_the_model_and_pay_no_gradient(tiny_model, tiny_sae):
    """FLRT's moves (``proposals='model_only'``): every candidate token of every row, the
    unconstrained one included, is one of the model's top-k next tokens under the prompt it
    changed; no backward is paid, and the search still raises the feature."""
    from saeinverse.invert.cost import Cost
    from saeinverse.invert.fluency import Fluency

    settings = {"edit_moves": False, "refine_steps": 8, "refine_top_k": 4}
    out = run(tiny_model, tiny_sae, "last", True, (None, 4.0, None), proposals="model_only",
              **settings)  # fmt: skip
    fluency = Fluency(FeatureTarget(tiny_model, tiny_sae), allowed_token_mask(tiny_model), 4)
    swaps = 0
    for accepted in out.accepted:
        for (before, _), (after, _) in zip(accepted, accepted[1:], strict=False):
            top = fluency.top_tokens(fluency.expectations(torch.tensor([before]))[1])[0]
            for pos in [i for i, (a, b) in enumerate(zip(before, after, strict=True)) if a != b]:
                assert after[pos] in top[pos].tolist()  # merged swaps too: each from the model
                swaps += 1
    assert swaps > 0
    for row in (0, 2):  # the unconstrained rows
        assert out.trajectory[row]["activation"] == sorted(out.trajectory[row]["activation"])
    assert any(t["activation"][-1] > t["activation"][0] for t in out.trajectory)
    # without prefix sharing a step's screening is 24 whole candidates: the unconstrained row (0)
    # pays its start and expectations, 24 per step, new expectations per accepted prompt, and
    # no gradient (3 per step with the gradient's proposals)
    cost = Cost.of(FeatureTarget(tiny_model, tiny_sae), 7)
    for proposals, gradient in (("model_only", 0.0), ("both", cost.gradient)):
        full = run(tiny_model, tiny_sae, "last", False, (None, 4.0, None), proposals=proposals,
                   merge_swaps=0, **settings)  # fmt: skip
        reads = len(full.accepted[0]) if proposals == "model_only" else 0  # start and accepts
        expected = cost.sequence + reads * cost.full + full.steps[0] * (gradient + 24)
        assert full.forward_passes[0] == pytest.approx(expected)


def test_each_row_keeps_the_most_active_candidate_it_screened_and_the_check_rescores_it(
    tiny_model, tiny_sae
):
    """A fluent row with a strict hinge passes over candidates more active than any it takes
    (too costly in cross-entropy); the most active one any row screened is kept, and the check
    re-scores it, so the unconstrained best counts every prompt the search forwarded."""
    from types import SimpleNamespace

    from saeinverse.invert import score_prompt
    from saeinverse.invert.check import _candidates

    out = run(tiny_model, tiny_sae, "last", True, (0.0, 0.0, 0.0), refine_steps=6)
    passed_over = 0
    for row, feature in enumerate([4, 8, 15]):
        seen = out.best_seen[row]
        fresh = score_prompt(tiny_model, tiny_sae, feature, seen, "last")
        taken = max(a for _, a in out.accepted[row][1:] or out.accepted[row])
        assert fresh >= taken - 1e-4
        passed_over += fresh > taken + 1e-3
    assert passed_over > 0
    soft = SimpleNamespace(best_ids=torch.zeros(3, 7, dtype=torch.long))
    for row in range(3):
        assert out.best_seen[row] in _candidates(row, soft, out, [0, 1, 2], 8)


def test_merge_swaps_merges_improving_swaps_at_distinct_positions_best_first():
    from saeinverse.invert.moves import merge_swaps

    current = torch.tensor([[10, 11, 12, 13, 14]])
    cands = current[:, None, :].repeat(1, 6, 1)
    cands[0, 0, 1] = 50  # gain 3
    cands[0, 1, 3] = 51  # gain 5: the best
    cands[0, 2, 3] = 52  # gain 4: the same position as the best, never merged with it
    cands[0, 3, 0] = 53  # gain -1: does not improve
    cands[0, 4, 1:3] = 54  # gain 9, but two tokens changed (an edit): not a swap
    cands[0, 5, 4] = 55  # gain 1
    gain = torch.tensor([[3.0, 5.0, 4.0, -1.0, 9.0, 1.0]])
    merged = merge_swaps(current, cands, gain, width=4)
    assert [(row, ids.tolist(), p) for row, ids, p in merged] == [
        (0, [10, 50, 12, 51, 14], 1),  # the best two
        (0, [10, 50, 12, 51, 55], 1),  # and the third: three swaps, the width holds a fourth
    ]
    assert len(merge_swaps(current, cands, gain, width=2)) == 1
    assert merge_swaps(current, cands, gain, width=1) == []
    assert merge_swaps(current, cands, -gain.abs(), width=4) == []  # nothing improves


def test_merged_swaps_let_a_step_take_several_improvements(tiny_model, tiny_sae):
    """With merges, a step may accept a prompt several swaps from the last (each merge counted
    in the row's cost); without, every accepted prompt is one swap from the one before."""

    def largest_jump(accepted):
        return max(
            sum(a != b for a, b in zip(new, old, strict=True))
            for (new, _), (old, _) in zip(accepted[1:], accepted[:-1], strict=True)
        )

    on = run(tiny_model, tiny_sae, "last", True, refine_steps=8, edit_moves=False)
    off = run(tiny_model, tiny_sae, "last", True, refine_steps=8, edit_moves=False, merge_swaps=0)
    assert all(largest_jump(acc) == 1 for acc in off.accepted)
    assert any(largest_jump(acc) > 1 for acc in on.accepted)
    assert all(a > b for a, b in zip(on.forward_passes, off.forward_passes, strict=True))
