"""Figures of the inversion and explanation results, drawn from the saved records."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import plotly.graph_objects as go

from saeinverse.report.figures import COLORS, new_figure, plot_text


def _finite(values: Sequence[Any]) -> list[float | None]:
    """Floats with NaN / inf / missing turned into gaps."""
    out: list[float | None] = []
    for v in values:
        out.append(float(v) if isinstance(v, int | float) and math.isfinite(v) else None)
    return out


def optimisation_curve(inversion: Any) -> go.Figure | None:
    """One feature's optimisation: activation per step of the soft stage, then of refinement
    (and the refined prompt's cross-entropy when it was traced), against the dataset maximum."""
    trajectory = inversion.trajectory or {}
    soft = _finite(trajectory.get("soft_activation", []))
    objective = _finite(trajectory.get("soft_objective", []))
    refine = _finite(trajectory.get("refine_activation", []))
    cross_entropy = _finite(trajectory.get("refine_cross_entropy", []))
    if not (soft or refine):
        return None
    fig = new_figure(
        f"Feature {inversion.feature_id}: optimisation",
        height=320,
        margin=dict(l=55, r=55, t=45, b=45),
        xaxis_title="step (soft stage, then refinement)",
        yaxis_title="activation",
        legend=dict(orientation="h", y=-0.25),
    )
    if soft:
        fig.add_trace(go.Scatter(y=soft, mode="lines", name="soft stage", line_color=COLORS[0]))
    if objective and any(o is not None for o in objective):
        fig.add_trace(
            go.Scatter(y=objective, mode="lines", name="soft objective", visible="legendonly",
                       line=dict(color=COLORS[0], dash="dot"))
        )  # fmt: skip
    if refine:
        steps = list(range(len(soft), len(soft) + len(refine)))
        fig.add_trace(
            go.Scatter(x=steps, y=refine, mode="lines", name="refinement", line_color=COLORS[1])
        )
    if cross_entropy and any(c is not None for c in cross_entropy):
        steps = list(range(len(soft), len(soft) + len(cross_entropy)))
        fig.add_trace(
            go.Scatter(x=steps, y=cross_entropy, mode="lines", name="cross-entropy (nats/byte)",
                       yaxis="y2", line=dict(color=COLORS[3], dash="dash"))
        )  # fmt: skip
        fig.update_layout(yaxis2=dict(title="cross-entropy", overlaying="y", side="right"))
    if inversion.dataset_max:
        fig.add_hline(
            y=inversion.dataset_max, line=dict(color="#111827", dash="dot", width=1),
            annotation_text="dataset max", annotation_position="top left",
        )  # fmt: skip
    return fig


def _names(records: Sequence[Any]) -> str:
    return ", ".join(sorted({getattr(r, "reference_name", "dataset max") for r in records}))


def activation_ratios(inversions: dict[int, Any], order: Sequence[int] | None = None):
    """Per feature, the activation its prompts reach as a ratio to its dataset maximum."""
    ids = [f for f in (order or sorted(inversions)) if f in inversions]
    if not ids:
        return None
    records = [inversions[f] for f in ids]
    with_max = all(getattr(r, "reference", r.dataset_max) for r in records)
    names = [f"f{f}" for f in ids]
    fig = new_figure(
        "Activation reached per feature"
        + (f" ÷ its {_names(records)}" if with_max else " (no reference max: raw activations)"),
        height=400,
        barmode="group",
        xaxis=dict(title="feature", type="category"),
        yaxis_title="ratio to reference max" if with_max else "activation",
    )

    def value(record: Any, activation: float | None) -> float | None:
        if activation is None:
            return None
        return (
            activation / getattr(record, "reference", record.dataset_max)
            if with_max
            else activation
        )

    series = [
        ("projected prompt", [r.projected_activation for r in records], COLORS[0]),
        ("refined prompt", [r.refined_activation for r in records], COLORS[1]),
    ]
    fluent = [max((p.get("activation") or 0.0 for p in r.pareto), default=None) for r in records]
    for name, raw, color in series:
        fig.add_trace(
            go.Bar(x=names, y=[value(r, a) for r, a in zip(records, raw, strict=True)], name=name,
                   marker_color=color, customdata=raw,
                   hovertemplate="%{x}: %{y:.3f}<br>activation %{customdata:.4g}<extra>%{fullData.name}</extra>")
        )  # fmt: skip
    if any(f is not None for f in fluent):
        fig.add_trace(
            go.Scatter(x=names, y=[value(r, a) for r, a in zip(records, fluent, strict=True)],
                       mode="markers", name="best front prompt",
                       marker=dict(symbol="diamond", size=9, color=COLORS[2]))
        )  # fmt: skip
    fig.add_trace(
        go.Scatter(x=names, y=[value(r, r.soft_activation) for r in records], mode="markers",
                   name="soft prompt (not a real prompt)", visible="legendonly",
                   marker=dict(symbol="x", size=9, color="#6b7280"))
    )  # fmt: skip
    if with_max:
        fig.add_hline(y=1.0, line=dict(color="#111827", dash="dot", width=1),
                      annotation_text="reference max", annotation_position="top left")  # fmt: skip
    return fig


def explanation_scores(explanations: dict[int, Any], order: Sequence[int] | None = None):
    """Detection and fuzzing balanced accuracy per feature, beside the shuffled baselines."""
    ids = [f for f in (order or sorted(explanations)) if f in explanations]
    records = [explanations[f] for f in ids]
    if not any(r.detection is not None or r.fuzzing is not None for r in records):
        return None
    names = [f"f{f}" for f in ids]
    fig = new_figure(
        "Explanation scores on held-out evidence (balanced accuracy; chance 0.5)",
        height=380,
        barmode="group",
        xaxis=dict(title="feature", type="category"),
        yaxis=dict(title="balanced accuracy", range=[0, 1.05]),
    )
    series = [
        ("detection", "detection", COLORS[0], None),
        ("detection, shuffled", "baseline_detection", COLORS[0], "/"),
        ("fuzzing", "fuzzing", COLORS[1], None),
        ("fuzzing, shuffled", "baseline_fuzzing", COLORS[1], "/"),
    ]
    for name, attribute, color, pattern in series:
        fig.add_trace(
            go.Bar(x=names, y=[getattr(r, attribute) for r in records], name=name,
                   marker=dict(color=color, opacity=0.45 if pattern else 1.0,
                               pattern=dict(shape=pattern or "")),
                   text=[plot_text(r.explanation, 90) for r in records], textposition="none",
                   hovertemplate="%{x}: %{y:.2f}<br>%{text}<extra>%{fullData.name}</extra>")
        )  # fmt: skip
    fig.add_hline(y=0.5, line=dict(color="#111827", dash="dot", width=1))
    return fig


def front_plot(inversion: Any) -> go.Figure | None:
    """One feature's front: activation ÷ reference max against the prompt's cross-entropy.

    The real-text band (the 10th–90th percentile of real windows' cross-entropy) is shaded, the
    headline bound drawn as a line; the headline and the unconstrained best are marked.
    """
    points = [p for p in (inversion.pareto or []) if p.get("cross_entropy") is not None]
    if not points:
        return None
    reference = getattr(inversion, "reference", None) or None
    name = getattr(inversion, "reference_name", "reference max")

    def y(activation: float) -> float:
        return activation / reference if reference else activation

    fig = new_figure(
        f"Feature {inversion.feature_id}: fluent ↔ unconstrained front",
        height=320,
        margin=dict(l=55, r=20, t=45, b=45),
        xaxis_title="cross-entropy of the prompt (nats per byte; lower reads more like text)",
        yaxis_title=f"activation ÷ {name}" if reference else "activation",
        legend=dict(orientation="h", y=-0.3),
    )
    bound = inversion.fluency_bound or {}
    if bound:
        fig.add_vrect(
            x0=bound["p10"], x1=bound["p90"], fillcolor="#10b981", opacity=0.12, line_width=0,
            annotation_text=f"real text p10–p90 ({bound['n_windows']} windows)",
            annotation_position="top left",
        )  # fmt: skip
        fig.add_vline(
            x=bound["cross_entropy"], line=dict(color="#047857", dash="dash", width=1),
            annotation_text=f"bound q{bound['quantile']:g}", annotation_position="bottom right",
        )  # fmt: skip
    fig.add_trace(
        go.Scatter(
            x=[p["cross_entropy"] for p in points], y=[y(p["activation"]) for p in points],
            mode="lines+markers", name="front", line=dict(color=COLORS[1], shape="hv"),
            text=[plot_text(p.get("text", ""), 80) for p in points],
            hovertemplate="CE %{x:.2f}: %{y:.3f}<br>%{text}<extra></extra>",
        )
    )  # fmt: skip
    marks = [("unconstrained best", inversion.refined_activation, inversion.refined_cross_entropy,
              "x", COLORS[3])]  # fmt: skip
    if inversion.headline:
        h = inversion.headline
        marks.insert(0, ("headline", h["activation"], h["cross_entropy"], "star", COLORS[2]))
    for label, activation, ce, symbol, color in marks:
        if ce is None:
            continue
        fig.add_trace(
            go.Scatter(x=[ce], y=[y(activation)], mode="markers", name=label,
                       marker=dict(symbol=symbol, size=13, color=color))
        )  # fmt: skip
    if reference:
        fig.add_hline(y=1.0, line=dict(color="#111827", dash="dot", width=1))
    return fig
