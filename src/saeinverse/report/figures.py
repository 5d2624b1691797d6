"""The report's Plotly figures, each drawn from saved artifacts (never recomputed).

Every function takes the loaded artifacts it needs and returns a ``plotly.graph_objects.Figure``,
or None when the artifacts hold nothing to draw. Text that reaches Plotly (hover labels, tick
labels) passes through ``plot_text``: Plotly renders a subset of HTML, and tokens contain ``<``.
"""

from __future__ import annotations

import html
import math
from typing import Any

import numpy as np
import plotly.graph_objects as go

from saeinverse.report.markup import neutralise_bidi

COLORS = (
    "#2563eb", "#ea580c", "#16a34a", "#9333ea", "#dc2626", "#0891b2", "#ca8a04", "#db2777",
    "#4f46e5", "#65a30d", "#0d9488", "#c026d3", "#b45309", "#1d4ed8", "#be123c", "#15803d",
)  # fmt: skip
NOISE_COLOR = "#a3a3a3"
LAYOUT = dict(
    template="none",
    font=dict(family="system-ui, -apple-system, Segoe UI, sans-serif", size=12, color="#1f2937"),
    paper_bgcolor="white",
    plot_bgcolor="#fafafa",
    margin=dict(l=60, r=20, t=50, b=50),
    hoverlabel=dict(align="left"),
    legend=dict(bgcolor="rgba(255,255,255,0.8)"),
)


def plot_text(text: Any, limit: int | None = None) -> str:
    """Text safe for Plotly's labels: newlines visible, shortened to ``limit``, HTML-escaped."""
    text = str(text).replace("\n", "↵").replace("\t", "⇥")
    if limit is not None and len(text) > limit:
        text = text[: limit - 1] + "…"
    return html.escape(neutralise_bidi(text), quote=False)


def new_figure(title: str, height: int = 420, **layout: Any) -> go.Figure:
    fig = go.Figure()
    fig.update_layout(**{**LAYOUT, **layout}, title=dict(text=title, x=0.01), height=height)
    return fig


def _log10(values: np.ndarray) -> np.ndarray:
    return np.log10(np.clip(values, 1e-300, None))


def _status_of_features(stats: Any, feature_set: Any) -> list[str]:
    """Per feature: 'kept', its first drop reason, or 'collected' without a filter result."""
    if feature_set is None:
        return ["collected"] * int(stats.d_sae)
    status = ["kept"] * int(stats.d_sae)
    for fid, reasons in feature_set.reasons.items():
        status[int(fid)] = reasons[0]
    return status


# ----------------------------------------------------------------------------- collection


def density_histogram(stats: Any, feature_set: Any = None) -> go.Figure | None:
    """Histogram of log10 firing density, kept and dropped features stacked."""
    density = stats.density.numpy()
    alive = density > 0
    if not alive.any():
        return None
    n_dead = int((~alive).sum())
    fig = new_figure(
        f"Firing density of {int(stats.d_sae)} features ({n_dead} dead, not shown)",
        barmode="stack",
        xaxis_title="log10 density (fraction of tokens on which the feature fires)",
        yaxis_title="features",
    )
    logd = _log10(density)
    lo, hi = float(logd[alive].min()), float(logd[alive].max())
    bins = dict(start=math.floor(lo * 4) / 4, end=math.ceil(hi * 4) / 4 + 0.25, size=0.125)
    groups = {"all features": alive}
    if feature_set is not None:
        kept = np.zeros(len(density), dtype=bool)
        kept[feature_set.kept.numpy()] = True
        groups = {"kept": alive & kept, "dropped": alive & ~kept}
    for (name, mask), color in zip(groups.items(), (COLORS[0], NOISE_COLOR), strict=False):
        fig.add_trace(go.Histogram(x=logd[mask], xbins=bins, name=name, marker_color=color))
    return fig


