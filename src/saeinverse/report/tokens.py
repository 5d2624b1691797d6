"""Token heatmaps: each token of an exemplar or an inverted prompt shaded by the feature's activation.

Per-token activations come from saved artifacts only, best first:

1. the explanation stage's evidence sequences (``evidence["sequences"]``: tokens and every
   token's activation, for exemplars and refined prompts), when it saved them;
2. per-token activations saved on an ``Inversion`` (``<prompt>_token_activations``);
3. otherwise what collection and inversion saved: an exemplar's activation at its peak (and at
   any other top exemplar of the feature inside the same window), an inverted prompt's activation
   at its last token when it was read there. Tokens whose activation was not saved are drawn
   unshaded with a dotted underline: unknown, not zero.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from saeinverse.report.markup import esc


@dataclass
class TokenRow:
    """One line of a token heatmap."""

    label: str
    tokens: list[str]
    activations: list[float | None]
    """Activation on each token; None where it was not saved."""
    value: float | None = None
    """The headline activation (the exemplar's peak, the prompt's fresh-forward activation)."""
    detail: str = ""
    """Extra text after the value (ratio, cross-entropy)."""


# ----------------------------------------------------------------------------- sources


def evidence_sequences(explanation: Any, source: str) -> list[dict[str, Any]]:
    """The explanation's saved evidence sequences whose source starts with ``source``."""
    if explanation is None:
        return []
    found = (getattr(explanation, "evidence", None) or {}).get("sequences") or []
    return [s for s in found if isinstance(s, dict) and str(s.get("source", "")).startswith(source)]


def exemplar_rows(
    stats: Any, feature_id: int, explanation: Any = None, n: int = 8
) -> list[TokenRow]:
    """The feature's top exemplars as heatmap rows (fully shaded when the explanation saved them)."""
    saved = evidence_sequences(explanation, "exemplar")
    if saved:
        return [_row_from_sequence(s, f"exemplar {i + 1}") for i, s in enumerate(saved[:n])]
    if stats is None:
        return []
    everything = stats.top_exemplars(feature_id)
    known = {(e.prompt_index, e.position): e.activation for e in everything}
    rows = []
    for i, ex in enumerate(everything[:n]):
        acts = [
            known.get((ex.prompt_index, ex.context_start + j)) for j in range(len(ex.context_ids))
        ]
        rows.append(
            TokenRow(
                f"exemplar {i + 1} · prompt {ex.prompt_index}, position {ex.position}",
                list(ex.context_tokens),
                acts,
                ex.activation,
            )
        )
    return rows


def inversion_rows(
    inversion: Any, stats: Any = None, explanation: Any = None, n_pareto: int = 4
) -> list[TokenRow]:
    """The projected and refined prompts (and the Pareto prompts) of one inversion."""
    if inversion is None:
        return []
    table = getattr(stats, "token_strings", None) or {}
    refined_ids = list(inversion.refined_tokens)
    saved = next(
        (
            s
            for s in evidence_sequences(explanation, "refined")
            if s.get("token_ids") == refined_ids
        ),
        {},
    )
    headline = getattr(inversion, "headline", None)
    bound = (getattr(inversion, "fluency_bound", None) or {}).get("cross_entropy")
    prompts = []
    if bound is not None:
        longer = getattr(inversion, "lengthened_from", None)
        where = f" ({inversion.length} tokens: no exemplar fires in {longer})" if longer else ""
        prompts.append(
            (f"headline: most active within real-text cross-entropy ≤ {bound:.2f}{where}",
             (headline or {}).get("tokens") or [], (headline or {}).get("text")
             or "(no prompt fires within the bound)", (headline or {}).get("activation"),
             (headline or {}).get("cross_entropy"), None, None)
        )  # fmt: skip
        exemplar = getattr(inversion, "exemplar_window", None)
        if exemplar is not None:
            same = headline is not None and headline.get("tokens") == exemplar.get("tokens")
            prompts.append(
                ("best real window within the bound (top exemplars and reference windows)"
                 + (": the headline itself" if same else ": the headline is never below it"),
                 exemplar.get("tokens") or [],
                 exemplar.get("text", ""), exemplar.get("activation"),
                 exemplar.get("cross_entropy"), None, None)
            )  # fmt: skip
    prompts += [
        ("projected (soft stage, nearest tokens)", inversion.projected_tokens,
         inversion.projected_text, inversion.projected_activation, None,
         getattr(inversion, "projected_token_activations", None),
         getattr(inversion, "projected_token_strings", None)),
        ("unconstrained best (any cross-entropy)", refined_ids, inversion.refined_text,
         inversion.refined_activation, inversion.refined_cross_entropy,
         getattr(inversion, "refined_token_activations", None) or saved.get("activations"),
         getattr(inversion, "refined_token_strings", None) or saved.get("tokens")),
    ]  # fmt: skip
    for k, point in enumerate(_extra_pareto(inversion)[:n_pareto]):
        prompts.append(
            (f"Pareto {k + 1} (activation vs fluency)", point.get("tokens") or [],
             point.get("text", ""), point.get("activation"), point.get("cross_entropy"),
             point.get("token_activations"), point.get("token_strings"))
        )  # fmt: skip
    rows = []
    for label, ids, text, value, cross_entropy, per_token, strings in prompts:
        tokens = _token_strings(list(ids), strings, table)
        if tokens is None:  # no token strings saved for these ids: the decoded text, unshaded
            row = TokenRow(label, [text], [None], value)
        else:
            row = _prompt_row(label, tokens, value, per_token, inversion.position)
        reference = getattr(inversion, "reference", inversion.dataset_max)
        name = getattr(inversion, "reference_name", "dataset max")
        row.detail = _detail(value, reference, cross_entropy, name)
        rows.append(row)
    return rows


