"""A stage's hash sees every config value the stage reads, and nothing else.

- Every config value a stage's computation touches (recorded by watching the config sections'
  attribute reads while the stage computes) is one its hash covers, or one of ``NOT_RESULTS``
  (where and how fast it runs).
- Changing any config value a stage reads changes its hash; changing any other leaves it.
- The holes that were seen: explain's held-out plan read by an exemplar start, and the engine.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from saeinverse import get_default_config, update_config
from saeinverse.config import Section, read_values
from saeinverse.run import pipeline
from saeinverse.run.pipeline import run_experiment, stage_hash_of
from saeinverse.run.stages import NOT_RESULTS
from tests.builders import tiny_overrides

SMALL = tiny_overrides(
    data={"max_length": 20},
    optimization={"refine_candidates": 8, "init": "exemplar"},
    explanation={"heldout_prompts": 20},
    pipeline={"run_visualization": False},
)


def _leaves(tree: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out += _leaves(value, f"{prefix}{key}.")
        else:
            out.append(f"{prefix}{key}")
    return out


def _covered(path: str, prefixes: tuple[str, ...]) -> bool:
    return any(path == p or path.startswith(p + ".") for p in prefixes)


@pytest.fixture
def watched_run(tiny_model, tiny_topk_sae, tmp_path, monkeypatch):
    """The tiny pipeline run once with every stage's config reads recorded: (ctx, reads)."""
    fields: dict[type, set[str]] = {}
    current: list[str] = []
    reads: dict[str, set[str]] = {}
    original = Section.__getattribute__

    def watching(self, name):
        value = original(self, name)
        if current and not name.startswith("_"):
            cls = type(self)
            names = fields.setdefault(cls, {f.name for f in dataclasses.fields(cls)})
            if name in names and not isinstance(value, Section):
                path = original(self, "__dict__").get("_section_path", "?")
                reads[current[-1]].add(f"{path}.{name}" if path else name)
        return value

    def watched(stage):
        def compute(ctx, folder):
            current.append(stage.name)
            reads.setdefault(stage.name, set())
            try:
                return stage.compute(ctx, folder)
            finally:
                current.pop()

        return dataclasses.replace(stage, compute=compute)

    monkeypatch.setattr(pipeline, "STAGES", tuple(watched(s) for s in pipeline.STAGES))
    monkeypatch.setattr(Section, "__getattribute__", watching)
    config = update_config(get_default_config(), SMALL)
    ctx = run_experiment(config, models=(tiny_model, tiny_topk_sae, None, None), run_dir=tmp_path)
    monkeypatch.setattr(Section, "__getattribute__", original)
    return ctx, reads


def test_every_value_a_stage_reads_is_in_its_hash(watched_run):
    ctx, reads = watched_run
    assert set(reads) >= {"collect", "reference", "invert", "explain"}
    outside = {}
    for stage in pipeline.STAGES:
        hashed = set(read_values(ctx.config, stage.reads(ctx)))
        unhashed = sorted(
            path for path in reads.get(stage.name, ())
            if path not in hashed and not _covered(path, NOT_RESULTS)
        )  # fmt: skip
        if unhashed:
            outside[stage.name] = unhashed
    assert not outside, f"stages read values outside their hash: {outside}"


def _other_value(value: Any) -> Any:
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value / 2 if value else 0.25
    if isinstance(value, str):
        return value + "x"
    if value is None:
        return 1
    if isinstance(value, list):
        return [*value, 1]
    return None


def test_a_stage_hash_changes_with_exactly_the_values_it_reads(watched_run):
    ctx, _ = watched_run
    config = ctx.config
    for stage in pipeline.STAGES:
        base = stage_hash_of(ctx, stage)
        hashed = set(read_values(config, stage.reads(ctx)))
        for leaf in _leaves(config.to_dict()):
            ctx.config = _with_leaf(config, leaf)
            try:
                differs = stage_hash_of(ctx, stage) != base
            finally:
                ctx.config = config
            assert differs == (leaf in hashed), (stage.name, leaf)


def _with_leaf(config, leaf: str):
    """``config`` with one leaf given another value (not validated: any other value will do)."""

    def replace(section, rest):
        if len(rest) == 1:
            return dataclasses.replace(
                section, **{rest[0]: _other_value(getattr(section, rest[0]))}
            )
        return dataclasses.replace(
            section, **{rest[0]: replace(getattr(section, rest[0]), rest[1:])}
        )

    return replace(config, leaf.split("."))


def test_changing_the_held_out_plan_recomputes_an_exemplar_start(
    tiny_model, tiny_topk_sae, tmp_path
):
    models = (tiny_model, tiny_topk_sae, None, None)
    config = update_config(get_default_config(), SMALL)
    first = run_experiment(config, models=models, run_dir=tmp_path)
    more = update_config(config, {"explanation": {"n_heldout": 12}})
    second = run_experiment(more, models=models, run_dir=tmp_path)
    assert second.hashes["invert"] != first.hashes["invert"]
    assert second.hashes["reference"] == first.hashes["reference"]
    no_collection = update_config(
        config,
        {
            "pipeline": {"run_data_collection": False},
            "clustering": {"selection": {"feature_ids": [3]}},
        },
    )
    third = run_experiment(no_collection, models=models, run_dir=tmp_path / "explicit")
    fourth = run_experiment(
        update_config(no_collection, {"explanation": {"n_heldout": 12}}),
        models=models,
        run_dir=tmp_path / "explicit",
    )
    assert fourth.hashes["invert"] == third.hashes["invert"], "no collection: no plan is read"


def test_the_engine_settings_are_in_no_hash(watched_run):
    ctx, _ = watched_run
    base = {stage.name: stage_hash_of(ctx, stage) for stage in pipeline.STAGES}
    config = ctx.config
    ctx.config = update_config(
        config, {"scale": {"engine": "ray", "workers": 2, "feature_batch": 1, "shard_prompts": 7}}
    )
    try:
        assert {stage.name: stage_hash_of(ctx, stage) for stage in pipeline.STAGES} == base
    finally:
        ctx.config = config
