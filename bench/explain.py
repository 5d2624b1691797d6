"""Explanation scores on the default model and SAE: the README's explanation table, measured.

Collects the default run's statistics (``--n-prompts`` prompts of the bundled corpus, cached),
filters the features as the default run does, draws ``--features`` of the kept ones with the
seed, and builds their evidence once: held-out positives, random negatives and hard negatives
(``--n-heldout`` of each, topped up from bundled-corpus prompts the run never collected). Every
explainer is then scored on those very same windows, so the rows compare like with like:

- ``context`` (the default explainer), ``tokens`` and ``llm`` (SmolLM2-135M-Instruct, embedded);
  ``context:fixed`` (or ``tokens:fixed``) is the same rule with its sentence's parts in the fixed
  order (``explanation.fit_sentence=false``) instead of fitted on the explaining side;
- each by its own scorer (the rule simulator; ``llm`` by SmolLM2's P(yes) unless ``--llm-scorer
  context``) and by the embedding judge (all-MiniLM-L6-v2), which never sees any rule;
- each against its shuffled baseline (another feature's explanation on the same windows);
- the scorer reads the rule (the rule simulator) or the sentence (a language model), the judge
  always the sentence; the lines under the table say which, with the rules' and sentences' sizes.

A cell is the mean over features with a 95% interval by bootstrap over features; "items" is the
median number of held-out windows per score (positives + negatives); "beats" counts the features
whose own 95% interval of (score − shuffled score) lies above 0.

    python bench/explain.py                                    # 2000 prompts, 32 features
    python bench/explain.py --n-prompts 500 --features 8 --explainers context tokens
    python bench/explain.py --explainers context context:fixed   # fitted against fixed wording
    python bench/explain.py --stats runs/default/collect --features 8   # reuse a run's collection
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from pathlib import Path

import numpy as np

SCORES = (
    ("detection", "detection (random)"),
    ("detection_hard", "detection (hard)"),
    ("fuzzing", "fuzzing"),
    ("embedding", "judge AUC (random)"),
    ("embedding_hard", "judge AUC (hard)"),
)


def mean_interval(values: list[float], seed: int) -> str:
    """'mean [low, high]' with a 95% bootstrap interval over features ('—' without values)."""
    values = [v for v in values if v is not None]
    if not values:
        return "—"
    data = np.array(values)
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, len(data), size=(2000, len(data)))].mean(1)
    low, high = np.percentile(means, [2.5, 97.5])
    return f"{data.mean():.2f} [{low:.2f}, {high:.2f}]"


def table(rows: dict[str, list], seed: int) -> str:
    head = ["explainer", *(label for _, label in SCORES)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, results in rows.items():
        for kind in ("own", "shuffled"):
            cells = [name if kind == "own" else f"{name}, shuffled baseline"]
            for score, _ in SCORES:
                key = score if kind == "own" else f"baseline_{score}"
                cells.append(mean_interval([getattr(r, key) for r in results], seed))
            lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "| explainer | " + " | ".join(f"{label}: items, beats" for _, label in SCORES) + " |",
              "|" + "---|" * (len(SCORES) + 1)]  # fmt: skip
    for name, results in rows.items():
        cells = [name]
        for score, _ in SCORES:
            records = [r.scores.get(score) or {} for r in results]
            items = [rec["n_positive"] + rec["n_negative"] for rec in records if rec]
            decided = [rec.get("verdict") for rec in records if rec.get("verdict")]
            beats = sum(v == "beats" for v in decided)
            median = statistics.median(items) if items else 0
            cells.append(f"{median:g}, {beats}/{len(decided)}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def sizes(results: list) -> str:
    """Median (max) rule targets and clauses, sentence words, and which text each score read."""
    from saeinverse.explain import parse_rule

    rules = [parse_rule(r.rule) for r in results if r.rule]
    targets = [sum(len(c.targets) for c in rule.clauses()) for rule in rules]
    clauses = [len(rule.clauses()) for rule in rules]
    words = [len(r.sentence.split()) for r in results]

    def cell(values: list[int]) -> str:
        return f"{statistics.median(values):g} (max {max(values)})" if values else "—"

    scored = ", ".join(f"{k}: {v}" for k, v in (results[0].scored if results else {}).items())
    return (f"rule targets {cell(targets)}, clauses {cell(clauses)}; sentence words "
            f"{cell(words)}; scored on {scored}")  # fmt: skip


def judge_ceiling(judge, evidence: list) -> str:
    """The judge's yardstick without words: per feature, the held-out AUC (random negatives) of
    the embedding direction from the explaining side's random silent windows' mean to its
    firing windows' mean. No sentence is held to it; a sentence far below it leaves words
    unsaid, one near it is as close as the judge's embedding lets the feature be told apart."""
    from saeinverse.explain.intervals import auc
    from saeinverse.explain.judge import window_text

    values = []
    for ev in evidence:
        firing = [window_text(s) for s in ev.explain.positives()]
        silent = [window_text(s) for s in ev.explain.silent if s.source == "silent"]
        held = ev.heldout
        if not (firing and silent and held.positives and held.negatives):
            continue
        direction = judge.embed(firing).mean(0) - judge.embed(silent).mean(0)
        pos = judge.embed([window_text(s) for s in held.positives]) @ direction
        neg = judge.embed([window_text(s) for s in held.negatives]) @ direction
        values.append(auc(pos, neg))
    if not values:
        return "judge ceiling: —"
    return (f"judge ceiling (explaining side's firing − silent mean embedding, held-out AUC "
            f"against random negatives, {len(values)} features): mean {np.mean(values):.3f}, "
            f"median {statistics.median(values):.3f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n-prompts", type=int, default=2000)
    parser.add_argument("--features", type=int, default=32)
    parser.add_argument("--n-heldout", type=int, default=50)
    parser.add_argument("--heldout-prompts", type=int, default=2000)
    parser.add_argument(
        "--explain-prompts",
        type=int,
        default=None,
        help="explanation.explain_prompts (default: the config's)",
    )
    parser.add_argument("--explainers", nargs="*", default=["context", "tokens", "llm"])
    parser.add_argument("--llm-scorer", choices=["llm", "context"], default="llm")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", default=str(Path.home() / ".cache/saeinverse/bench-explain"))
    parser.add_argument("--out", default=None, help="write every result as JSON here")
    parser.add_argument(
        "--stats", default=None, help="a collect/ folder of a finished default run to reuse"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from saeinverse.api import collect_or_load
    from saeinverse.config import get_default_config, update_config
    from saeinverse.data.sources import load_prompts
    from saeinverse.explain import EmbeddingJudge, build_evidence, generate_explanations
    from saeinverse.filter import filter_features
    from saeinverse.models.from_config import load_experiment_models

    start = time.perf_counter()
    config = update_config(
        get_default_config(),
        {
            "seed": args.seed,
            "data": {"n_prompts": args.n_prompts},
            "explanation": {
                "n_heldout": args.n_heldout,
                "heldout_prompts": args.heldout_prompts,
                **(
                    {}
                    if args.explain_prompts is None
                    else {"explain_prompts": args.explain_prompts}
                ),
            },
        },
    )
    model, sae, _, _ = load_experiment_models(config)
    if args.stats:
        from saeinverse.collect.stats import FeatureStats

        stats = FeatureStats.load(args.stats)
    else:
        prompts = load_prompts(config.data, config.seed)
        stats = collect_or_load(
            model, sae, prompts, config.data, seed=config.seed, cache_dir=args.cache
        )
    kept = filter_features(stats, config.data.filtering).kept.tolist()
    rng = np.random.default_rng(args.seed)
    fids = sorted(
        int(f) for f in rng.choice(kept, size=min(args.features, len(kept)), replace=False)
    )
    t0 = time.perf_counter()
    evidence = build_evidence(
        model, sae, fids, stats, config.explanation, seed=config.seed, progress=True
    )
    evidence_s = time.perf_counter() - t0
    judge = EmbeddingJudge()
    rows, seconds = {}, {}
    for name in args.explainers:
        explainer, _, wording = name.partition(":")
        overrides = {"explainer": explainer, "fit_sentence": wording != "fixed"}
        if explainer == "llm" and args.llm_scorer == "context":
            overrides["scorer"] = "context"
        cfg = update_config(config, {"explanation": overrides}).explanation
        lm = tok = None
        if explainer == "llm":
            from saeinverse.explain.llm import load_chat_lm

            lm, tok = load_chat_lm(cfg.llm_name)
        t0 = time.perf_counter()
        rows[name] = generate_explanations(
            model, sae, fids, lm, tok, cfg, stats=stats, seed=config.seed,
            judge=judge, evidence=evidence, progress=True,
        )  # fmt: skip
        seconds[name] = time.perf_counter() - t0

    print(f"# Explanation scores: default model and SAE, {stats.n_prompts} prompts "
          f"({stats.n_tokens} tokens), {len(fids)} features drawn from {len(kept)} kept, "
          f"seed {args.seed}")  # fmt: skip
    held = [ev.heldout for ev in evidence]
    print(
        "held-out windows per feature (median): positives "
        f"{statistics.median(len(h.positives) for h in held):g}, random negatives "
        f"{statistics.median(len(h.negatives) for h in held):g}, hard negatives "
        f"{statistics.median(len(h.hard_negatives) for h in held):g}; evidence built in "
        f"{evidence_s:.0f} s"
    )
    print()
    print(table(rows, args.seed))
    print(
        "explaining side per feature (median): firing windows "
        f"{statistics.median(len(ev.explain.positives()) for ev in evidence):g} "
        f"(from bundled texts outside the run: "
        f"{statistics.median(sum(s.origin == 'extra' for s in ev.explain.firing) for ev in evidence):g})"
    )
    for name, results in rows.items():
        print(f"{name}: {sizes(results)}")
    print(judge_ceiling(judge, evidence))
    print()
    print("seconds per explainer (explain + score + judge): "
          + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items())
          + f"; total {time.perf_counter() - start:.0f} s")  # fmt: skip
    for name, results in rows.items():
        print(f"\n{name}: first explanations")
        for r in results[:4]:
            print(f"  feature {r.feature_id}: {r.sentence}  | rule: {r.rule[:120]}")
    if args.out:
        blob = {name: [r.to_dict() for r in results] for name, results in rows.items()}
        Path(args.out).write_text(json.dumps(blob, indent=1))


if __name__ == "__main__":
    main()
