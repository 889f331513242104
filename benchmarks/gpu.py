"""GPU rows of the benchmarks: DINO ViT-S/16 (2 x 224 px + 8 x 96 px views) and SimCLR ResNet-50 (2 x 224 px) in
bf16, at the largest batch that fits, clzoo's trainer step vs lightly's example step on the same views.

    python benchmarks/gpu.py [--methods dino simclr] [--batches 512 256 128 64] [--output FILE]
    python benchmarks/gpu.py --quick      # CPU smoke run: ViT-tiny / ResNet-18 at 32 px, fp32, tiny batches

For each method: the batch (the largest of `--batches` at which both sides take a step), images/s of each side
(alternated rounds, as benchmarks/run.py times them), the peak GPU memory of each side's own steps, the GPU
utilisation sampled while each side runs alone (`torch.cuda.utilization`, needs pynvml; null without it), and
clzoo's view making on the GPU (the trainer augments on the device) in images/s. Writes
benchmarks/results/gpu.json and prints a markdown table."""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

import run as bench  # noqa: E402

SETTINGS = {
    "dino": dict(model="vit_small_patch16_224", model_args={}, image_size=224, local_views=8, local_size=96,
                 optimizer="adamw", lr=5e-4, weight_decay=0.04),
    "simclr": dict(model="resnet50", model_args={}, image_size=224, local_views=0, local_size=96,
                   optimizer="sgd", lr=0.3, weight_decay=1e-6),
}
QUICK = {
    "dino": dict(SETTINGS["dino"], model="vit_tiny_patch16_224", model_args={"patch_size": 4}, image_size=32,
                 local_views=2, local_size=16),
    "simclr": dict(SETTINGS["simclr"], model="resnet18", image_size=32),
}


def is_oom(err: BaseException) -> bool:
    return isinstance(err, torch.cuda.OutOfMemoryError) or "out of memory" in str(err).lower()


def largest_batch(try_batch, batches) -> tuple[int, object]:
    """(batch, try_batch(batch)) for the largest of `batches` whose trial does not run out of memory; other
    errors propagate. Raises RuntimeError when none fits."""
    tried = []
    for b in sorted(batches, reverse=True):
        try:
            return b, try_batch(b)
        except (RuntimeError, torch.cuda.OutOfMemoryError) as err:
            if not is_oom(err):
                raise
            tried.append(b)
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    raise RuntimeError(f"no batch of {tried} fits in memory; pass smaller --batches")


class UtilisationSampler:
    """Mean GPU utilisation (%) over a `with` block, sampled every `period` s; None without pynvml / a GPU."""

    def __init__(self, period: float = 0.05):
        self.period, self.samples, self.mean = period, [], None
        try:
            self.enabled = torch.cuda.is_available() and torch.cuda.utilization() is not None
        except Exception:  # pynvml missing or NVML unavailable
            self.enabled = False

    def _loop(self):
        while not self._stop.is_set():
            self.samples.append(torch.cuda.utilization())
            time.sleep(self.period)

    def __enter__(self):
        if self.enabled:
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.enabled:
            self._stop.set()
            self._thread.join()
            self.mean = round(sum(self.samples) / max(len(self.samples), 1), 1)


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def build_sides(method: str, s: dict, device: str, precision: str):
    """clzoo's trainer step and lightly's example step (same backbone copy, heads and views) at s["batch"]."""
    step, module, _ = bench.clzoo_trainer(method, s, cpu=device == "cpu", precision=precision)
    maker, images, index = bench.bench_views(method, s, device=device, views_only=True)
    batch = maker(images, index, 0)
    baseline, lopt, nchw = bench.lightly_side(method, s, module, batch["views"], device)
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision) if device != "cpu" else None
    counter = [0]

    def clzoo_step():
        counter[0] += 1
        step(batch, counter[0])
        sync()

    def lightly_step():  # lightly's examples under torch.autocast, as Accelerate's mixed precision runs clzoo's
        with torch.autocast("cuda", dtype=amp_dtype, enabled=amp_dtype is not None):
            baseline.step(nchw, 1, lopt)
        sync()

    def make_views():
        maker(images, index, 1)
        sync()

    return {"clzoo": clzoo_step, "lightly": lightly_step, "views": make_views, "n_views": len(batch["views"])}


def alone(fn, steps: int) -> tuple[float | None, float | None]:
    """(peak GPU memory in GiB, mean utilisation %) of `steps` calls of `fn` by itself."""
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    with UtilisationSampler() as util:
        for _ in range(steps):
            fn()
    peak = round(torch.cuda.max_memory_allocated() / 2**30, 2) if torch.cuda.is_available() else None
    return peak, util.mean


def bench_method(method: str, s: dict, batches, device: str, precision: str, rounds: int, steps: int) -> dict:
    def trial(b):
        sides = build_sides(method, dict(s, batch=b), device, precision)
        sides["clzoo"]()
        sides["lightly"]()
        return sides

    batch, sides = largest_batch(trial, batches)
    t = bench.alternate({"clzoo": sides["clzoo"], "lightly": sides["lightly"]}, rounds)
    t_views = bench.alternate({"views": sides["views"]}, rounds)["views"]
    mem_c, util_c = alone(sides["clzoo"], steps)
    mem_l, util_l = alone(sides["lightly"], steps)
    return {"method": method, "model": s["model"], "image_size": s["image_size"], "views": sides["n_views"],
            "precision": precision, "batch": batch,
            "clzoo_images_s": round(batch / t["clzoo"], 1), "lightly_images_s": round(batch / t["lightly"], 1),
            "ratio": round(t["lightly"] / t["clzoo"], 3), "clzoo_peak_gib": mem_c, "lightly_peak_gib": mem_l,
            "clzoo_util_pct": util_c, "lightly_util_pct": util_l,
            "clzoo_views_images_s": round(batch / t_views, 1)}


def markdown(rows) -> str:
    lines = ["| method | model | batch | views | clzoo img/s | lightly img/s | ratio | peak GiB (clzoo / lightly) | "
             "GPU util % (clzoo / lightly) | clzoo views img/s |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['model']} {r['image_size']} px {r['precision']} | {r['batch']} | "
                     f"{r['views']} | {r['clzoo_images_s']} | {r['lightly_images_s']} | {r['ratio']} | "
                     f"{r['clzoo_peak_gib']} / {r['lightly_peak_gib']} | {r['clzoo_util_pct']} / "
                     f"{r['lightly_util_pct']} | {r['clzoo_views_images_s']} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="CPU smoke run: tiny models at 32 px, fp32")
    p.add_argument("--methods", nargs="*", default=list(SETTINGS), choices=sorted(SETTINGS))
    p.add_argument("--batches", nargs="*", type=int, default=[1024, 512, 256, 128, 64, 32])
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--steps", type=int, default=5, help="steps of each side alone, for memory and utilisation")
    p.add_argument("--output", default=os.path.join(bench.RESULTS, "gpu.json"))
    args = p.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() and not args.quick else "cpu"
    precision = "bf16" if device == "cuda" else "no"
    settings = QUICK if args.quick else SETTINGS
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    rows = []
    for method in args.methods:
        print(f"{method} ...", flush=True)
        rows.append(bench_method(method, settings[method], args.batches, device, precision, args.rounds, args.steps))
        print(f"  {rows[-1]}", flush=True)
    result = {"machine": bench.machine(torch.get_num_threads()), "device": device, "quick": args.quick, "rows": rows}
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(result, f, indent=1)
    print(f"\n{result['machine']}\n\n{markdown(rows)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
