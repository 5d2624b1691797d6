"""Inversion quality: refined-prompt activation ÷ dataset maximum on features of the default run.

Features are chosen as the baseline (notes/inversion-baseline.md) chose them: density 1e-4 to
1e-2 over the default run's collection, half code-like and half prose-like (by the share of
code punctuation in their top exemplar contexts), drawn with a fixed seed. The dataset maximum is
each feature's maximum in that collection (default corpus, ``data.n_prompts`` prompts).

Each arm inverts the features from random or exemplar initialisation, either unconstrained
(no fluency term, ``--budget`` sequences per feature) or fluent (cross-entropy hinge at the
90th percentile of real text windows of the same length, ``--fluent-budget`` sequences). For a
fluent arm the reported point is the most active Pareto prompt whose cross-entropy is at or
below that percentile. Every activation is a fresh forward on the prompt's token ids.

    python bench/quality.py --features 8 --arms random,exemplar,random-fluent
Targets from random initialisation (DESIGN §11): unconstrained median ≥ 1.0 with ≤ 4,000
sequences per feature; fluent median ≥ 0.8 with ≤ 20,000.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from pathlib import Path

import torch

CODE_CHARS = set("()[]{}=_:;#.,'\"<>/\\*+-%@|&^~`!")


def load_default(sae_path: str | None):
    from saeinverse.config import get_default_config
    from saeinverse.models.from_config import default_sae_path, load_subject_model
    from saeinverse.models.loading import load_sae

    config = get_default_config()
    path = Path(sae_path) if sae_path else default_sae_path(config)
    if not (path / "cfg.json").exists():
        raise SystemExit(
            f"the default SAE is not trained yet ({path}): run `saeinverse train-sae` first"
        )
    model = load_subject_model(config)
    return config, model, load_sae(path=str(path), device=str(model.cfg.device))


def collection(config, model, sae, cache_dir: Path):
    """The default run's feature statistics (cached in ``cache_dir``)."""
    from saeinverse.api import collect_or_load
    from saeinverse.data.sources import load_prompts

    prompts = load_prompts(config.data, config.seed)
    return collect_or_load(model, sae, prompts, config.data, seed=config.seed, cache_dir=cache_dir)


def code_share(stats, feature: int, n: int = 5) -> float:
    text = "".join("".join(e.context_tokens) for e in stats.top_exemplars(feature, n))
    visible = [c for c in text if not c.isspace()]
    return sum(c in CODE_CHARS for c in visible) / max(1, len(visible))


def choose_features(stats, n: int, seed: int) -> list[tuple[int, str]]:
    density = stats.density
    eligible = ((density >= 1e-4) & (density <= 1e-2)).nonzero().squeeze(-1)
    order = eligible[torch.randperm(len(eligible), generator=torch.Generator().manual_seed(seed))]
    code, prose = [], []
    for f in order.tolist():
        share = code_share(stats, f)
        kind = code if share >= 0.15 else prose if share <= 0.06 else None
        if kind is not None and len(kind) < n // 2:
            kind.append(f)
        if len(code) + len(prose) >= n:
            break
    return [(f, "code") for f in code] + [(f, "prose") for f in prose]


def text_window_cross_entropy(model, stats, length: int, n: int = 64) -> list[float]:
    """Cross-entropy of real ``length``-token windows of the collection (start token in front)."""
    from saeinverse.invert.objective import start_token_id
    from saeinverse.invert.project import prompt_cross_entropy

    windows = []
    for p in range(stats.n_prompts):
        usable = int(stats.lengths[p]) - stats.first_position
        if usable >= length:
            windows.append(stats.tokens[p, stats.first_position : stats.first_position + length])
        if len(windows) >= n:
            break
    ids = torch.stack(windows).to(model.cfg.device)
    return prompt_cross_entropy(model, ids, start_token_id(model)).tolist()


def quartiles(values: list[float]) -> tuple[float, float, float]:
    q = statistics.quantiles(values, n=4, method="inclusive") if len(values) > 1 else values * 3
    return q[0], statistics.median(values), q[2]


