"""Inversion quality on the default model and SAE: the README's inversion table, measured.

Features are drawn as the baseline (notes/inversion-baseline.md) drew them: density 1e-4 to 1e-2
over the default run's collection, half code-like and half prose-like (by the share of code
punctuation in their top exemplar contexts), with a fixed seed. Ratios divide by the **reference
max** (each feature's maximum over the bundled corpus's train split, ≥ 150k tokens, cached per
SAE). Real-text cross-entropy quantiles come from ≥ 300 random windows of the prompt's length.
Every prompt's activation and cross-entropy are re-scored by a fresh forward (the records hold
nothing else).

One run of the default search at the table's budget (the soft stage from the top exemplar
window, ``--budget`` sequence-equivalents per feature for the whole search: soft stage, fluent
starts, unconstrained row and fluent rows, counted in token-layers as ``invert.cost`` says;
``--soft-steps`` 150 soft steps, where the default run's smaller budget takes 75) gives every
row of the table:

- unconstrained: the most active prompt found (any cross-entropy);
- fluent ≤ p90: the most active re-scored front prompt with cross-entropy ≤ real p90;
- typical-text fluent ≤ p50: the headline (the most active with cross-entropy ≤ real p50);
- the best real window within the bound (the feature's top collection contexts, then the
  reference pass's top windows, cut to the prompt's
  length at their peak, re-scored the same way), which the headline must not be under.

Cross-entropy is in nats per UTF-8 byte (``invert.fluency``), for the real windows and every
prompt alike. ``--no-exemplars`` is the arm without real windows (the from-scratch case: the
fluent rows start from the beam), at the same budget; ``--arms no-reference-windows`` the arm with
the collection's exemplar windows only. ``--arms`` runs several arms (``ARMS``:
one move kind or start off at a time (``no-merges``: no merged swaps), ``random-init`` the soft
stage from random embeddings,
or the published methods' ideas built from this search's parts: ``epo-population``, EPO's
population over fluency weights in place of the one fluent row from text; ``flrt-moves``, FLRT's
moves, every row's tokens from the model's own predictions with no gradient paid; ``beast``,
BEAST's beam from nothing, model samples only, as wide as the budget holds, its final prompts
re-scored) on the same features at the same budget and ends with
one row per arm, each with the sequence-equivalents it spent, and each arm paired with the first
feature by feature (higher on how many, lower on how many): a median of 16 can rise while most
features fall. ``--search-seed`` reruns the same features with another search seed, which
measures what chance alone moves (compare its per-feature counts with an arm's).

    python bench/quality.py                         # 16 features, 4,000 sequences each
    python bench/quality.py --features 4 --budget 2000 --out q.json
    python bench/quality.py --features 8 --budget 1500 --soft-steps 75 --arms default no-beam
    python bench/quality.py --search-seed 1 --out q1.json   # the same features, another search
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from pathlib import Path

import torch

ALL, EXEMPLARS, NONE, BEAST = "all", "exemplars", "none", "beast"
ARMS = {
    "default": ({}, ALL),
    "no-exemplars": ({}, NONE),
    "no-reference-windows": ({}, EXEMPLARS),
    "no-beam": ({"beam_width": 0}, ALL),
    "from-scratch-no-beam": ({"beam_width": 0}, NONE),
    "gradient-proposals": ({"proposals": "gradient"}, ALL),
    "model-proposals": ({"proposals": "model"}, ALL),
    "flrt-moves": ({"proposals": "model_only"}, ALL),
    "beast": ({}, BEAST),
    "swaps-only": ({"edit_moves": False}, ALL),
    "no-merges": ({"merge_swaps": 0}, ALL),
    "old-moves": ({"edit_moves": False, "beam_width": 0}, ALL),
    "epo-population": ({"population": 4}, ALL),
    "random-init": ({"init": "random"}, ALL),
}
"""Bench arms: optimization overrides, and which real windows are given: the collection's
exemplar windows and the reference pass's top windows (``ALL``), the exemplars alone, or none."""