def _extra_pareto(inversion: Any) -> list[dict[str, Any]]:
    """Pareto prompts other than the refined and projected ones, most active first."""
    shown = (list(inversion.refined_tokens), list(inversion.projected_tokens))
    points = [p for p in inversion.pareto or [] if list(p.get("tokens") or []) not in shown]
    return sorted(points, key=lambda p: -(p.get("activation") or 0.0))


def _token_strings(ids: list[int], strings: Sequence[str] | None, table: dict[int, str]):
    """Each token's string: saved with the prompt, else collection's table; None if unknown."""
    if strings is not None and len(strings) == len(ids):
        return [str(t) for t in strings]
    if ids and all(i in table for i in ids):
        return [table[i] for i in ids]
    return None


def _prompt_row(
    label: str,
    tokens: list[str],
    value: float | None,
    per_token: Sequence[float] | None,
    position: str,
) -> TokenRow:
    """Per-token activations when saved; else the value at the last token when read there."""
    if per_token is not None and len(per_token) == len(tokens):
        return TokenRow(label, tokens, [float(a) for a in per_token], value)
    acts: list[float | None] = [None] * len(tokens)
    if position == "last" and tokens:
        acts[-1] = value
    return TokenRow(label, tokens, acts, value)


def _row_from_sequence(seq: dict[str, Any], label: str) -> TokenRow:
    acts = [None if a is None else float(a) for a in seq.get("activations", [])]
    where = f" · prompt {seq['prompt_index']}" if seq.get("prompt_index") is not None else ""
    known = [a for a in acts if a is not None]
    return TokenRow(label + where, list(seq.get("tokens", [])), acts, max(known, default=None))


def _detail(
    value: float | None,
    dataset_max: float | None,
    cross_entropy: float | None,
    name: str = "dataset max",
) -> str:
    parts = []
    if value is not None and dataset_max:
        parts.append(f"{value / dataset_max:.2f}× {name}")
    if cross_entropy is not None:
        parts.append(f"cross-entropy {cross_entropy:.2f} nats/byte")
    return " · ".join(parts)


# ----------------------------------------------------------------------------- rendering


def display_token(token: str) -> str:
    """A token as drawn: newlines and tabs made visible, everything else kept (escaped later)."""
    return token.replace("\n", "↵").replace("\t", "⇥").replace("\r", "␍")


def shade(activation: float | None, scale: float) -> str:
    """The inline style of one token: orange with opacity activation / scale, capped at 1."""
    if activation is None or not math.isfinite(activation):
        return ""
    alpha = 0.0 if scale <= 0 else max(0.0, min(1.0, activation / scale))
    return f"background:rgba(234,88,12,{alpha:.3f})"


def token_heatmap_html(row: TokenRow, scale: float | None) -> str:
    """One row as HTML: a label, the value, and a span per token (all text escaped)."""
    known = [a for a in row.activations if a is not None]
    scale = scale if scale and scale > 0 else max(known, default=0.0)
    spans = []
    for token, act in zip(row.tokens, row.activations, strict=True):
        classes = "tok" if act is not None else "tok unknown"
        if act is not None and scale and act > scale:
            classes += " over"
        title = f"{token!r}: " + ("not saved" if act is None else f"{act:.4g}")
        spans.append(
            f'<span class="{classes}" style="{shade(act, scale)}" '
            f'title="{esc(title)}">{esc(display_token(token))}</span>'
        )
    value = "" if row.value is None else f'<span class="value">{row.value:.4g}</span>'
    detail = f'<span class="detail">{esc(row.detail)}</span>' if row.detail else ""
    return (
        f'<div class="token-row"><div class="row-head"><span class="row-label">'
        f"{esc(row.label)}</span>{value}{detail}</div>"
        f'<div class="tokens">{"".join(spans)}</div></div>'
    )


def token_block_html(rows: Sequence[TokenRow], scale: float | None, empty: str) -> str:
    """Several rows in one token-heatmap block, or a note when there are none."""
    if not rows:
        return f'<p class="note">{esc(empty)}</p>'
    inner = "".join(token_heatmap_html(r, scale) for r in rows)
    return f'<div class="token-heatmap">{inner}</div>'
