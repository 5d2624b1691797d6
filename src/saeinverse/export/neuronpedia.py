"""A run's features in Neuronpedia's formats: its bulk-import layout and its upload API's batches.

Bulk layout (``DIR/``), rows keyed by Neuronpedia's own column names (its importer drops unknown
keys silently):

- ``features/batch-N.jsonl.gz``: one row per feature with a card (the ``Neuron`` table):
  ``modelId``, ``layer`` (the source id), ``index``, ``maxActApprox`` (the collection's max),
  ``frac_nonzero`` (density), ``freq_hist_data_bar_values / _heights`` (the histogram's bin
  centres and counts), ``pos_str / pos_values`` and ``neg_str / neg_values`` (logit effects),
  ``topkCosSimIndices / Values`` (nearest features), ``hookName``;
- ``activations/batch-N.jsonl.gz``: the ``Activation`` table: each top exemplar and interval
  sample (``dataSource`` ``saeinverse:collection``; ``binMin / binMax`` the interval,
  ``binContains`` the share of the feature's firing prompts whose maximum lies in it; null for
  top exemplars), and each inverted prompt whose per-token activations were saved, by
  inversion or by the explain stage's forward of the refined prompts (``dataSource``
  ``saeinverse:inversion``);
- ``explanations/batch-N.jsonl.gz``: the ``Explanation`` table: ``description`` (at most
  ``MAX_EXPLANATION`` characters), ``typeName``, ``explanationModelName``;
- ``scores.jsonl``: each explanation's scores with their intervals (no Neuronpedia column holds
  them);
- ``upload/batch-N.json``: the upload API's batches: at most ``MAX_FEATURES`` features each, at
  most ``MAX_LOGITS`` logits per side, ``MAX_TOKENS`` tokens per activation.

``read_neuronpedia`` reads the bulk layout back into rows.
"""

from __future__ import annotations

import gzip
import json
import logging
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from saeinverse.io import atomic_path

logger = logging.getLogger(__name__)

MAX_FEATURES = 128
"""Features per upload batch."""
MAX_LOGITS = 20
"""Logits per side in an upload."""
MAX_TOKENS = 1024
"""Tokens per activation in an upload."""
MAX_EXPLANATION = 512
"""Characters per explanation."""
ROWS_PER_FILE = 1000
"""Rows per bulk ``batch-N.jsonl.gz`` file."""
COLLECTION_SOURCE = "saeinverse:collection"
INVERSION_SOURCE = "saeinverse:inversion"
TABLES = ("features", "activations", "explanations")


def neuronpedia_ids(models: dict[str, Any]) -> tuple[str, str]:
    """(modelId, source id) for a run: the model's name and ``<layer>-saeinverse-<hook>``."""
    model_id = re.sub(r"[^a-z0-9_-]+", "-", str(models.get("model") or "model").lower()).strip("-")
    hook = str(models.get("hook_name") or "")
    match = re.match(r"blocks\.(\d+)\.(.+)", hook)
    layer, kind = (match.group(1), match.group(2)) if match else ("0", hook or "sae")
    kind = re.sub(r"[^a-z0-9]+", "-", kind.replace("hook_", "").lower()).strip("-")
    return model_id, f"{layer}-saeinverse-{kind}"


def feature_row(card: Any, model_id: str, source: str, hook_name: str) -> dict[str, Any]:
    """One ``Neuron`` row from a ``FeatureCard``."""
    return {
        "modelId": model_id,
        "layer": source,
        "index": str(card.feature_id),
        "hookName": hook_name,
        "maxActApprox": card.max_activation,
        "frac_nonzero": card.density,
        "freq_hist_data_bar_values": [(b.low + b.high) / 2 for b in card.histogram],
        "freq_hist_data_bar_heights": [float(b.count) for b in card.histogram],
        "pos_str": [e.token for e in card.positive_logits],
        "pos_values": [e.value for e in card.positive_logits],
        "neg_str": [e.token for e in card.negative_logits],
        "neg_values": [e.value for e in card.negative_logits],
        "topkCosSimIndices": [n.feature_id for n in card.neighbours],
        "topkCosSimValues": [n.cosine for n in card.neighbours],
    }


def activation_row(
    key: dict[str, str], tokens: list[str], values: list[float], source: str, data_index: Any,
    bin_min: float | None = None, bin_max: float | None = None, bin_contains: float | None = None,
) -> dict[str, Any]:  # fmt: skip
    """One ``Activation`` row: a token sequence with the feature's value on every token."""
    peak = max(range(len(values)), key=lambda i: values[i]) if values else 0
    return {
        **key,
        "tokens": list(tokens),
        "values": [float(v) for v in values],
        "maxValue": float(values[peak]) if values else 0.0,
        "maxValueTokenIndex": peak,
        "minValue": float(min(values)) if values else 0.0,
        "dataSource": source,
        "dataIndex": str(data_index),
        "binMin": bin_min,
        "binMax": bin_max,
        "binContains": bin_contains,
    }


def card_activations(card: Any, key: dict[str, str]) -> list[dict[str, Any]]:
    """The card's top exemplars and interval samples as ``Activation`` rows."""
    rows = [activation_row(key, w.tokens, w.values, COLLECTION_SOURCE, w.prompt_index)
            for w in card.exemplars]  # fmt: skip
    firing = sum(i.n_prompts for i in card.intervals) or 1
    for interval in card.intervals:
        rows += [
            activation_row(key, w.tokens, w.values, COLLECTION_SOURCE, w.prompt_index,
                           interval.low, interval.high, interval.n_prompts / firing)
            for w in interval.samples
        ]  # fmt: skip
    return rows


