"""The dashboard part of a feature card, drawn from the run's saved ``FeatureCard``s.

Five components, each in an element with a ``data-component`` attribute (the browser test finds
them there): ``logits`` (the tokens the decoder direction promotes and suppresses, with values),
``histogram`` (the activation histogram, density in its title), ``exemplars`` and ``intervals``
(token windows with every token shaded by its own activation, the value on hover) and
``neighbours`` (nearest features by decoder cosine, linked when they have a card in the report).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import plotly.graph_objects as go

from saeinverse.report.figures import new_figure, plot_text
from saeinverse.report.markup import esc, fmt
from saeinverse.report.tokens import TokenRow, display_token, token_block_html

Sink = Callable[..., str]


def activation_histogram(card: Any) -> go.Figure | None:
    """The feature's firing activations in collection's log-spaced bins; density in the title."""
    if not card.histogram:
        return None
    fig = new_figure(plot_text(card.histogram_title), height=300,
                     margin=dict(l=50, r=10, t=40, b=90))  # fmt: skip
    labels = [f"{b.low:.3g}–{b.high:.3g}" for b in card.histogram]
    fig.add_trace(go.Bar(
        x=labels, y=[b.count for b in card.histogram], marker_color="#ea580c",
        hovertemplate="activation %{x}<br>%{y} tokens<extra></extra>",
    ))  # fmt: skip
    fig.update_xaxes(title_text="activation (log-spaced bins)", title_standoff=8, tickangle=-45)
    fig.update_yaxes(title_text="tokens")
    return fig


def window_rows(windows: Sequence[Any], label: str) -> list[TokenRow]:
    """Token windows as heatmap rows: every token with its own activation."""
    return [
        TokenRow(f"{label} {i + 1} · prompt {w.prompt_index}, position {w.start + w.peak}",
                 list(w.tokens), [float(v) for v in w.values], w.activation)
        for i, w in enumerate(windows)
    ]  # fmt: skip


def dashboard_html(card: Any, in_report: set[int], figures: Sink, n_exemplars: int = 8) -> str:
    """The five dashboard components of one card, as HTML."""
    fid, scale = card.feature_id, card.max_activation
    logits = (
        f'<div class="grid">{_logit_table("Promotes", card.positive_logits)}'
        f"{_logit_table('Suppresses', card.negative_logits)}</div>"
        if card.logit_path
        else '<p class="note">The SAE\'s hook has no direct path to the logits.</p>'
    )
    path = f" <small>({esc(card.logit_path)})</small>" if card.logit_path else ""
    exemplars = token_block_html(window_rows(card.exemplars[:n_exemplars], "exemplar"), scale,
                                 "No exemplars: the feature never fired.")  # fmt: skip
    return (
        f'<div class="grid"><div data-component="logits"><h3>Logit effects{path}</h3>{logits}</div>'
        f'<div data-component="histogram"><h3>Activation histogram</h3>'
        f"{figures(activation_histogram(card), f'histogram-{fid}', 'The feature never fired.')}"
        f"</div></div>"
        f'<div data-component="neighbours"><h3>Nearest features (decoder cosine)</h3>'
        f"{_neighbours(card, in_report)}</div>"
        f'<div data-component="exemplars"><h3>Top exemplars</h3>{exemplars}</div>'
        f'<div data-component="intervals"><h3>Examples across the activation range</h3>'
        f"{_intervals(card, scale)}</div>"
    )


def _logit_table(title: str, effects: Sequence[Any]) -> str:
    rows = "".join(
        f'<tr><td class="logit-token"><code>{esc(display_token(e.token))}</code></td>'
        f'<td class="logit-value">{e.value:+.3f}</td></tr>'
        for e in effects
    )
    return f'<div><h4>{esc(title)}</h4><table class="kv logits">{rows}</table></div>'


def _neighbours(card: Any, in_report: set[int]) -> str:
    items = []
    for n in card.neighbours:
        name = f"feature {n.feature_id}"
        link = (
            f'<a href="#feature-{n.feature_id}">{name}</a>' if n.feature_id in in_report else name
        )
        items.append(
            f'<li class="neighbour">{link} <span class="value">{fmt(n.cosine, 3)}</span></li>'
        )
    return f'<ul class="neighbours">{"".join(items)}</ul>' if items else '<p class="note">none</p>'


def _intervals(card: Any, scale: float) -> str:
    shown = [i for i in reversed(card.intervals) if i.samples]
    if not shown:
        return '<p class="note">No prompt fired in any interval.</p>'
    parts = []
    for interval in shown:
        head = (f"[{interval.low:.3g}, {interval.high:.3g}): {len(interval.samples)} of "
                f"{interval.n_prompts} prompts")  # fmt: skip
        rows = window_rows(interval.samples, "sample")
        parts.append(f'<div class="interval"><h4>{esc(head)}</h4>'
                     f"{token_block_html(rows, scale, '')}</div>")  # fmt: skip
    return "".join(parts)
