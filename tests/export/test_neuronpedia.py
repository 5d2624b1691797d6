"""The Neuronpedia export of a tiny run: every row valid against the schema written from
Neuronpedia's columns (tests/export/neuronpedia_schema.json), and read back into the run's numbers."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from saeinverse.cli import main
from saeinverse.export import export_neuronpedia, read_neuronpedia
from saeinverse.export.neuronpedia import COLLECTION_SOURCE, INVERSION_SOURCE
from saeinverse.report.loaders import load_run
from tests import builders

SCHEMA = json.loads((Path(__file__).parent / "neuronpedia_schema.json").read_text())


def validator(kind: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator({**SCHEMA, "$ref": f"#/$defs/{kind}"})


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from saeinverse.run.pipeline import run_experiment

    root = tmp_path_factory.mktemp("export")
    run_experiment(builders.tiny_config(), run_dir=root / "run")
    summary = export_neuronpedia(root / "run", root / "np")
    return root / "run", root / "np", summary


def test_every_row_matches_neuronpedias_columns(exported):
    _, out, summary = exported
    rows = read_neuronpedia(out)
    for kind, table in (("feature", "features"), ("activation", "activations"),
                        ("explanation", "explanations")):  # fmt: skip
        check = validator(kind)
        assert rows[table], table
        for row in rows[table]:
            check.validate(row)
    batches = sorted((out / "upload").glob("batch-*.json"))
    assert batches
    for path in batches:
        validator("upload_batch").validate(json.loads(path.read_text()))
    assert summary["features"] == len(rows["features"]) and summary["scores"] == len(rows["scores"])


def test_a_key_typo_is_caught():
    row = {"modelId": "m", "layer": "0-x", "index": "1", "tokens": ["a"], "values": [1.0],
           "maxValue": 1.0, "maxValueTokenIndex": 0, "minValue": 1.0, "dataSource": "s",
           "maxValueTokenIdx": 0}  # fmt: skip
    with pytest.raises(jsonschema.ValidationError, match="maxValueTokenIdx"):
        validator("activation").validate(row)


def test_the_export_reads_back_into_the_runs_numbers(exported):
    run_dir, out, _ = exported
    run = load_run(run_dir)
    rows = read_neuronpedia(out)
    features = {int(r["index"]): r for r in rows["features"]}
    assert sorted(features) == sorted(run.cards.feature_ids)
    for card in run.cards.cards:
        row = features[card.feature_id]
        assert row["maxActApprox"] == pytest.approx(card.max_activation)
        assert row["frac_nonzero"] == pytest.approx(card.density)
        assert row["pos_str"] == [e.token for e in card.positive_logits]
        assert row["neg_values"] == pytest.approx([e.value for e in card.negative_logits])
        assert row["topkCosSimIndices"] == [n.feature_id for n in card.neighbours]
        assert sum(row["freq_hist_data_bar_heights"]) == card.firing_count
        acts = [a for a in rows["activations"]
                if a["index"] == str(card.feature_id) and a["dataSource"] == COLLECTION_SOURCE]  # fmt: skip
        windows = card.exemplars + [w for i in card.intervals for w in i.samples]
        assert [a["tokens"] for a in acts] == [w.tokens for w in windows]
        for a, w in zip(acts, windows, strict=True):
            assert a["values"] == pytest.approx(w.values)
            assert a["maxValue"] == pytest.approx(max(w.values))
    explained = {int(r["index"]): r["description"] for r in rows["explanations"]}
    assert explained == {f: e.explanation[:512] for f, e in run.explanations.items()}
    scores = {int(r["index"]): r["scores"]["detection"] for r in rows["scores"]}
    assert scores == {f: e.detection for f, e in run.explanations.items()}
    inverted = [a for a in rows["activations"] if a["dataSource"] == INVERSION_SOURCE]
    assert all(int(a["index"]) in run.inversions for a in inverted)


def test_inverted_prompts_with_saved_token_values_are_activations_of_their_own_source():
    from types import SimpleNamespace

    from saeinverse.export.neuronpedia import inversion_activations

    point = {"tokens": [5, 6], "token_strings": ["a", "b"], "token_activations": [0.5, 2.0]}
    inversion = SimpleNamespace(headline=dict(point), pareto=[dict(point), {"tokens": [7]}],
                                refined_token_strings=["c", "d", "e"],
                                refined_token_activations=[0.0, 3.0, 1.0])  # fmt: skip
    key = {"modelId": "m", "layer": "0-x", "index": "4"}
    rows = inversion_activations(inversion, key)
    assert [r["tokens"] for r in rows] == [["a", "b"], ["c", "d", "e"]]
    assert [r["dataIndex"] for r in rows] == ["headline", "refined"]
    assert [(r["maxValue"], r["maxValueTokenIndex"]) for r in rows] == [(2.0, 1), (3.0, 1)]
    for row in rows:
        assert row["dataSource"] == INVERSION_SOURCE
        validator("activation").validate(row)


def test_the_cli_exports(exported, tmp_path, capsys):
    run_dir, _, summary = exported
    assert main(["export", str(run_dir), "--to", "neuronpedia", str(tmp_path / "np")]) == 0
    assert json.loads(capsys.readouterr().out)["features"] == summary["features"]
    assert main(["export", str(run_dir), "--to", "nowhere", str(tmp_path / "x")]) == 2
