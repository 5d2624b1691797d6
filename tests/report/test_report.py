"""build_report on a tiny run: self-contained, escaped, atomic, and every stage optional."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from saeinverse.errors import ArtifactError
from saeinverse.report import REPORT_DIR, REPORT_FILE, build_report, load_run, visualize_results
from saeinverse.report import html as report_html
from saeinverse.run.rundir import MARKER
from tests.report.conftest import NASTY, build_tiny_run


def figure_names(text: str) -> list[str]:
    return re.findall(r'<div class="plotly-figure" id="figure-\d+" data-figure="([^"]+)"', text)


def set_toggle(run_dir: Path, key: str, value: bool) -> None:
    path = run_dir / "config.yaml"
    config = yaml.safe_load(path.read_text())
    config["pipeline"][key] = value
    path.write_text(yaml.safe_dump(config))


def test_report_is_self_contained_with_plotly_once(tiny_run, tmp_path):
    path = build_report(tiny_run, tmp_path / "out.html")
    text = path.read_text()
    assert text.startswith("<!DOCTYPE html>")
    assert text.count("<script") == text.count("</script>")  # no token closed or opened a script
    assert len(re.findall(r"<script[^>]*\bsrc=", text)) == 0
    assert "<link" not in text and "@import" not in text
    assert text.count("Plotly.newPlot(") == 1  # the one render loop
    from plotly.offline import get_plotlyjs

    assert text.count(get_plotlyjs()[:200]) == 1
    names = figure_names(text)
    run = load_run(tiny_run)
    assert {"density-histogram", "entropy-density", "cluster-map", "prompt-feature-heatmap",
            "activation-ratios", "explanation-scores"} <= set(names)  # fmt: skip
    assert sorted(n for n in names if n.startswith("optimisation-")) == sorted(
        f"optimisation-{f}" for f in run.selected_ids
    )
    assert len(re.findall(r'<article class="feature-card"', text)) == len(run.selected_ids)


def test_default_location_and_notebook_wrapper(run_copy):
    expected = run_copy / REPORT_DIR / REPORT_FILE
    assert build_report(run_copy) == expected and expected.exists()
    expected.unlink()
    assert visualize_results(str(run_copy)) == expected
    context = SimpleNamespace(run=SimpleNamespace(root=run_copy))
    assert visualize_results(context, run_copy / "other.html") == run_copy / "other.html"


def test_every_text_from_artifacts_is_escaped(tiny_run, tmp_path):
    text = build_report(tiny_run, tmp_path / "r.html").read_text()
    body = text[text.index("<body>") :]
    for raw in ("<b>bold</b>", "</script><b>", "<!-- x -->", '"quoted"', NASTY):
        assert raw not in body
    assert "&lt;" in body and "&amp;" in body and "&quot;" in body
    for blob in re.findall(r'class="figure-data"[^>]*>(.*?)</script>', body, flags=re.S):
        json.loads(blob)  # each figure is valid JSON once the escapes are read
        assert "<" not in blob and "&" not in blob


def test_stage_switched_off_is_left_out_with_a_note(run_copy):
    set_toggle(run_copy, "run_clustering", False)
    run = load_run(run_copy)
    assert run.status["cluster"] == "off" and run.clusters is None
    text = build_report(run_copy).read_text()
    names = figure_names(text)
    assert "cluster-map" not in names and "prompt-feature-heatmap" not in names
    assert "density-histogram" in names
    assert "Clustering is not in this report: switched off in the config." in text


def test_missing_and_unfinished_stages(run_copy):
    for path in (run_copy / "invert").iterdir():
        path.unlink()
    (run_copy / "invert").rmdir()
    (run_copy / "explain" / MARKER).unlink()
    run = load_run(run_copy)
    assert run.status["invert"] == "missing" and run.status["explain"] == "unfinished"
    assert run.inversions == {} and run.explanations == {}
    text = build_report(run_copy).read_text()
    names = figure_names(text)
    assert not any(n.startswith("optimisation-") or n == "activation-ratios" for n in names)
    assert len(re.findall(r'<article class="feature-card"', text)) == len(run.selected_ids)
    assert "Inversion is not in this report: did not run (no folder)." in text
    assert "did not finish (no success marker)" in text


def test_stale_stage_is_left_out(run_copy):
    marker = run_copy / "select" / MARKER
    data = json.loads(marker.read_text())
    data["inputs"] = {"cluster": "not-the-current-hash"}
    marker.write_text(json.dumps(data))
    run = load_run(run_copy)
    assert run.status["select"] == "stale" and run.selection is None
    assert run.selected_ids == sorted(run.inversions)  # cards fall back to what was inverted


def test_stage_whose_input_is_switched_off_is_stale(run_copy):
    hashes = {}
    for name in ("filter", "cluster"):
        hashes[name] = json.loads((run_copy / name / MARKER).read_text())["output"]
    marker = run_copy / "cluster" / MARKER
    data = json.loads(marker.read_text())
    marker.write_text(json.dumps({**data, "inputs": {"filter": hashes["filter"]}}))
    assert load_run(run_copy).status["cluster"] == "done"  # matching inputs: usable
    set_toggle(run_copy, "run_filtering", False)
    run = load_run(run_copy)
    assert run.status["filter"] == "off" and run.status["cluster"] == "stale"
    assert run.clusters is None and "Clustering (cluster/): stale" in " ".join(run.notes)


def test_corrupt_artifact_is_a_note_not_a_crash(run_copy):
    (run_copy / "filter" / "feature_set.json").write_text("{ not json")
    run = load_run(run_copy)
    assert run.status["filter"] == "unreadable" and run.feature_set is None
    assert any("feature_set.json" in n for n in run.notes)
    assert "entropy-density" in figure_names(build_report(run_copy).read_text())


def test_collection_only_run(tmp_path):
    root = build_tiny_run(tmp_path, until="collect")
    text = build_report(root).read_text()
    assert set(figure_names(text)) == {"density-histogram", "entropy-density"}
    assert (
        "Selection is not in this report" in text and "feature-card" not in text.split("<main>")[1]
    )


def test_empty_run_directory(tmp_path):
    (tmp_path / "config.yaml").write_text("pipeline: {run_clustering: false}\n")
    text = build_report(tmp_path).read_text()
    assert figure_names(text) == []
    assert "Collection (collect/): did not run (no folder)." in text
    with pytest.raises(ArtifactError, match="does not exist"):
        build_report(tmp_path / "nowhere")


def test_a_failed_build_keeps_the_previous_report(run_copy, monkeypatch):
    path = build_report(run_copy)
    before = path.read_text()

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(report_html, "page", broken)
    with pytest.raises(RuntimeError):
        build_report(run_copy)
    assert path.read_text() == before
    assert sorted(p.name for p in path.parent.iterdir()) == [REPORT_FILE]


def test_bidi_controls_in_a_run_name_are_neutralised(run_copy):
    path = run_copy / "config.yaml"
    config = yaml.safe_load(path.read_text())
    config["output"]["name"] = "invoice\u202egnp.exe \u2066x\u2069"
    path.write_text(yaml.safe_dump(config, allow_unicode=True))
    text = build_report(run_copy).read_text()
    assert not any(c in text for c in "\u202e\u2066\u2069")
    assert "invoice&lt;U+202E&gt;gnp.exe &lt;U+2066&gt;x&lt;U+2069&gt;" in text