def entropy_density(stats: Any, feature_set: Any = None, filtering: dict | None = None):
    """Prompt entropy against log10 density, coloured by filter outcome, with the kept band."""
    density = stats.density.numpy()
    alive = np.flatnonzero(density > 0)
    if not len(alive):
        return None
    entropy = stats.prompt_entropy.numpy()
    status = _status_of_features(stats, feature_set)
    fig = new_figure(
        "Prompt entropy against density (shaded: the band filtering keeps)",
        height=460,
        xaxis_title="log10 density",
        yaxis_title="prompt entropy (0: one prompt, 1: all prompts alike)",
        yaxis_range=[-0.03, 1.03],
    )
    _draw_bands(fig, filtering or {}, _log10(density[alive]))
    names = sorted({status[i] for i in alive}, key=lambda s: (s != "kept", s))
    for k, name in enumerate(names):
        ids = np.asarray([i for i in alive if status[i] == name], dtype=np.int64)
        color = COLORS[0] if name == "kept" else COLORS[1 + k % (len(COLORS) - 1)]
        fig.add_trace(
            go.Scatter(
                x=_log10(density[ids]),
                y=entropy[ids],
                mode="markers",
                name=plot_text(name),
                marker=dict(size=5, color=color, opacity=0.75),
                customdata=np.stack([ids, density[ids]], axis=1),
                hovertemplate="feature %{customdata[0]}<br>density %{customdata[1]:.3g}"
                "<br>prompt entropy %{y:.3f}<extra>%{fullData.name}</extra>",
            )
        )
    return fig


def _draw_bands(fig: go.Figure, filtering: dict, logd: np.ndarray) -> None:
    lo_d, hi_d = filtering.get("sparsity_min"), filtering.get("sparsity_max")
    lo_e, hi_e = filtering.get("entropy_threshold_low"), filtering.get("entropy_threshold_high")
    if None in (lo_d, hi_d, lo_e, hi_e):
        return
    x0, x1 = math.log10(max(lo_d, 1e-12)), math.log10(max(hi_d, 1e-12))
    fig.add_shape(
        type="rect", x0=x0, x1=x1, y0=lo_e, y1=hi_e, layer="below", line_width=0,
        fillcolor="rgba(37,99,235,0.08)",
    )  # fmt: skip
    line = dict(color="rgba(37,99,235,0.6)", dash="dash", width=1)
    for x in (x0, x1):
        fig.add_vline(x=x, line=line)
    for y in (lo_e, hi_e):
        fig.add_hline(y=y, line=line)
    fig.add_annotation(
        x=x1, y=hi_e, xanchor="right", yanchor="bottom", showarrow=False,
        text=f"kept: density {lo_d:g}–{hi_d:g}, entropy {lo_e:g}–{hi_e:g}",
        font=dict(size=11, color="#1d4ed8"),
    )  # fmt: skip
    span = [min(float(logd.min()), x0) - 0.25, max(float(logd.max()), x1) + 0.25]
    fig.update_xaxes(range=span)


# ----------------------------------------------------------------------------- clusters


def cluster_map(
    clusters: Any,
    stats: Any = None,
    explanations: dict[int, Any] | None = None,
    selected: list[int] | None = None,
    n_tokens: int = 5,
) -> go.Figure | None:
    """The 2-D UMAP map of the clustered features, one colour per cluster, selected ones starred."""
    if clusters is None or not len(clusters.feature_ids):
        return None
    explanations = explanations or {}
    xy = np.asarray(clusters.embedding_2d, dtype=float)
    ids = clusters.feature_ids.tolist()
    labels = clusters.labels.tolist()
    hover = [_feature_hover(f, c, stats, explanations.get(f), n_tokens) for f, c in zip(ids, labels, strict=True)]  # fmt: skip
    fig = new_figure(
        f"UMAP map of {len(ids)} features: {clusters.n_clusters} clusters "
        f"({clusters.vectors_kind} vectors, {clusters.method})",
        height=520,
        xaxis=dict(title="UMAP 1", zeroline=False),
        yaxis=dict(title="UMAP 2", zeroline=False),
    )
    for label in [*clusters.cluster_ids(), -1]:
        rows = [i for i, c in enumerate(labels) if c == label]
        if not rows:
            continue
        noise = label == -1
        fig.add_trace(
            go.Scatter(
                x=xy[rows, 0], y=xy[rows, 1], mode="markers",
                name="noise" if noise else f"cluster {label}",
                marker=dict(size=6 if noise else 8, opacity=0.5 if noise else 0.85,
                            color=NOISE_COLOR if noise else COLORS[label % len(COLORS)]),
                text=[hover[i] for i in rows], hovertemplate="%{text}<extra></extra>",
            )
        )  # fmt: skip
    chosen = [i for i, f in enumerate(ids) if f in set(selected or [])]
    if chosen:
        fig.add_trace(
            go.Scatter(
                x=xy[chosen, 0], y=xy[chosen, 1], mode="markers", name="selected",
                marker=dict(symbol="star", size=15, color="rgba(0,0,0,0)",
                            line=dict(color="#111827", width=1.5)),
                text=[hover[i] for i in chosen], hovertemplate="%{text}<extra>selected</extra>",
            )
        )  # fmt: skip
    return fig


