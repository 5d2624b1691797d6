"""Token heatmaps: escaped tokens, honest shading, and the per-token activations each source gives."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest

from saeinverse.invert import Inversion
from saeinverse.report.tokens import (
    TokenRow,
    exemplar_rows,
    inversion_rows,
    shade,
    token_heatmap_html,
)


def alphas(html_text: str) -> list[float | None]:
    found = re.findall(r'<span class="tok[^"]*" style="([^"]*)"', html_text)
    return [
        float(m.group(1)) if (m := re.search(r"rgba\(234,88,12,([\d.]+)\)", s)) else None
        for s in found
    ]


def test_tokens_are_escaped_and_shaded_by_activation_over_scale():
    row = TokenRow("<label>", ["</span>", " &", '"q"', "\n"], [0.0, 2.0, None, 8.0], 8.0, "a<b")
    out = token_heatmap_html(row, scale=4.0)
    assert "</span> " not in out and "&lt;/span&gt;" in out and " &amp;" in out
    assert "&quot;q&quot;" in out and "↵" in out and "&lt;label&gt;" in out and "a&lt;b" in out
    assert alphas(out) == [0.0, 0.5, None, 1.0]
    assert out.count('class="tok unknown"') == 1 and out.count('class="tok over"') == 1
    assert 'title="&#x27;&lt;/span&gt;&#x27;: 0"' in out


def test_shade_without_scale_or_value():
    assert shade(None, 1.0) == "" and shade(float("nan"), 1.0) == ""
    assert shade(3.0, 0.0).endswith("0.000)")


@pytest.fixture(scope="module")
def stats(tiny_run):
    from saeinverse.report import load_run

    return load_run(tiny_run).stats


def test_exemplar_rows_shade_only_saved_activations(stats):
    fid = int(stats.max_activation.argmax())
    rows = exemplar_rows(stats, fid, n=3)
    best = stats.top_exemplars(fid, 1)[0]
    assert rows[0].value == pytest.approx(best.activation)
    assert rows[0].activations[best.target_index] == pytest.approx(best.activation)
    known = {(e.prompt_index, e.position) for e in stats.top_exemplars(fid)}
    for j, act in enumerate(rows[0].activations):
        assert (act is not None) == ((best.prompt_index, best.context_start + j) in known)


def test_exemplar_rows_prefer_saved_evidence_sequences(stats):
    saved = {"sequences": [
        {"source": "exemplar", "tokens": ["a", "b"], "token_ids": [70, 71], "activations": [0.0, 2.5], "prompt_index": 4},
        {"source": "decile:3", "tokens": ["c"], "token_ids": [72], "activations": [1.0], "prompt_index": 5},
    ]}  # fmt: skip
    rows = exemplar_rows(stats, 0, SimpleNamespace(evidence=saved))
    assert len(rows) == 1 and rows[0].tokens == ["a", "b"] and rows[0].activations == [0.0, 2.5]
    assert rows[0].value == 2.5 and "prompt 4" in rows[0].label


def record(**extra) -> Inversion:
    return Inversion(
        feature_id=3, soft_activation=9.0, projected_tokens=[70, 71], projected_text="ab",
        projected_activation=1.0, refined_tokens=[70, 72], refined_text="ac", refined_activation=2.0,
        dataset_max=4.0, position="last", refined_cross_entropy=3.5,
        pareto=[{"tokens": [70, 72], "text": "ac", "activation": 2.0, "cross_entropy": 3.5},
                {"tokens": [71, 71], "text": "bb", "activation": 1.5, "cross_entropy": 2.0}],
        **extra,
    )  # fmt: skip


def test_inverted_prompts_without_per_token_activations_shade_the_read_position():
    table = SimpleNamespace(token_strings={70: "a", 71: "b", 72: "<"})
    rows = inversion_rows(record(), table)
    assert [r.tokens for r in rows] == [["a", "b"], ["a", "<"], ["b", "b"]]  # refined not repeated
    assert [r.activations for r in rows] == [[None, 1.0], [None, 2.0], [None, 1.5]]
    assert rows[1].detail == "0.50× dataset max · cross-entropy 3.50 nats/byte"


def test_inverted_prompts_use_saved_per_token_activations():
    table = SimpleNamespace(token_strings={70: "a", 71: "b", 72: "c"})
    rows = inversion_rows(record(), table)
    inv = record()
    inv.refined_token_activations = [0.25, 2.0]
    assert inversion_rows(inv, table)[1].activations == [0.25, 2.0]
    evidence = {"sequences": [{"source": "refined", "tokens": ["a", "c"], "token_ids": [70, 72],
                               "activations": [0.5, 2.0]}]}  # fmt: skip
    rows = inversion_rows(record(), table, SimpleNamespace(evidence=evidence))
    assert rows[1].activations == [0.5, 2.0]


def test_unknown_token_strings_show_the_decoded_text():
    rows = inversion_rows(record(), SimpleNamespace(token_strings={70: "a"}))
    assert rows[0].tokens == ["ab"] and rows[0].activations == [None]


def test_token_strings_saved_with_the_prompt_win():
    inv = record()
    inv.refined_token_strings = ["x", "<y>"]
    rows = inversion_rows(inv, SimpleNamespace(token_strings={}))
    assert rows[1].tokens == ["x", "<y>"] and rows[1].activations == [None, 2.0]
    assert rows[0].tokens == ["ab"]
