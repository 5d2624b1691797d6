"""Ray engine speed-up: the same collection and the same inversion on 1 and on 2 Ray workers.

Default model (SmolLM2-135M) and default SAE (trained on first use), one torch thread per worker,
a local Ray. Both arms do identical work: the same prompts cut into the same shards, the same
features in the same batches, the same seed (the script checks that both give equal results).
Workers are started and have loaded the models before the clock starts: the figures are steady
throughput, not start-up. One process without Ray (1 thread) is timed too, for Ray's overhead.
The workers' own CPU seconds are read too: "busy N cores" is the CPU the workers obtained, and
tokens per CPU-second / CPU-ms per sequence are per-worker costs that other load cannot inflate.

    python bench/scale.py                        # 64 prompts × 64 tokens, 4 features
    python bench/scale.py --prompts 128 --features 8 --gpus-per-worker 1   # on a GPU machine
Target (DESIGN §11): ≥ 1.7× for 2 workers on 2 cores. Load from other processes on the machine
depresses the ratio: the script prints the load average before and after.
"""

from __future__ import annotations

import argparse
import logging
import os
import time

import torch


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def warm_pool(config, identity):
    """Start the workers for ``config`` and wait until every one has loaded the models."""
    import ray

    from saeinverse.scale import ray_pool

    pool = ray_pool(config, identity)
    ray.get([actor.ready.remote() for actor in pool.actors])
    return pool


def worker_cpu(pool) -> float:
    """CPU seconds used so far by the pool's workers, summed."""
    import ray

    return sum(ray.get([a.cpu_seconds.remote() for a in pool.actors]))


def pick_features(stats, n: int) -> list[int]:
    """``n`` features of density 1e-3..5e-2 with the most firing tokens (deterministic)."""
    density = stats.density
    band = ((density >= 1e-3) & (density <= 5e-2)).nonzero().squeeze(1)
    order = stats.firing_count[band].argsort(descending=True, stable=True)
    return band[order][:n].tolist()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--shard-prompts", type=int, default=16)
    parser.add_argument("--features", type=int, default=4)
    parser.add_argument("--feature-batch", type=int, default=2)
    parser.add_argument("--soft-steps", type=int, default=20)
    parser.add_argument("--refine-steps", type=int, default=3)
    parser.add_argument("--gpus-per-worker", type=float, default=0.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    import ray

    from saeinverse.collect.activations import collect_activations
    from saeinverse.collect.sharded import collect_prompts
    from saeinverse.config import get_default_config, update_config
    from saeinverse.data.sources import load_prompts
    from saeinverse.invert import FeatureTarget, dataset_maxima
    from saeinverse.invert.fluency import default_bound
    from saeinverse.invert.stage import InvertInputs, InvertTarget, invert_features
    from saeinverse.models.from_config import load_experiment_sae, load_subject_model
    from saeinverse.models.identity import models_identity
    from saeinverse.scale import close_pools

    print(f"load average before: {os.getloadavg()}", flush=True)
    base = update_config(
        get_default_config(),
        {
            "data": {"n_prompts": args.prompts, "max_length": args.max_length},
            "optimization": {"max_steps": args.soft_steps, "refine_steps": args.refine_steps},
            "scale": {
                "engine": "ray",
                "threads_per_worker": 1,
                "gpus_per_worker": args.gpus_per_worker,
                "shard_prompts": args.shard_prompts,
                "feature_batch": args.feature_batch,
            },
        },
    )
    torch.set_num_threads(1)
    model = load_subject_model(base)
    sae = load_experiment_sae(base, model)  # trains the default SAE once if it is missing
    prompts = load_prompts(base.data, seed=base.seed)
    local_s, local = timed(
        lambda: collect_activations(model, sae, prompts, base.data, progress=False)
    )
    features = pick_features(local, args.features)
    target = FeatureTarget(model, sae, base.optimization.position, base.data.exclude_bos)
    bound = default_bound(target, base.optimization, base.seed)  # given to both arms
    maxima = dataset_maxima(local, features)
    inputs = InvertInputs(tuple(InvertTarget(f, maxima[f]) for f in features), bound)
    identity = models_identity(model, sae)
    print(
        f"work: collect {local.n_prompts} prompts / {local.n_tokens} tokens in "
        f"{-(-len(prompts) // args.shard_prompts)} shards; invert features {features} in "
        f"batches of {args.feature_batch} ({args.soft_steps} soft + {args.refine_steps} "
        f"refinement steps); local collection (no Ray, 1 thread) {local_s:.1f} s",
        flush=True,
    )
    ray.init(num_cpus=max(2, os.cpu_count() or 1), include_dashboard=False, log_to_driver=False)
    figures = {}
    for workers in (1, 2):
        config = update_config(base, {"scale": {"workers": workers}})
        start_s, pool = timed(lambda c=config: warm_pool(c, identity))
        cpu0 = worker_cpu(pool)
        collect_s, stats = timed(
            lambda c=config, p=pool: collect_prompts(
                p, prompts, c.data, seed=c.seed, shard_prompts=args.shard_prompts, progress=False
            )
        )
        cpu1 = worker_cpu(pool)
        invert_s, inversions = timed(
            lambda c=config, p=pool: invert_features(
                p,
                inputs,
                c.optimization,
                seed=c.seed,
                batch_size=args.feature_batch,
                progress=False,
            )  # fmt: skip
        )
        cpu2 = worker_cpu(pool)
        assert torch.equal(stats.firing_count, local.firing_count), "collection differs"
        figures[workers] = (collect_s, invert_s, inversions)
        passes = sum(r.forward_passes for r in inversions)
        print(
            f"{workers} worker(s): start {start_s:5.1f} s | collect {collect_s:6.1f} s "
            f"({stats.n_tokens / collect_s:7.1f} tokens/s; workers busy "
            f"{(cpu1 - cpu0) / collect_s:4.2f} cores, {stats.n_tokens / (cpu1 - cpu0):6.1f} tokens "
            f"per CPU-second) | invert {invert_s:6.1f} s ({invert_s / len(features):5.1f} "
            f"s/feature, {passes} sequences; workers busy {(cpu2 - cpu1) / invert_s:4.2f} cores, "
            f"{(cpu2 - cpu1) / passes * 1000:5.1f} CPU-ms per sequence)",
            flush=True,
        )
    close_pools()
    (c1, i1, inv1), (c2, i2, inv2) = figures[1], figures[2]
    same = sum(a.refined_tokens == b.refined_tokens for a, b in zip(inv1, inv2, strict=True))
    print(
        f"speed-up 2 vs 1 worker: collection {c1 / c2:4.2f}x, inversion {i1 / i2:4.2f}x "
        f"(target >= 1.7x); same refined prompt {same}/{len(features)}; "
        f"Ray overhead (1 worker vs no Ray, collection) {c1 / local_s:4.2f}x",
        flush=True,
    )
    print(f"load average after: {os.getloadavg()}", flush=True)


if __name__ == "__main__":
    main()
