"""The run hands inversion the reference pass's windows, never from a text explanations hold out."""

from __future__ import annotations

from saeinverse import get_default_config, update_config
from saeinverse.collect.reference import RealWindow
from saeinverse.data.corpus import text_hash
from saeinverse.run.pipeline import run_experiment
from saeinverse.run.stages import _heldout, invert_inputs
from tests.builders import tiny_overrides

CONFIG = tiny_overrides(
    data={"max_length": 20},
    optimization={"refine_candidates": 8},
    explanation={"heldout_prompts": 20},
    pipeline={"run_visualization": False, "run_explanations": False},
)


def test_inversion_starts_may_come_from_the_reference_pass(tiny_model, tiny_topk_sae, tmp_path):
    config = update_config(get_default_config(), CONFIG)
    ctx = run_experiment(config, models=(tiny_model, tiny_topk_sae, None, None), run_dir=tmp_path)
    reference, stats = ctx.results["reference"], ctx.results["collect"]
    length = config.optimization.length
    inputs = invert_inputs(ctx)
    given = 0
    for target, inversion in zip(inputs.targets, ctx.results["invert"], strict=True):
        real = reference.windows[target.feature_id]
        assert real, "every target fired in the reference pass"
        assert set(target.window_texts) == {w.text for w in real}
        assert inversion.window_texts == list(target.window_texts)
        cut = [list(w.tokens[-length:]) for w in real]
        given += sum(list(w) in cut for w in target.exemplar_windows)
    assert given > 0  # some start is a reference window

    # a reference window cut from a prompt the explanations hold out is never given
    f = inputs.targets[0].feature_id
    held = sorted(_heldout(ctx, stats, [f])[f])[0]
    tokens = tuple(stats.tokens[held, 1 : int(stats.lengths[held])].tolist())
    planted = RealWindow(tokens, text_hash(stats.prompts[held]), 1e6)
    reference.windows[f] = [planted, *reference.windows[f]]
    (target, *_) = invert_inputs(ctx).targets
    assert planted.text not in target.window_texts
    assert list(tokens[-length:]) not in [list(w) for w in target.exemplar_windows]
    assert set(target.window_texts) == set(inputs.targets[0].window_texts)


def test_the_reference_artifact_keeps_the_windows_and_names_an_old_one(tmp_path, caplog):
    import json

    import torch

    from saeinverse.artifacts import REFERENCE_FILE
    from saeinverse.collect.reference import ReferenceMax
    from saeinverse.invert.fluency import FluencyBound
    from saeinverse.invert.reference import RunReference

    bound = FluencyBound(1.3, 0.5, 300, 12, 1.0, 1.3, 2.1)
    windows = {7: [RealWindow((1, 2, 3), "abc", 2.5)]}
    RunReference(ReferenceMax(torch.ones(16), 1000, "x"), bound, windows).save(tmp_path)
    assert RunReference.load(tmp_path).windows == windows
    info = json.loads((tmp_path / REFERENCE_FILE).read_text())
    del info["windows"]  # written before the windows were kept
    (tmp_path / REFERENCE_FILE).write_text(json.dumps(info))
    with caplog.at_level("WARNING"):
        assert RunReference.load(tmp_path).windows == {}
    assert "--force reference" in caplog.text
