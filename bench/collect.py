"""Benchmark stage 1 on the default model: collection speed against a bare forward, and memory.

Speed: tokens/s of `collect_activations` (tokenization, forward stopped at the SAE's layer, SAE
encode, every statistic) divided by tokens/s of a bare `model(tokens, stop_at_layer=...)` over
the same batches. Target >= 0.90. Runs alternate and the median of each is used; both process
CPU time (robust on a shared machine) and wall time are reported, with 1 torch thread by default.

Memory: one subprocess per n_prompts; the peak resident set during collection above the
resident set just before it (Linux VmHWM, reset through /proc/self/clear_refs; else psutil
sampling). Growth should come only from the per-prompt matrix.

    .venv/bin/python bench/collect.py [--speed-prompts 200] [--sizes 200 2000] [--repeats 3]
                                      [--threads 1] [--skip-speed]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

HOOK = "blocks.9.hook_resid_post"
D_SAE, K = 4608, 32


def load_models():
    """The default model and the trained default SAE (or a random TopK SAE of the same shape)."""
    from saeinverse.config import get_default_config
    from saeinverse.models.from_config import default_sae_path
    from saeinverse.models.loading import load_model, load_sae

    model = load_model("smollm2-135m")
    folder = default_sae_path(get_default_config())
    if (folder / "sae_weights.safetensors").exists():
        return model, load_sae(path=str(folder)), f"trained default SAE ({folder})"
    from sae_lens import TopKSAE, TopKSAEConfig

    cfg = TopKSAEConfig(d_in=model.cfg.d_model, d_sae=D_SAE, k=K, dtype="float32", device="cpu")
    cfg.metadata.hook_name = HOOK
    torch.manual_seed(0)
    sae = TopKSAE(cfg).eval().requires_grad_(False)
    return model, sae, "random TopK SAE (no trained default found; same encoding cost)"


def data_config(n_prompts: int):
    from saeinverse.config import get_default_config, update_config

    return update_config(get_default_config(), {"data": {"n_prompts": n_prompts}}).data


class Clock:
    """Wall-clock and process CPU seconds of a block (CPU time barely moves with other load)."""

    def __enter__(self) -> Clock:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu


def bare_forward(model, batches, stop_at_layer: int) -> Clock:
    with Clock() as clock, torch.inference_mode():
        for tokens in batches:
            model(tokens, stop_at_layer=stop_at_layer)
    return clock


def forward_and_encode(model, sae, batches) -> Clock:
    from saeinverse.collect.activations import hook_activations

    with Clock() as clock, torch.inference_mode():
        for tokens in batches:
            sae.encode(hook_activations(model, tokens, HOOK))
    return clock


def collect(model, sae, prompts, cfg) -> Clock:
    from saeinverse.collect.activations import collect_activations

    with Clock() as clock:
        collect_activations(model, sae, prompts, cfg, progress=False)
    return clock


def speed(n_prompts: int, repeats: int) -> None:
    from saeinverse.collect.activations import tokenize_prompts
    from saeinverse.data.sources import load_prompts
    from saeinverse.models.loading import stop_at_layer_for

    model, sae, which = load_models()
    cfg = data_config(n_prompts)
    prompts = load_prompts(cfg, seed=0)
    tokenized = tokenize_prompts(model, prompts, cfg.max_length)
    batches = [tokenized.batch_tokens(i) for i in tokenized.batches(cfg.batch_size)]
    n_tokens = int(tokenized.lengths.sum())
    stop = stop_at_layer_for(HOOK)
    print(
        f"speed: {which}; {len(prompts)} prompts, {n_tokens} tokens, "
        f"{torch.get_num_threads()} torch thread(s), {repeats} alternating runs, medians"
    )
    bare_forward(model, batches[:2], stop)  # warm-up
    runs: dict[str, list[Clock]] = {"bare": [], "encode": [], "collect": []}
    for _ in range(repeats):
        runs["bare"].append(bare_forward(model, batches, stop))
        runs["encode"].append(forward_and_encode(model, sae, batches))
        runs["collect"].append(collect(model, sae, prompts, cfg))
    for unit in ("cpu", "wall"):
        med = {k: statistics.median(getattr(c, unit) for c in v) for k, v in runs.items()}
        each = {k: _fmt([getattr(c, unit) for c in v]) for k, v in runs.items()}
        print(f"  [{unit} time] tokens per {unit} second:")
        print(f"    bare forward to layer {stop}: {n_tokens / med['bare']:7.0f}  ({each['bare']})")
        print(f"    forward + SAE encode:      {n_tokens / med['encode']:7.0f}  ({each['encode']})")
        print(
            f"    collect_activations:       {n_tokens / med['collect']:7.0f}  ({each['collect']})"
        )
        print(
            f"    ratio collect / bare forward:       {med['bare'] / med['collect']:.3f}  (target >= 0.90)"
        )
        print(
            f"    ratio (forward + encode) / bare:    {med['bare'] / med['encode']:.3f}  (the SAE's own cost)"
        )
        print(
            f"    ratio collect / (forward + encode): {med['encode'] / med['collect']:.3f}  (the statistics' cost)"
        )


def _fmt(values: list[float]) -> str:
    return ", ".join(f"{v:.2f}s" for v in values)


# ----------------------------------------------------------------------------- memory


def _rss_status() -> dict[str, int]:
    fields = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) * 1024
    return fields


def memory_child(n_prompts: int) -> None:
    """Runs in a subprocess: print JSON with the RSS before collection and the peak during it."""
    import psutil

    from saeinverse.collect.activations import collect_activations
    from saeinverse.data.sources import load_prompts

    model, sae, _ = load_models()
    cfg = data_config(n_prompts)
    prompts = load_prompts(cfg, seed=0)
    with torch.inference_mode():  # warm up allocator and kernels on two prompts
        collect_activations(model, sae, prompts[:2], cfg, progress=False)
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM (Linux >= 4.0)
        method = "VmHWM"
    except OSError:
        method = "psutil sampling"
    before = _rss_status()["VmRSS"]
    peak = [before]
    done = threading.Event()

    def sample() -> None:
        process = psutil.Process()
        while not done.wait(0.02):
            peak[0] = max(peak[0], process.memory_info().rss)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    with Clock() as clock:
        stats = collect_activations(model, sae, prompts, cfg, progress=False)
    seconds = clock.wall
    done.set()
    sampler.join()
    if method == "VmHWM":
        peak[0] = max(peak[0], _rss_status()["VmHWM"])
    matrix_bytes = stats.prompt_feature_index.nbytes + stats.prompt_feature_values.nbytes
    print(
        json.dumps(
            dict(
                n_prompts=stats.n_prompts,
                n_tokens=stats.n_tokens,
                rss_before=before,
                peak=peak[0],
                method=method,
                seconds=seconds,
                matrix_nnz=int(stats.prompt_feature_values.numel()),
                matrix_bytes=matrix_bytes,
                token_mass_nnz=int(stats.token_mass_values.numel()),
            )
        )
    )


def memory(sizes: list[int], threads: int) -> None:
    results = []
    for n in sizes:
        out = subprocess.run(
            [sys.executable, __file__, "--memory-child", str(n), "--threads", str(threads)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        results.append(json.loads(out.strip().splitlines()[-1]))
    mib = 1 << 20
    print(f"memory (peak RSS during collection above RSS before it; {results[0]['method']}):")
    for r in results:
        growth = (r["peak"] - r["rss_before"]) / mib
        print(
            f"  n_prompts {r['n_prompts']:5d} ({r['n_tokens']:6d} tokens, {r['seconds']:.0f}s): "
            f"+{growth:7.1f} MiB over {r['rss_before'] / mib:.0f} MiB; per-prompt matrix "
            f"{r['matrix_nnz']} entries = {r['matrix_bytes'] / mib:.1f} MiB; "
            f"token mass {r['token_mass_nnz']} entries"
        )
    if len(results) >= 2:
        a, b = results[0], results[-1]
        growth_a, growth_b = a["peak"] - a["rss_before"], b["peak"] - b["rss_before"]
        print(
            f"  ratio of peak growth {b['n_prompts']} / {a['n_prompts']} prompts: "
            f"{growth_b / max(growth_a, 1):.2f} (prompts ratio {b['n_prompts'] / a['n_prompts']:.0f})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--speed-prompts", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", type=int, nargs="*", default=[200, 2000])
    parser.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1: stable on a shared machine)"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_child:
        memory_child(args.memory_child)
        return
    if not args.skip_speed:
        speed(args.speed_prompts, args.repeats)
    if args.sizes:
        memory(args.sizes, args.threads)


if __name__ == "__main__":
    main()