def inversion_activations(inversion: Any, key: dict[str, str]) -> list[dict[str, Any]]:
    """The inverted prompts whose per-token activations were saved, as ``Activation`` rows."""
    prompts = [
        getattr(inversion, "headline", None) or {},
        *(getattr(inversion, "pareto", None) or []),
    ]
    prompts.append({"token_strings": getattr(inversion, "refined_token_strings", None),
                    "token_activations": getattr(inversion, "refined_token_activations", None),
                    "name": "refined"})  # fmt: skip
    rows, seen = [], set()
    for i, prompt in enumerate(prompts):
        tokens, values = prompt.get("token_strings"), prompt.get("token_activations")
        if not tokens or not values or len(tokens) != len(values) or tuple(tokens) in seen:
            continue
        seen.add(tuple(tokens))
        name = prompt.get("name") or ("headline" if i == 0 else f"pareto-{i - 1}")
        rows.append(activation_row(key, tokens, values, INVERSION_SOURCE, name))
    return rows


def evidence_activations(explanation: Any, key: dict[str, str]) -> list[dict[str, Any]]:
    """The inverted prompts the explain stage forwarded (evidence sequences whose source starts
    with 'refined'), with every token's activation, as ``Activation`` rows."""
    found = (getattr(explanation, "evidence", None) or {}).get("sequences") or []
    rows = []
    for seq in found:
        if not str(seq.get("source", "")).startswith("refined"):
            continue
        tokens, values = seq.get("tokens") or [], seq.get("activations") or []
        if tokens and len(tokens) == len(values) and all(v is not None for v in values):
            rows.append(activation_row(key, tokens, values, INVERSION_SOURCE, seq["source"]))
    return rows


def explanation_row(explanation: Any, key: dict[str, str]) -> dict[str, Any]:
    """One ``Explanation`` row."""
    text = str(explanation.explanation)
    return {
        **key,
        "description": text[:MAX_EXPLANATION],
        "typeName": f"saeinverse-{explanation.explainer}",
        "explanationModelName": str(explanation.explainer),
    }


def score_row(explanation: Any, key: dict[str, str]) -> dict[str, Any]:
    """The explanation's scores, intervals and verdict (the ``scores.jsonl`` side file)."""
    names = ("detection", "detection_hard", "fuzzing", "embedding", "embedding_hard")
    return {
        **key,
        "description": str(explanation.explanation)[:MAX_EXPLANATION],
        "scorer": getattr(explanation, "scorer", ""),
        "scores": {n: getattr(explanation, n, None) for n in names},
        "intervals": dict(getattr(explanation, "scores", None) or {}),
        "verdict": getattr(explanation, "verdict", None),
    }


def upload_feature(feature: dict[str, Any], activations: list[dict[str, Any]],
                   explanations: list[dict[str, Any]]) -> dict[str, Any]:  # fmt: skip
    """One feature of an upload batch, cut to the upload API's limits."""
    out = {k: feature[k] for k in ("index", "maxActApprox", "frac_nonzero",
                                   "freq_hist_data_bar_values", "freq_hist_data_bar_heights",
                                   "topkCosSimIndices", "topkCosSimValues")}  # fmt: skip
    for side in ("pos", "neg"):
        out[f"{side}_str"] = feature[f"{side}_str"][:MAX_LOGITS]
        out[f"{side}_values"] = feature[f"{side}_values"][:MAX_LOGITS]
    out["activations"] = [
        {k: (a[k][:MAX_TOKENS] if k in ("tokens", "values") else a[k])
         for k in ("tokens", "values", "binMin", "binMax", "binContains", "dataSource")}
        for a in activations
    ]  # fmt: skip
    out["explanations"] = [{"description": e["description"][:MAX_EXPLANATION],
                            "typeName": e["typeName"]} for e in explanations]  # fmt: skip
    return out


# ----------------------------------------------------------------------------- files


def write_rows(folder: Path, rows: list[dict[str, Any]]) -> list[Path]:
    """``folder/batch-N.jsonl.gz`` files of ``ROWS_PER_FILE`` rows each (one empty file if none)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for n, start in enumerate(range(0, max(len(rows), 1), ROWS_PER_FILE)):
        path = folder / f"batch-{n}.jsonl.gz"
        with atomic_path(path) as tmp, gzip.open(tmp, "wt", encoding="utf-8") as out:
            for row in rows[start : start + ROWS_PER_FILE]:
                out.write(json.dumps(row, ensure_ascii=False) + "\n")
        paths.append(path)
    return paths


def read_rows(folder: Path) -> list[dict[str, Any]]:
    """Every row of ``folder``'s ``batch-N.jsonl.gz`` files, in batch order."""
    files = sorted(
        folder.glob("batch-*.jsonl.gz"), key=lambda p: int(p.name.split("-")[1].split(".")[0])
    )
    rows = []
    for path in files:
        with gzip.open(path, "rt", encoding="utf-8") as lines:
            rows += [json.loads(line) for line in lines if line.strip()]
    return rows


def read_neuronpedia(folder: str | Path) -> dict[str, list[dict[str, Any]]]:
    """The bulk layout read back: ``{"features", "activations", "explanations", "scores"}``."""
    folder = Path(folder)
    found = {table: read_rows(folder / table) for table in TABLES}
    scores = folder / "scores.jsonl"
    found["scores"] = (
        [json.loads(x) for x in scores.read_text().splitlines() if x.strip()]
        if scores.exists()
        else []
    )
    return found


def chunks(items: list[Any], size: int) -> Iterable[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
