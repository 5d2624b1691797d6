"""The report's sections: the overview (run, stages, figures) and one card per selected feature."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

from saeinverse.report import figures as F
from saeinverse.report import result_figures as R
from saeinverse.report.cards import dashboard_html
from saeinverse.report.loaders import STAGES, STATUS_TEXT, RunArtifacts
from saeinverse.report.markup import Markup, esc, fmt, kv_table
from saeinverse.report.tokens import exemplar_rows, inversion_rows, token_block_html

Sink = Callable[..., str]
"""``FigureSink``: (figure or None, name, note when missing) -> HTML."""

HEATMAP_LEGEND = Markup(
    '<p class="note">Each token is shaded by the feature\'s activation ÷ its dataset maximum '
    '<span class="legend-swatch"></span>; a dotted underline marks a token whose activation '
    "was not saved (unknown, not zero); a red outline one above the dataset maximum.</p>"
)


def section(anchor: str, title: str, inner: str) -> str:
    return f'<section id="{esc(anchor)}"><h2>{esc(title)}</h2>{inner}</section>\n'


def _omitted(run: RunArtifacts, stage: str) -> str:
    state = run.status.get(stage, "missing")
    title = next((s.title for s in STAGES if s.name == stage), stage)
    return f"{title} is not in this report: {STATUS_TEXT.get(state, state)}."


# ----------------------------------------------------------------------------- overview


def overview(run: RunArtifacts, figures: Sink) -> str:
    """Run summary and stages, then collection, clustering and results sections."""
    return (
        _run_section(run)
        + _collection_section(run, figures)
        + _cluster_section(run, figures)
        + _results_section(run, figures)
    )


def _run_section(run: RunArtifacts) -> str:
    models, stats = run.models or {}, run.stats
    rows = [
        ("run directory", str(run.root.resolve())),
        ("model", models.get("model") or run.config.get("model", {}).get("name")),
        ("SAE hook", models.get("hook_name")),
        ("SAE features (d_sae)", models.get("d_sae") or getattr(stats, "d_sae", None)),
        ("d_model", models.get("d_model")),
        ("prompts", stats.n_prompts if stats is not None else None),
        ("tokens (position 0 excluded)" if getattr(stats, "first_position", 0) else "tokens",
         stats.n_tokens if stats is not None else None),
        ("seed", run.config.get("seed")),
        ("created", run.meta.get("created")),
        ("updated", run.meta.get("updated")),
        ("versions", ", ".join(f"{k} {v}" for k, v in (run.meta.get("versions") or {}).items())),
    ]  # fmt: skip
    timings = run.meta.get("stages") or {}
    stage_rows = []
    for stage in STAGES:
        state = run.status.get(stage.name, "missing")
        seconds = timings.get(stage.name, {}).get("seconds")
        text = STATUS_TEXT[state] + (
            f" ({seconds:.1f} s)" if seconds is not None and state == "done" else ""
        )
        stage_rows.append((stage.title, Markup(f'<span class="status-{state}">{esc(text)}</span>')))
    notes = "".join(f"<li>{esc(n)}</li>" for n in run.notes)
    inner = (
        f'<div class="grid"><div>{kv_table(rows)}</div><div>{kv_table(stage_rows)}</div></div>'
        + (f'<h3>Notes</h3><ul class="notes">{notes}</ul>' if notes else "")
    )
    return section("overview", "Overview", inner)


def _collection_section(run: RunArtifacts, figures: Sink) -> str:
    if run.stats is None:
        return section(
            "collection", "Features", f'<p class="note">{esc(_omitted(run, "collect"))}</p>'
        )
    parts = []
    if run.feature_set is not None:
        summary = run.feature_set.summary()
        rows = [(k.replace("_", " "), v) for k, v in summary.items()]
        parts.append("<h3>Filtering</h3>" + kv_table(rows))
    else:
        parts.append(f'<p class="note">{esc(_omitted(run, "filter"))}</p>')
    parts.append(figures(F.density_histogram(run.stats, run.feature_set), "density-histogram",
                         "No feature fired: there is no density to plot."))  # fmt: skip
    parts.append(
        figures(F.entropy_density(run.stats, run.feature_set, run.filtering), "entropy-density")
    )
    return section("collection", "Features: density, entropy and filtering", "".join(parts))


def _cluster_section(run: RunArtifacts, figures: Sink) -> str:
    clusters = run.clusters
    if clusters is None:
        return section(
            "clusters", "Clusters", f'<p class="note">{esc(_omitted(run, "cluster"))}</p>'
        )
    summary = clusters.summary()
    rows = [
        ("features clustered", summary["n_features"]),
        ("clusters", summary["n_clusters"]),
        ("noise fraction", summary["noise_fraction"]),
        ("silhouette (clustering space)", summary["silhouette"]),
        ("silhouette (cosine, vectors)", summary["silhouette_cosine"]),
        ("vectors / method", f"{summary['vectors_kind']} / {summary['method']}"),
    ]
    messages = "".join(f"<li>{esc(m)}</li>" for m in summary.get("messages") or [])
    parts = [kv_table(rows) + (f'<ul class="notes">{messages}</ul>' if messages else "")]
    if run.config.get("clustering", {}).get("visualize_clusters", True):
        parts.append(figures(F.cluster_map(clusters, run.stats, run.explanations, run.selected_ids),
                             "cluster-map"))  # fmt: skip
    else:
        parts.append('<p class="note">The cluster map is off (clustering.visualize_clusters).</p>')
    parts.append(figures(F.prompt_feature_heatmaps(run.stats, clusters), "prompt-feature-heatmap",
                         "The prompts × features heatmaps need the collection statistics."))  # fmt: skip
    if run.analysis is not None and len(run.analysis):
        parts.append("<h3>Cluster analysis</h3>" + _analysis_table(run.analysis))
    return section("clusters", "Clusters", "".join(parts))


def _analysis_table(analysis: Any, shown: int = 25) -> str:
    """One row per cluster; past the first ``shown``, the rest fold into a <details>."""
    head = (
        "<tr><th>cluster</th><th>size</th><th>cohesion</th><th>top tokens</th>"
        "<th>top prompt</th></tr>"
    )
    rows = []
    for r in analysis.records:
        tokens = ", ".join(repr(t) for t in (r.get("top_tokens") or [])[:6])
        prompt = ((r.get("top_prompts") or [""])[:1] or [""])[0] or ""
        name = "noise" if r["cluster"] == -1 else r["cluster"]
        rows.append(
            f"<tr><td>{esc(name)}</td><td>{esc(r['size'])}</td><td>{fmt(r.get('cohesion'), 3)}</td>"
            f"<td><code>{esc(tokens)}</code></td><td>{esc(prompt[:120])}</td></tr>"
        )
    table = f'<table class="kv">{head}{"".join(rows[:shown])}</table>'
    if len(rows) > shown:
        rest = f'<table class="kv">{head}{"".join(rows[shown:])}</table>'
        table += f"<details><summary>{len(rows) - shown} more groups</summary>{rest}</details>"
    return table


def _median(values: list[float | None]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _reference_names(records: list[Any]) -> str:
    """The reference maxima the ratios divide by, named ("reference max over N tokens")."""
    return ", ".join(sorted({getattr(r, "reference_name", "dataset max") for r in records}))


def _results_section(run: RunArtifacts, figures: Sink) -> str:
    order = run.selected_ids
    parts = []
    if run.inversions:
        records = list(run.inversions.values())
        rows = [
            ("features inverted", len(records)),
            ("ratios divide by", _reference_names(records)),
            (
                "median headline (fluent) ÷ reference max",
                _median([r.headline_ratio for r in records]),
            ),
            (
                "features with a headline within the real-text bound",
                f"{sum(r.headline is not None for r in records)} of {len(records)}",
            ),
            (
                "median unconstrained best ÷ reference max",
                _median([r.refined_ratio for r in records]),
            ),
            ("median projected ÷ reference max", _median([r.projected_ratio for r in records])),
            (
                "median sequence-equivalents spent (token-layers)",
                _median([r.forward_passes for r in records]),
            ),
            ("seconds per feature", _median([r.seconds for r in records])),
        ]
        parts.append(
            kv_table(rows)
            + figures(R.activation_ratios(run.inversions, order), "activation-ratios")
        )
    else:
        parts.append(f'<p class="note">{esc(_omitted(run, "invert"))}</p>')
    if run.explanations:
        parts.append(figures(R.explanation_scores(run.explanations, order), "explanation-scores",
                             "The explanations were not scored."))  # fmt: skip
    else:
        parts.append(f'<p class="note">{esc(_omitted(run, "explain"))}</p>')
    return section("inversion", "Inversion and explanations", "".join(parts))


# ----------------------------------------------------------------------------- feature cards


def feature_cards(run: RunArtifacts, figures: Sink) -> str:
    """One card per selected feature (or per inverted / explained one without a selection)."""
    ids = run.selected_ids
    if not ids:
        note = (
            _omitted(run, "select")
            if run.status.get("select") != "done"
            else "No feature was selected."
        )
        return section("features", "Selected features", f'<p class="note">{esc(note)}</p>')
    table = _feature_table(run.stats)
    selected = {f.feature_id: f for f in run.selection.features} if run.selection else {}
    cards = "".join(_card(run, fid, table, selected.get(fid), figures) for fid in ids)
    how = (
        (run.selection.description or f"chosen by {run.selection.score_name}")
        if run.selection
        else ""
    )
    intro = f'<p class="selection-rule">{len(ids)} features{": " + esc(how) if how else ""}.</p>'
    return section("features", "Selected features", intro + HEATMAP_LEGEND) + cards


def _feature_table(stats: Any) -> dict[str, Any]:
    """Per-feature statistics as numpy arrays, computed once from the saved FeatureStats."""
    if stats is None:
        return {}
    return {
        "density": stats.density.numpy(),
        "firing tokens": stats.firing_count.numpy(),
        "max activation": stats.max_activation.numpy(),
        "mean activation": stats.mean_activation.numpy(),
        "prompt entropy": stats.prompt_entropy.numpy(),
        "token entropy": stats.token_entropy.numpy(),
        "positional share": stats.positional_share.numpy(),
    }


def _card(run: RunArtifacts, fid: int, table: dict[str, Any], chosen: Any, figures: Sink) -> str:
    inversion, explanation = run.inversions.get(fid), run.explanations.get(fid)
    cluster = run.cluster_of(fid)
    badge = {None: "not clustered", -1: "noise"}.get(cluster, f"cluster {cluster}")
    rows: list[tuple[str, Any]] = [(name, float(values[fid])) for name, values in table.items()]
    if run.feature_set is not None:
        flags = run.feature_set.flags.get(fid) or run.feature_set.reasons.get(fid) or []
        rows.append(("flags", ", ".join(flags) or "none"))
    if chosen is not None:
        rows += [(f"score ({chosen.score_name})", chosen.score), ("rank in cluster", chosen.rank),
                 ("selectivity", chosen.selectivity)]  # fmt: skip
    tokens = run.stats.top_tokens(fid, 8) if run.stats is not None else []
    token_list = ", ".join(f"{t!r} {share:.0%}" for _, t, share in tokens)
    left = "<h3>Statistics</h3>" + (
        kv_table(rows) if rows else f'<p class="note">{esc(_omitted(run, "collect"))}</p>'
    )
    if token_list:
        left += (
            f"<h3>Top tokens (share of activation mass)</h3><p><code>{esc(token_list)}</code></p>"
        )
    right = _explanation_html(run, explanation)
    scale = (
        float(table["max activation"][fid]) if table else getattr(inversion, "dataset_max", None)
    )
    if run.cards is not None and fid in run.cards:
        dashboard = dashboard_html(run.cards[fid], set(run.selected_ids), figures)
    else:
        exemplars = token_block_html(exemplar_rows(run.stats, fid, explanation), scale,
                                     _omitted(run, "collect") if run.stats is None else "No exemplars: the feature never fired.")  # fmt: skip
        dashboard = (f'<p class="note">{esc(_omitted(run, "cards"))}</p>'
                     f"<h3>Top exemplars</h3>{exemplars}")  # fmt: skip
    inverted = _inversion_html(run, inversion, explanation, scale, figures)
    return (
        f'<article class="feature-card" id="feature-{fid}" data-feature="{fid}">'
        f'<h2>Feature {fid}<span class="badge">{esc(badge)}</span></h2>'
        f'<div class="grid"><div>{left}</div><div>{right}</div></div>'
        f"{dashboard}<h3>Inverted prompts</h3>{inverted}</article>\n"
    )


def _explanation_html(run: RunArtifacts, explanation: Any) -> str:
    if explanation is None:
        return f'<h3>Explanation</h3><p class="note">{esc(_omitted(run, "explain"))}</p>'
    rows = [(label, _score_cell(explanation, name)) for name, label in EXPLANATION_SCORES
            if getattr(explanation, name, None) is not None]  # fmt: skip
    rows += [("baseline explanation from", explanation.baseline_feature)]
    held = explanation.evidence or {}
    if held.get("n_heldout_positive") is not None:
        kinds = ", ".join(f"{k} {v}" for k, v in (held.get("hard_negative_kinds") or {}).items())
        origins = ", ".join(f"{k} {v}" for k, v in (held.get("heldout_origins") or {}).items())
        rows += [("held-out windows", f"{held['n_heldout_positive']} positives, "
                  f"{held.get('n_heldout_negative', 0)} random negatives, "
                  f"{held.get('n_heldout_hard_negative', 0)} hard negatives"
                  + (f" ({kinds})" if kinds else "") + (f"; prompts: {origins}" if origins else ""))]  # fmt: skip
    check = explanation.inversion or {}
    if check:
        rows += [("refined prompt fires again", "yes" if check.get("fires") else "no"),
                 ("its activation ÷ dataset max", check.get("ratio"))]  # fmt: skip
    sentence = getattr(explanation, "sentence", "") or explanation.explanation
    rule = getattr(explanation, "rule", "") or ""
    scored = getattr(explanation, "scored", None) or {}
    if scored:
        rows.insert(0, ("what each score read", "; ".join(f"{k}: {v}" for k, v in scored.items())))
    return (
        f"<h3>Explanation <small>({esc(explanation.explainer)})</small></h3>"
        f'<blockquote class="explanation">{esc(sentence)}</blockquote>'
        + (
            f"<details open><summary>Rule</summary><code>{esc(rule)}</code></details>"
            if rule
            else ""
        )
        + kv_table(rows)
    )


EXPLANATION_SCORES = (
    ("detection", "detection (random negatives)"),
    ("detection_hard", "detection (hard negatives)"),
    ("fuzzing", "fuzzing"),
    ("embedding", "embedding judge AUC (random)"),
    ("embedding_hard", "embedding judge AUC (hard)"),
)
"""Explanation scores shown on a feature card, by result attribute."""


def _score_cell(explanation: Any, name: str) -> str:
    """'0.84 [0.77, 0.90] · shuffled 0.52 [0.45, 0.60] · beats (50 + 50 items)', or the bare value
    for an artifact without intervals."""
    value = getattr(explanation, name)
    record = (getattr(explanation, "scores", None) or {}).get(name) or {}
    if record.get("low") is None:
        base = getattr(explanation, f"baseline_{name}", None)
        return f"{value:.2f}" + ("" if base is None else f" · shuffled {base:.2f}")
    text = f"{value:.2f} [{record['low']:.2f}, {record['high']:.2f}]"
    if record.get("baseline") is not None:
        text += (f" · shuffled {record['baseline']:.2f} [{record['baseline_low']:.2f}, "
                 f"{record['baseline_high']:.2f}] · {record.get('verdict')}")  # fmt: skip
    return text + f" ({record.get('n_positive')} + {record.get('n_negative')} items)"


def _inversion_html(
    run: RunArtifacts, inversion: Any, explanation: Any, scale: Any, figures: Sink
) -> str:
    if inversion is None:
        return f'<p class="note">{esc(_omitted(run, "invert"))}</p>'
    rows = inversion_rows(inversion, run.stats, explanation)
    block = token_block_html(rows, scale, "No prompt was saved.")
    passes = ", ".join(f"{k} {v:.0f}" for k, v in (inversion.forward_passes_by_stage or {}).items())
    bound = getattr(inversion, "fluency_bound", None) or {}
    info = kv_table([
        ("headline bound (real-text cross-entropy)",
         f"≤ {bound['cross_entropy']:.2f} nats/byte: q{bound['quantile']:g} of {bound['n_windows']} real "
         f"{bound['length']}-token windows (p10 / p50 / p90 = {bound['p10']:.2f} / "
         f"{bound['p50']:.2f} / {bound['p90']:.2f})" if bound else "not measured"),
        (getattr(inversion, "reference_name", "dataset max"), getattr(inversion, "reference", None)),
        ("soft prompt activation (not a real prompt)", inversion.soft_activation),
        ("activation read at", f"{inversion.position} position"),
        ("dataset max (the run's collection)", inversion.dataset_max),
        ("sequence-equivalents spent (token-layers ÷ one prompt to the hook)",
         f"{inversion.forward_passes:.0f} ({passes})" if passes else inversion.forward_passes),
        ("seconds", inversion.seconds),
    ])  # fmt: skip
    front = figures(R.front_plot(inversion), f"front-{inversion.feature_id}",
                    "No front was saved.")  # fmt: skip
    curve = figures(R.optimisation_curve(inversion), f"optimisation-{inversion.feature_id}",
                    "No optimisation trajectory was saved.")  # fmt: skip
    return block + front + info + curve