def beast_size(cost, budget: float, length: int) -> int:
    """BEAST's beam at the same cost: the largest k (k prompts, k samples each) whose beam,
    without a gradient, fits ``budget`` sequence-equivalents."""
    from saeinverse.invert.beam import beam_cost

    k = 1
    while beam_cost(cost, k + 1, k + 1, length, gradient=False) <= budget:
        k += 1
    return k


def beast_records(model, sae, features, settings, seed, bound, reference, stats):
    """BEAST's idea on this bench, at the same cost: a left-to-right beam of k prompts, each
    sampling k next tokens from the model's own distribution (no gradient), kept by the
    activation alone (the beam's scale-free objective, ``fluency_weight`` 0), k as large as the
    budget holds; every final prompt is re-scored by fresh forwards like the search's prompts,
    and its front, unconstrained best and headline are read as for the other arms."""
    from saeinverse.invert import FeatureTarget
    from saeinverse.invert.beam import beam_prompts
    from saeinverse.invert.cost import Cost
    from saeinverse.invert.fluency import Fluency
    from saeinverse.invert.front import ParetoPoint, update_pareto
    from saeinverse.invert.objective import allowed_token_mask
    from saeinverse.invert.project import Vocabulary, score_prompts
    from saeinverse.invert.result import Inversion
    from saeinverse.invert.starts import BEAM, generator

    target = FeatureTarget(model, sae, settings.position)
    vocab = Vocabulary(model, allowed_token_mask(model))
    cost = Cost.of(target, settings.length)
    k = beast_size(cost, settings.max_sequences, settings.length)
    ref = reference.for_features(features)
    found = beam_prompts(
        target, vocab.allowed, vocab.W_E, torch.tensor(features), [ref[f] for f in features],
        bound.cross_entropy, 0.0, settings.length, k, k,
        [generator(seed, f, BEAM) for f in features], gradient=False,
    )  # fmt: skip
    print(f"BEAST's beam: {k} prompts x {k} samples per step", flush=True)
    flat = [p for prompts in found.prompts for p in prompts]
    owners = [f for f, prompts in zip(features, found.prompts, strict=True) for _ in prompts]
    acts = score_prompts(model, None, owners, flat, settings.position, target=target)
    ce = Fluency(target).cross_entropy(torch.tensor(flat)).tolist()
    tok = model.tokenizer
    records, cursor = [], 0
    for i, f in enumerate(features):
        n = len(found.prompts[i])
        points = [ParetoPoint(flat[j], acts[j], ce[j]) for j in range(cursor, cursor + n)]
        cursor += n
        best = max(points, key=lambda p: p.activation)
        within = [p for p in points if p.cross_entropy <= bound.cross_entropy and p.activation > 0]
        head = max(within, key=lambda p: p.activation) if within else None

        def point(p):
            return {"tokens": p.ids, "text": tok.decode(p.ids), "activation": p.activation,
                    "cross_entropy": p.cross_entropy}  # fmt: skip

        records.append(Inversion(
            feature_id=f, soft_activation=0.0, projected_tokens=best.ids,
            projected_text=tok.decode(best.ids), projected_activation=best.activation,
            refined_tokens=best.ids, refined_text=tok.decode(best.ids),
            refined_activation=best.activation, refined_cross_entropy=best.cross_entropy,
            dataset_max=float(stats.max_activation[f]), position=settings.position,
            pareto=[point(p) for p in update_pareto([], points, len(points))],
            headline=None if head is None else point(head), fluency_bound=bound.to_dict(),
            reference_max=ref[f], reference_tokens=reference.n_tokens,
            forward_passes=found.spent[i] + n * (cost.sequence + cost.full),
            forward_passes_by_stage={"soft": 0.0, "refine": found.spent[i],
                                     "check": n * (cost.sequence + cost.full)},
        ))  # fmt: skip
    return records


CODE_CHARS = set("()[]{}=_:;#.,'\"<>/\\*+-%@|&^~`!")


