"""Inversion speed: F features inverted in one batch against the same F one after another.

Same features, same settings, same seed, on the default model (SmolLM2-135M) and the default SAE
(a random TopK SAE of the same shape when the default is not trained yet: the speed is the same).
Both arms run the same algorithm: every random draw, stopping rule and prefix-sharing choice is
per feature, so a feature does the same work alone as in the batch; both arms' sequence counts
are printed (they must be equal) and so is how many features ended on the same prompt. The
fluency bound is measured once beforehand and given to both arms.
Reports the whole search and each stage on its own (soft prompts only; refinement only),
since the two stages batch differently: a soft step forwards one prompt per feature, a
refinement step already forwards ``refine_candidates`` prompts per row.

    python bench/invert.py                   # F=16, 20 soft steps, 3 refinement steps
    python bench/invert.py --features 8 --soft-steps 10 --refine-steps 2
Target (DESIGN §11): ≥ 4× at F = 16 on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import torch


def load(device: str, sae_path: str | None = None):
    """The default model, and the default SAE (or a random TopK SAE of its shape), on ``device``."""
    from saeinverse.config import get_default_config, update_config
    from saeinverse.models.from_config import default_sae_path, load_subject_model

    config = update_config(get_default_config(), {"hardware": {"device": device}})
    model = load_subject_model(config)
    path = Path(sae_path) if sae_path else default_sae_path(config)
    if (path / "cfg.json").exists():
        from saeinverse.models.loading import load_sae

        return model, load_sae(path=str(path), device=str(model.cfg.device)), f"default SAE {path}"
    from sae_lens import TopKSAE, TopKSAEConfig

    train = config.sae.train
    cfg = TopKSAEConfig(
        d_in=model.cfg.d_model, d_sae=train.d_sae, k=train.k, device=str(model.cfg.device)
    )
    cfg.metadata.hook_name = train.hook_name
    torch.manual_seed(0)
    sae = TopKSAE(cfg).eval()
    sae.requires_grad_(False)
    return model, sae, "random TopK SAE (default not trained yet)"


def timed(fn) -> tuple[float, float, object]:
    """(wall seconds, this process's CPU seconds, result): CPU time is robust to other load."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - wall, time.process_time() - cpu, out


def compare(model, sae, features, settings, label, bound):
    from saeinverse.invert import optimize_feature, optimize_features

    b_wall, b_cpu, batched = timed(
        lambda: optimize_features(
            model, sae, features, settings, progress=False, fluency_bound=bound
        )
    )
    l_wall, l_cpu, looped = timed(
        lambda: [optimize_feature(model, sae, f, settings, fluency_bound=bound) for f in features]
    )
    b_seqs = sum(r.forward_passes for r in batched)
    l_seqs = sum(r.forward_passes for r in looped)
    same = sum(
        b.refined_tokens == one.refined_tokens for b, one in zip(batched, looped, strict=True)
    )
    print(
        f"{label:<18} batch {b_wall:6.1f} s (cpu {b_cpu:6.1f})  one by one {l_wall:6.1f} s "
        f"(cpu {l_cpu:6.1f})  ratio wall {l_wall / b_wall:4.2f}x cpu {l_cpu / b_cpu:4.2f}x  "
        f"sequences batch {b_seqs} / one by one {l_seqs}  same prompt {same}/{len(features)}",
        flush=True,
    )
    return l_wall / b_wall


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--features", type=int, default=16)
    parser.add_argument("--length", type=int, default=12)
    parser.add_argument("--soft-steps", type=int, default=20)
    parser.add_argument("--refine-steps", type=int, default=3)
    parser.add_argument("--candidates", type=int, default=64)
    parser.add_argument("--fluency-weight", type=float, default=1.0, help="0: no fluent row")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--sae", default=None, help="SAE folder (default: the cached default SAE)")
    parser.add_argument(
        "--stages", default="all,soft,refine", help="comma list of all, soft, refine"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    model, sae, what = load(args.device, args.sae)
    features = torch.randperm(int(sae.cfg.d_sae), generator=torch.Generator().manual_seed(0))[
        : args.features
    ].tolist()
    base = {
        "length": args.length,
        "max_steps": args.soft_steps,
        "refine_steps": args.refine_steps,
        "refine_candidates": args.candidates,
        "fluency_weight": args.fluency_weight,
        "patience": 10_000,  # no early stop: both sides run every step
        "max_sequences": None,  # the step counts bound the work
    }
    print(
        f"{model.cfg.model_name} on {model.cfg.device}, {torch.get_num_threads()} threads, {what}; "
        f"F={len(features)}, length {args.length}, {args.soft_steps} soft steps, "
        f"{args.refine_steps} refinement steps × {args.candidates} candidates"
    )
    from saeinverse.config import OptimizationConfig, as_section
    from saeinverse.invert import FeatureTarget, optimize_features
    from saeinverse.invert.fluency import default_bound

    bound = default_bound(FeatureTarget(model, sae), as_section(base, OptimizationConfig))
    optimize_features(
        model,
        sae,
        features[:2],
        {**base, "max_steps": 2, "refine_steps": 1},
        progress=False,
        fluency_bound=bound,
    )  # warm-up
    stages = {
        "all": ("whole pipeline", base),
        "soft": ("soft prompts only", {**base, "refine_steps": 0}),
        "refine": ("refinement only", {**base, "max_steps": 0}),
    }
    for name in args.stages.split(","):
        label, settings = stages[name.strip()]
        compare(model, sae, features, settings, label, bound)


if __name__ == "__main__":
    main()