def run_arm(model, sae, chosen, stats, arm, args, ce_bound):
    from saeinverse.invert import optimize_features
    from saeinverse.invert.inputs import dataset_maxima, exemplar_tails

    features = [f for f, _ in chosen]
    fluent = arm.endswith("-fluent")
    init = arm.removesuffix("-fluent")
    budget = args.fluent_budget if fluent else args.budget
    settings = {
        "length": args.length,
        "position": "last",
        "init": init,
        "max_steps": args.soft_steps,
        "refine_steps": 10_000,  # the sequence budget stops each feature
        "refine_candidates": args.candidates,
        "patience": args.patience,
        "max_sequences": budget - 4 - (2 * 8 if fluent else 0),  # leave room for the check forwards
        "fluency_weight": args.fluency_weight if fluent else 0.0,
        "fluency_target": ce_bound if fluent else None,
    }
    maxima = dataset_maxima(stats, features)
    exemplars = exemplar_tails(stats, features, args.length) if init == "exemplar" else None
    start = time.perf_counter()
    records = optimize_features(
        model,
        sae,
        features,
        settings,
        seed=args.seed,
        dataset_max=maxima,
        exemplar_tokens=exemplars,
    )
    seconds = time.perf_counter() - start
    rows = []
    for (f, kind), r in zip(chosen, records, strict=True):
        point = (
            r.best_within(ce_bound)
            if fluent
            else {
                "activation": r.refined_activation,
                "text": r.refined_text,
                "cross_entropy": r.refined_cross_entropy,
            }
        )
        act = point["activation"] if point else 0.0
        rows.append({
            "feature": f, "kind": kind, "dataset_max": maxima[f], "ratio": act / maxima[f],
            "activation": act, "text": point["text"] if point else None,
            "cross_entropy": point["cross_entropy"] if point else None,
            "projected_ratio": r.projected_ratio, "sequences": r.forward_passes,
            "refined_ratio": r.refined_ratio, "refined_cross_entropy": r.refined_cross_entropy,
            "record": r.to_dict(),
        })  # fmt: skip
    ratios = [row["ratio"] for row in rows]
    q1, med, q3 = quartiles(ratios)
    seqs = [row["sequences"] for row in rows]
    print(
        f"\n{arm:<16} median {med:5.2f}  quartiles {q1:5.2f} / {q3:5.2f}   ≥1: {sum(x >= 1 for x in ratios)}/{len(ratios)}   "
        f"sequences/feature mean {statistics.mean(seqs):.0f} max {max(seqs)}   {seconds:.0f} s"
    )
    for row in rows:
        ce = "" if row["cross_entropy"] is None else f"CE {row['cross_entropy']:5.2f}"
        if fluent:
            ce += f"  (refined: ratio {row['refined_ratio']:.2f} CE {row['refined_cross_entropy']:.2f})"
        print(
            f"  {row['feature']:5d} {row['kind']:<5} max {row['dataset_max']:7.2f}  ratio {row['ratio']:5.2f}  {ce}  {row['text']!r}"
        )
    return {
        "arm": arm,
        "median": med,
        "q1": q1,
        "q3": q3,
        "seconds": seconds,
        "settings": settings,
        "features": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--features", type=int, default=8)
    parser.add_argument("--arms", default="random,exemplar,random-fluent,exemplar-fluent")
    parser.add_argument("--length", type=int, default=12)
    parser.add_argument("--budget", type=int, default=4000)
    parser.add_argument("--fluent-budget", type=int, default=20_000)
    parser.add_argument("--soft-steps", type=int, default=100)
    parser.add_argument("--candidates", type=int, default=64)
    parser.add_argument("--patience", type=int, default=40)
    parser.add_argument("--fluency-weight", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sae", default=None, help="SAE folder (default: the cached default SAE)")
    parser.add_argument("--cache", default=str(Path.home() / ".cache/saeinverse/bench-collection"))
    parser.add_argument("--out", default=None, help="write the figures as JSON here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    config, model, sae = load_default(args.sae)
    stats = collection(config, model, sae, Path(args.cache))
    chosen = choose_features(stats, args.features, args.seed)
    ces = sorted(text_window_cross_entropy(model, stats, args.length))
    ce_bound = ces[int(0.9 * (len(ces) - 1))]
    print(
        f"{stats.n_tokens} collection tokens; {len(chosen)} features {[f for f, _ in chosen]}; "
        f"real {args.length}-token windows: cross-entropy p10/p50/p90 = "
        f"{ces[int(0.1 * (len(ces) - 1))]:.2f} / {statistics.median(ces):.2f} / {ce_bound:.2f}"
    )
    results = [
        run_arm(model, sae, chosen, stats, arm.strip(), args, ce_bound)
        for arm in args.arms.split(",")
    ]
    if args.out:
        Path(args.out).write_text(json.dumps({"ce_bound": ce_bound, "arms": results}, indent=2))


if __name__ == "__main__":
    main()