def real_windows(args, stats, model, reference, features, settings, seed):
    """Per kind (``ALL``, ``EXEMPLARS``, ``NONE``) each feature's windows as the run's invert
    stage gives them: its exemplar windows, then its reference windows (the bench holds nothing
    out for explanations)."""
    from saeinverse.invert.inputs import exemplar_windows, merge_windows, reference_windows
    from saeinverse.invert.reference import real_windows as reference_real_windows

    own = exemplar_windows(stats, features, settings.length, count=args.exemplars)
    real = reference_real_windows(reference, features, model, seed)
    every = merge_windows(own, reference_windows(real, features, settings.length))
    return {ALL: every, EXEMPLARS: own, NONE: {}}


def load_default():
    from saeinverse.config import get_default_config
    from saeinverse.models.from_config import load_experiment_models

    config = get_default_config()
    model, sae, _, _ = load_experiment_models(config)
    return config, model, sae


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


def median_ci(values: list[float]) -> str:
    """The median with the order-statistic 95% interval for it (binomial, n ≥ 6)."""
    from scipy.stats import binom

    xs = sorted(values)
    n = len(xs)
    lo = max(0, int(binom.ppf(0.025, n, 0.5)) - 1)
    hi = min(n - 1, n - 1 - lo)
    return f"{statistics.median(xs):5.2f} [{xs[lo]:.2f}, {xs[hi]:.2f}]"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--features", type=int, default=16)
    parser.add_argument("--budget", type=int, default=4000, help="max_sequences per feature")
    parser.add_argument(
        "--soft-steps", type=int, default=150, help="optimization.max_steps at this budget"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--search-seed", type=int, default=None,
        help="the search's seed (default: --seed); another one on the same features measures "
        "what chance alone moves",
    )  # fmt: skip
    parser.add_argument(
        "--reference-tokens", type=int, default=None, help="default: optimization.reference_tokens"
    )
    parser.add_argument("--cache", default=str(Path.home() / ".cache/saeinverse/bench-collection"))
    parser.add_argument("--set", nargs="*", default=[], help="optimization overrides key=value")
    parser.add_argument("--out", default=None, help="write every record as JSON here")
    parser.add_argument(
        "--stats", default=None, help="a saved FeatureStats folder (a run's collect/) to reuse"
    )
    parser.add_argument(
        "--no-exemplars", action="store_true", help="the arm without real windows (from scratch)"
    )
    parser.add_argument("--exemplars", type=int, default=8, help="exemplar windows per feature")
    parser.add_argument(
        "--arms", nargs="*", choices=sorted(ARMS), default=None,
        help="run these arms on the same features at the same budget and print one row each",
    )  # fmt: skip
    parser.add_argument(
        "--chunk",
        type=int,
        default=16,
        help="features per batch; results per feature do not depend on it (printed per chunk)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from saeinverse.collect.reference import cached_reference_max, reference_folder
    from saeinverse.config import OptimizationConfig, as_section, parse_overrides
    from saeinverse.invert import FeatureTarget, measure_bound, optimize_features
    from saeinverse.invert.fluency import stats_token_rows

    config, model, sae = load_default()
    if args.stats:
        from saeinverse.collect.stats import FeatureStats

        stats = FeatureStats.load(args.stats)
    else:
        stats = collection(config, model, sae, Path(args.cache))
    chosen = choose_features(stats, args.features, args.seed)
    features = [f for f, _ in chosen]
    settings = as_section(
        {"max_sequences": args.budget, "max_steps": args.soft_steps, **parse_overrides(args.set)},
        OptimizationConfig,
    )
    began = time.perf_counter()
    reference = cached_reference_max(
        model, sae, reference_folder(config), seed=config.seed,
        max_tokens=args.reference_tokens or settings.reference_tokens,
        window=config.data.max_length, exclude_bos=config.data.exclude_bos,
    )  # fmt: skip
    target = FeatureTarget(model, sae, settings.position)
    rows = stats_token_rows(stats, model)
    p90 = measure_bound(target, rows, settings.length, 0.9, settings.fluency_windows, args.seed)
    bound = measure_bound(
        target,
        rows,
        settings.length,
        settings.fluency_quantile,
        settings.fluency_windows,
        args.seed,
    )
    print(
        f"{model.cfg.model_name}, {torch.get_num_threads()} threads; {reference.name} "
        f"({time.perf_counter() - began:.0f} s incl. cache); {len(chosen)} features {features}\n"
        f"real {settings.length}-token windows ({bound.n_windows}): cross-entropy p10/p50/p90 = "
        f"{bound.p10:.2f} / {bound.p50:.2f} / {bound.p90:.2f}; headline bound q{bound.quantile:g} "
        f"= {bound.cross_entropy:.2f}",
        flush=True,
    )
    given = real_windows(args, stats, model, reference, features, settings, config.seed)
    arms = [("default", {}, NONE if args.no_exemplars else ALL)]
    if args.arms:
        arms = [(name, ARMS[name][0], ARMS[name][1]) for name in args.arms]
    search_seed = args.seed if args.search_seed is None else args.search_seed
    summary = []
    for name, overrides, kind in arms:
        arm = as_section({**settings.to_dict(), **overrides}, OptimizationConfig)
        windows = given.get(kind, {})
        start = time.perf_counter()
        records = []
        if kind == BEAST:
            records = beast_records(model, sae, features, arm, search_seed, bound, reference, stats)
        chunks = [] if kind == BEAST else range(0, len(features), args.chunk)
        for lo in chunks:
            chunk = features[lo : lo + args.chunk]
            records += optimize_features(
                model, sae, chunk, arm, seed=search_seed,
                dataset_max=stats.max_activation, reference_max=reference.for_features(chunk),
                reference_tokens=reference.n_tokens, fluency_bound=bound,
                exemplar_windows={f: windows[f] for f in chunk if f in windows},
                exclude_bos=config.data.exclude_bos, progress=False,
            )  # fmt: skip
        seconds = time.perf_counter() - start
        print(f"\n## arm {name}: {overrides or 'the defaults'}, real windows: {kind}, "
              f"search seed {search_seed}")  # fmt: skip
        row, values = report(args, chosen, records, reference, bound, p90, seconds)
        summary.append((name, row, values))
        if args.out:
            Path(args.out if len(arms) == 1 else f"{args.out}.{name}").write_text(json.dumps({
                "reference": reference.name, "bound": bound.to_dict(), "p90": p90.to_dict(),
                "seconds": seconds, "arm": name, "records": [r.to_dict() for r in records],
            }, indent=1))  # fmt: skip
    if len(summary) > 1:
        print(f"\n| arm ({len(features)} features, budget {args.budget} sequence-equivalents) "
              "| search spent, mean | unconstrained | ≤ p90 | headline ≤ p50 | headlines "
              "| ≥ exemplar | s/feature |")  # fmt: skip
        print("|---|---|---|---|---|---|---|---|")
        for name, row, _ in summary:
            print(f"| {name} | " + " | ".join(row) + " |")
        first, _, base = summary[0]
        print(f"\nPaired with {first}, feature by feature (n = {len(features)}; a difference "
              f"under {SAME} counts as the same):")  # fmt: skip
        for name, _, values in summary[1:]:
            print(f"- {name}: " + "; ".join(
                paired(measure, base[measure], values[measure]) for measure in values
            ))  # fmt: skip


SAME = 0.01
"""Two ratios closer than this count as the same in a paired comparison."""


def paired(measure: str, base: list[float], other: list[float]) -> str:
    """'measure higher on a, lower on b, the same on c (sign test p), median difference d': how
    one arm moved each feature against another (a median can move while most features move the
    other way)."""
    diffs = [o - b for b, o in zip(base, other, strict=True)]
    higher = sum(d >= SAME for d in diffs)
    lower = sum(d <= -SAME for d in diffs)
    return (f"{measure} higher on {higher}, lower on {lower}, the same on "
            f"{len(diffs) - higher - lower} (sign test p = {sign_test(higher, lower):.2f}), "
            f"median difference {statistics.median(diffs):+.2f}")  # fmt: skip


def sign_test(higher: int, lower: int) -> float:
    """Two-sided sign test: the chance of a split at least this uneven if either way were equally
    likely (the features that moved less than ``SAME`` left out)."""
    from scipy.stats import binomtest

    return float(binomtest(higher, higher + lower).pvalue) if higher + lower else 1.0


def report(args, chosen, records, reference, bound, p90, seconds):
    """Print one arm's table and per-feature lines; its summary row and its per-feature ratios
    by measure."""
    features = [f for f, _ in chosen]
    ref = reference.for_features(features)
    unconstrained = [r.refined_activation / ref[r.feature_id] for r in records]
    within90 = [r.best_within(p90.cross_entropy) for r in records]
    fluent90 = [
        (p["activation"] if p else 0.0) / ref[r.feature_id]
        for p, r in zip(within90, records, strict=True)
    ]
    fluent50 = [r.headline_ratio for r in records]
    search = [
        r.forward_passes_by_stage["soft"] + r.forward_passes_by_stage["refine"] for r in records
    ]
    check = statistics.mean(r.forward_passes_by_stage["check"] for r in records)
    print(
        f"search sequence-equivalents per feature (token-layers ÷ {bound.length + 1}-token "
        f"prompts to the hook): mean {statistics.mean(search):.0f}, max {max(search):.0f} "
        f"(budget {args.budget}); check {check:.0f} per feature; "
        f"{seconds:.0f} s for {len(records)} features ({seconds / len(records):.1f} s per feature)\n"
    )
    print(
        f"| median ratio (activation ÷ reference max), 95% interval, n = {len(records)} "
        "| measured | ≥ 1 |"
    )
    print("|---|---|---|")
    for name, values in [
        ("unconstrained", unconstrained),
        (f"fluent, CE ≤ real p90 ({p90.cross_entropy:.2f} nats/byte)", fluent90),
        (
            f"typical-text fluent, CE ≤ real p{100 * bound.quantile:g} ({bound.cross_entropy:.2f})",
            fluent50,
        ),
    ]:
        print(f"| {name} | {median_ci(values)} | {sum(v >= 1 for v in values)}/{len(values)} |")
    exemplar = [
        (r.exemplar_window["activation"] if r.exemplar_window else 0.0) / ref[r.feature_id]
        for r in records
    ]
    print(f"| best real window within the bound | {median_ci(exemplar)} | "
          f"{sum(v >= 1 for v in exemplar)}/{len(exemplar)} |")  # fmt: skip
    fired = sum(r.headline is not None for r in records)
    above = sum(h >= e for h, e in zip(fluent50, exemplar, strict=True))
    print(
        f"\nheadline for {fired}/{len(records)} features; headline ≥ best real window within "
        f"the bound for {above}/{len(records)}"
    )
    print()
    for (f, kind), r, u, f9 in zip(chosen, records, unconstrained, fluent90, strict=True):
        head = r.headline
        print(
            f"  {f:5d} {kind:<5} ref {ref[f]:7.2f}  unconstrained {u:5.2f} (CE {r.refined_cross_entropy:5.2f} nats/byte)  "
            f"≤p90 {f9:5.2f}  headline {r.headline_ratio:5.2f}"
            + (
                f" (CE {head['cross_entropy']:.2f}) {head['text']!r}"
                if head
                else "  (none fires within the bound)"
            )
        )
    values = {"unconstrained": unconstrained, "≤ p90": fluent90, "headline": fluent50}
    return [
        f"{statistics.mean(search):.0f}",
        median_ci(unconstrained),
        median_ci(fluent90),
        median_ci(fluent50),
        f"{fired}/{len(records)}",
        f"{above}/{len(records)}",
        f"{seconds / len(records):.1f}",
    ], values


if __name__ == "__main__":
    main()
