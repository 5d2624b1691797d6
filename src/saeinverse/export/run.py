"""Export a finished run: read its saved artifacts (``saeinverse.report.loaders``) and write a
format (``EXPORTERS``). Only features with a card (the ``cards`` stage) are exported."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from saeinverse.errors import ArtifactError
from saeinverse.export import neuronpedia as NP
from saeinverse.io import save_json, write_text
from saeinverse.report.loaders import load_run

logger = logging.getLogger(__name__)


def export_neuronpedia(run_dir: str | Path, out_dir: str | Path) -> dict[str, Any]:
    """Write the run's cards, inverted prompts, explanations and scores in Neuronpedia's bulk
    layout and upload batches under ``out_dir`` (``saeinverse.export.neuronpedia``); returns a
    summary (row counts, ids), also written to ``out_dir/export.json``."""
    run = load_run(run_dir)
    if run.cards is None:
        raise ArtifactError(
            f"run {run_dir} has no feature cards (cards stage: "
            f"{run.status.get('cards', 'missing')}): run the pipeline through the cards stage first"
        )
    models = run.models or {}
    model_id, source = NP.neuronpedia_ids(models)
    hook = str(models.get("hook_name") or run.cards.meta.get("hook_name") or "")
    features, activations, explanations, scores = [], [], [], []
    per_feature = []
    for card in run.cards.cards:
        key = {"modelId": model_id, "layer": source, "index": str(card.feature_id)}
        feature = NP.feature_row(card, model_id, source, hook)
        acts = NP.card_activations(card, key)
        if card.feature_id in run.inversions:
            acts += NP.inversion_activations(run.inversions[card.feature_id], key)
        notes = []
        if card.feature_id in run.explanations:
            explanation = run.explanations[card.feature_id]
            inverted = {tuple(a["tokens"]) for a in acts if a["dataSource"] == NP.INVERSION_SOURCE}
            acts += [a for a in NP.evidence_activations(explanation, key)
                     if tuple(a["tokens"]) not in inverted]  # fmt: skip
            notes = [NP.explanation_row(explanation, key)]
            scores.append(NP.score_row(explanation, key))
        features.append(feature)
        activations += acts
        explanations += notes
        per_feature.append(NP.upload_feature(feature, acts, notes))
    out = Path(out_dir)
    for table, rows in zip(NP.TABLES, (features, activations, explanations), strict=True):
        NP.write_rows(out / table, rows)
    write_text(
        out / "scores.jsonl", "".join(json.dumps(s, ensure_ascii=False) + "\n" for s in scores)
    )
    for n, batch in enumerate(NP.chunks(per_feature, NP.MAX_FEATURES)):
        save_json(out / "upload" / f"batch-{n}.json",
                  {"modelId": model_id, "layer": source, "hookName": hook, "features": batch})  # fmt: skip
    summary = {"format": "neuronpedia", "run": str(Path(run_dir).resolve()), "modelId": model_id,
               "layer": source, "features": len(features), "activations": len(activations),
               "inverted_prompts": sum(a["dataSource"] == NP.INVERSION_SOURCE for a in activations),
               "explanations": len(explanations), "scores": len(scores)}  # fmt: skip
    save_json(out / "export.json", summary)
    logger.info("export: %s", summary)
    return summary


EXPORTERS: dict[str, Callable[[str | Path, str | Path], dict[str, Any]]] = {
    "neuronpedia": export_neuronpedia,
}
"""Format name -> its exporter (run directory, output directory) -> summary."""


def export_run(run_dir: str | Path, to: str, out_dir: str | Path) -> dict[str, Any]:
    """Export ``run_dir`` in format ``to`` (a key of ``EXPORTERS``) into ``out_dir``."""
    from saeinverse.errors import ConfigError

    if to not in EXPORTERS:
        raise ConfigError(f"unknown export format {to!r}; valid: {list(EXPORTERS)}")
    return EXPORTERS[to](run_dir, out_dir)