def _feature_hover(fid: int, cluster: int, stats: Any, explanation: Any, n_tokens: int) -> str:
    lines = [f"<b>feature {fid}</b> · " + ("noise" if cluster == -1 else f"cluster {cluster}")]
    if stats is not None:
        tokens = ", ".join(repr(t) for _, t, _ in stats.top_tokens(fid, n_tokens))
        lines.append("top tokens: " + plot_text(tokens, 80))
    if explanation is not None:
        lines.append(
            "explanation: "
            + plot_text(getattr(explanation, "sentence", "") or explanation.explanation, 100)
        )
    return "<br>".join(lines)


def prompt_feature_heatmaps(
    stats: Any, clusters: Any, max_prompts: int = 30, max_features: int = 40, max_clusters: int = 30
) -> go.Figure | None:
    """Prompts × features per cluster (a menu picks the cluster): each prompt's max activation,
    divided by the feature's max over prompts; the prompts that drive the cluster most on top."""
    if clusters is None or stats is None:
        return None
    groups = clusters.cluster_ids()[:max_clusters] or ([-1] if len(clusters.feature_ids) else [])
    if not groups:
        return None
    fig = new_figure(
        "Prompts × features, per cluster (each prompt's max activation / the feature's max)",
        height=max(360, 16 * max_prompts + 190),
        margin=dict(l=60, r=20, t=110, b=60),
    )
    buttons = []
    for k, group in enumerate(groups):
        members = clusters.members(group)
        order = np.argsort(-stats.max_activation.numpy()[members], kind="stable")
        members = [int(f) for f in members[order][:max_features]]
        raw = stats.prompt_feature_dense(members).numpy().astype(float)
        peak = raw.max(axis=0)
        scaled = np.divide(raw, peak, out=np.zeros_like(raw), where=peak > 0)
        rows = np.argsort(-scaled.mean(axis=1), kind="stable")[:max_prompts]
        snippets = [f"{int(p)}: " + plot_text(stats.prompts[int(p)], 36) for p in rows]
        cells = [[f"{snippets[r]}<br>feature {f}" for f in members] for r in range(len(rows))]
        fig.add_trace(
            go.Heatmap(
                z=scaled[rows], customdata=raw[rows], text=cells, x=list(range(len(members))),
                y=list(range(len(rows))), visible=k == 0, colorscale="Oranges", zmin=0, zmax=1,
                colorbar=dict(title=dict(text="÷ feature max")),
                hovertemplate="prompt %{text}<br>activation %{customdata:.3g}"
                " (%{z:.2f} of the feature's max)<extra></extra>",
            )
        )  # fmt: skip
        name = "noise" if group == -1 else f"cluster {group}"
        axes = {
            "xaxis.tickvals": list(range(len(members))),
            "xaxis.ticktext": [str(f) for f in members],
            "yaxis.tickvals": list(range(len(rows))),
            "yaxis.ticktext": snippets,
        }
        buttons.append(dict(label=f"{name} ({len(clusters.members(group))})", method="update",
                            args=[{"visible": [j == k for j in range(len(groups))]}, axes]))  # fmt: skip
        if k == 0:
            fig.update_layout(**{key.replace(".", "_"): v for key, v in axes.items()})
    fig.update_layout(
        xaxis=dict(title="feature id", type="linear"),
        yaxis=dict(autorange="reversed", type="linear", automargin=True),
        updatemenus=[dict(buttons=buttons, x=0.0, y=1.02, xanchor="left", yanchor="bottom")],
    )
    return fig
