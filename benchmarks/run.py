"""clzoo's benchmarks, side by side with lightly / timm / PIL: `python benchmarks/run.py [--quick] [--only NAME]`.

Every ratio comes from runs alternated in this one process (A B, then B A, ...; the median of each side), with
the torch thread count fixed (`--threads`, stated in the table). A ratio above 1 means clzoo is faster (or, for
kNN, more accurate), except `overhead_vs_backbone`, where it is the method's step time over the bare backbone's.
Prints a markdown table and writes benchmarks/results/latest.json:
    {"machine": ..., "threads": ..., "quick": ..., "rows": [{"benchmark", "method", "clzoo", "baseline", "ratio",
     "unit", "goal", "met", "detail"}, ...]}
Needs the bench extra: `pip install -e ".[bench]"` (lightly)."""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import os
import platform
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
GOALS = {"train_throughput_vs_lightly": (">=", 1.25), "overhead_vs_backbone": ("<=", 1.10),
         "augment_vs_pil": (">=", 2.0), "decode_imagefolder": (None, None), "inference_vs_timm": (">=", 0.98),
         "knn_vs_lightly": (">=", 1.0)}
TRAIN_METHODS = ("simclr", "mocov2", "byol", "swav", "barlowtwins", "dino")


def alternate(candidates: dict, rounds: int, warmup: int = 1) -> dict[str, float]:
    """Median seconds per call of each candidate, the calls interleaved round by round (the order reversed every
    other round), so that drift of the machine (turbo, caches, other load) falls on every side alike."""
    names = list(candidates)
    for name in names:
        for _ in range(warmup):
            candidates[name]()
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            t = time.perf_counter()
            candidates[name]()
            times[name].append(time.perf_counter() - t)
    return {n: statistics.median(v) for n, v in times.items()}


def row(benchmark, method, clzoo, baseline, unit, ratio=None, detail=""):
    ratio = ratio if ratio is not None else (clzoo / baseline if baseline else float("nan"))
    op, goal = GOALS[benchmark]
    met = None if goal is None else (ratio >= goal if op == ">=" else ratio <= goal)
    return {"benchmark": benchmark, "method": method, "clzoo": clzoo, "baseline": baseline, "ratio": round(ratio, 3),
            "unit": unit, "goal": None if goal is None else f"{op} {goal}", "met": met, "detail": detail}


# ------------------------------------------------------------------------------------------------------------
# Training steps: clzoo's trainer (training/pretrain.py optimizer_step) vs lightly's example loop vs the backbone.

def bench_setting(method: str, quick: bool) -> dict:
    """The shared setting of one method: backbone, image size, batch, views, optimizer."""
    if method == "dino":
        return dict(model="vit_tiny_patch16_224", model_args={"patch_size": 4}, image_size=32, batch=32 if quick else 64,
                    local_views=4, local_size=16, optimizer="adamw", lr=5e-4, weight_decay=0.04)
    return dict(model="resnet18", model_args={}, image_size=32, batch=64 if quick else 128,
                local_views=4 if method == "swav" else 0, local_size=16, optimizer="sgd", lr=0.06, weight_decay=5e-4)


def clzoo_argv(method: str, s: dict, output: str, precision: str = "no") -> list[str]:
    from lightly_methods import BENCH_HEADS
    argv = ["--method", method, "--model", s["model"], "--image-size", str(s["image_size"]),
            "--batch-size", str(s["batch"]), "--output", output, "--optimizer", s["optimizer"], "--lr", str(s["lr"]),
            "--lr-scaling", "linear", "--weight-decay", str(s["weight_decay"]), "--warmup-epochs", "0",
            "--model-args", json.dumps(s["model_args"]), "--mixed-precision", precision, *BENCH_HEADS[method]]
    if s["local_views"]:
        argv += ["--aug.local_views", str(s["local_views"]), "--aug.local_size", str(s["local_size"]),
                 "--aug.local_scale", "[0.05,0.4]"]
    return argv


def clzoo_trainer(method: str, s: dict, steps_per_epoch: int = 1000, cpu: bool = True, precision: str = "no"):
    """(step(batch, step_index), method module, cfg): the real trainer step of pretrain.py (on the GPU with
    `cpu=False`, under Accelerate's autocast for `precision` "bf16" / "fp16")."""
    from accelerate import Accelerator

    from training.config import load_config
    from training.methods import TrainInfo
    from training.pretrain import Schedule, initial_method, make_optimizer, optimizer_step

    cfg = load_config(clzoo_argv(method, s, tempfile.mkdtemp(prefix="clzoo-bench-"), precision))
    info = TrainInfo(s["batch"] * steps_per_epoch, 10 * steps_per_epoch, steps_per_epoch, s["batch"], cfg["seed"])
    torch.manual_seed(0)
    module = initial_method(cfg, info, log=lambda *_: None)
    optimizer = make_optimizer(cfg, module)
    schedule = Schedule(cfg, info.total_steps, steps_per_epoch)
    accelerator = Accelerator(cpu=cpu, mixed_precision=precision)
    module, optimizer = accelerator.prepare(module, optimizer)
    module.train()

    def step(batch, i):
        return optimizer_step(accelerator, module, optimizer, [batch], i, cfg, schedule)[0]
    return step, accelerator.unwrap_model(module), cfg


def bench_views(method: str, s: dict, seed: int = 0, device: str = "cpu", views_only: bool = False):
    """One batch of the method's views (clzoo's ViewMaker on the embedded data, made on `device` as the trainer
    makes them), or with `views_only` the (ViewMaker, uint8 images, index) that make it."""
    from training.data import SyntheticShapes
    from training.data.transforms import build_views
    from training.config import load_config
    cfg = load_config(clzoo_argv(method, s, "unused"))
    aug = dict(cfg["aug"])
    views = build_views(aug.pop("preset"), s["image_size"], seed=seed, **aug)
    ds = SyntheticShapes("train", s["image_size"], seed, num_samples=s["batch"])
    images = torch.stack([im for im, _ in ds.__getitems__(list(range(s["batch"])))]).to(device)
    index = torch.arange(s["batch"], device=device)
    return (views, images, index) if views_only else views(images, index, 0)


def online_backbone(module):
    """The backbone the method trains by gradient (DINO's student; the others' `backbone`)."""
    return module.student_backbone if hasattr(module, "student_backbone") else module.backbone


def lightly_side(method: str, s: dict, module, views: list, device: str = "cpu"):
    """(lightly's example model of `method` on a copy of clzoo's online backbone, its optimizer, the views as
    lightly's collate gives them: contiguous NCHW)."""
    import lightly_methods
    backbone = copy.deepcopy(online_backbone(module)).requires_grad_(True)
    baseline = lightly_methods.build(method, backbone.to(memory_format=torch.contiguous_format)).to(device).train()
    optimizer = baseline.make_optimizer(s["optimizer"], s["lr"] * s["batch"] / 256, s["weight_decay"])
    return baseline, optimizer, [v.contiguous() for v in views]


def bench_train(quick: bool, methods=TRAIN_METHODS) -> list[dict]:
    rows = []
    rounds = 5 if quick else 9
    for method in methods:
        s = bench_setting(method, quick)
        batch = bench_views(method, s)
        step, module, _ = clzoo_trainer(method, s)
        backbone = copy.deepcopy(online_backbone(module)).requires_grad_(True)
        baseline, lopt, nchw = lightly_side(method, s, module, batch["views"])
        bare_opt = torch.optim.SGD(backbone.parameters(), lr=0.01, momentum=0.9)
        by_size: dict = {}
        for v in batch["views"]:
            by_size.setdefault(v.shape[-1], []).append(v)

        def bare():  # the backbone alone on the same views: forward, backward, optimizer step
            loss = sum(backbone(torch.cat(vs)).float().square().mean() for vs in by_size.values())
            loss.backward()
            bare_opt.step()
            bare_opt.zero_grad(set_to_none=True)

        counter = {"clzoo": 0}

        def clzoo_step():
            counter["clzoo"] += 1
            step(batch, counter["clzoo"])

        t = alternate({"clzoo": clzoo_step, "lightly": lambda: baseline.step(nchw, 1, lopt),
                       "backbone": bare}, rounds)
        images = s["batch"]
        setting = (f"{s['model']}{'/4' if method == 'dino' else ''} {s['image_size']} px, batch {s['batch']}, "
                   f"{len(batch['views'])} views, fp32, {s['optimizer']}")
        rows.append(row("train_throughput_vs_lightly", method, round(images / t["clzoo"], 1),
                        round(images / t["lightly"], 1), "images/s", detail=setting))
        rows.append(row("overhead_vs_backbone", method, round(t["clzoo"], 4), round(t["backbone"], 4), "s/step",
                        detail=setting))
        print(f"  {method}: clzoo {t['clzoo']:.3f} s, lightly {t['lightly']:.3f} s, backbone {t['backbone']:.3f} s",
              flush=True)
    return rows


# ------------------------------------------------------------------------------------------------------------
# Augmentation: clzoo's batched tensor presets vs per-image PIL pipelines of the same ops.

def bench_augment(quick: bool) -> list[dict]:
    from PIL import Image

    from pil_pipelines import pil_views
    from training.data import SyntheticShapes
    from training.data.transforms import PRESETS, build_views

    rows = []
    sizes = [(32, 40, 128), (224, 256, 16 if quick else 32)]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # images/s per core: one core for both sides
    try:
        for out, src, B in sizes:
            ds = SyntheticShapes("train", src, 0, num_samples=B)
            images = torch.stack([im for im, _ in ds.__getitems__(list(range(B)))])
            pil = [Image.fromarray(im.permute(1, 2, 0).numpy()) for im in images]
            for preset in PRESETS:
                kw = dict(local_views=6, local_size=out * 96 // 224) if preset == "dino" else {}
                maker = build_views(preset, out, **kw)
                views = pil_views(preset, out, **kw)
                epoch = {"e": 0}

                def tensor_side():
                    epoch["e"] += 1
                    maker(images, torch.arange(B), epoch["e"])

                def pil_side():
                    for im in pil:
                        [v(im) for v in views]

                t = alternate({"clzoo": tensor_side, "pil": pil_side}, 3 if quick else 5)
                rows.append(row("augment_vs_pil", f"{preset} {out}px", round(B / t["clzoo"], 1), round(B / t["pil"], 1),
                                "images/s/core", detail=f"{len(maker.views)} views of {src}-px uint8 images, batch {B}, "
                                                        "1 thread"))
                print(f"  augment {preset} {out}px: clzoo {B / t['clzoo']:.0f}, PIL {B / t['pil']:.0f} images/s", flush=True)
    finally:
        torch.set_num_threads(threads)
    return rows


# ------------------------------------------------------------------------------------------------------------
# Data loading: JPEG decode + resize of the ImageFolder path.

def make_jpeg_folder(root: str, n: int, side: int = 500) -> str:
    """`n` real JPEG files of `side` x `side` px (smooth colour fields + noise, quality 90) in ROOT/c0, ROOT/c1."""
    from PIL import Image
    g = torch.Generator().manual_seed(0)
    for i in range(n):
        d = os.path.join(root, f"c{i % 2}")
        os.makedirs(d, exist_ok=True)
        low = torch.rand(1, 3, 8, 8, generator=g)
        img = torch.nn.functional.interpolate(low, size=(side, side), mode="bicubic", align_corners=False)[0]
        img = (img + 0.08 * torch.randn(img.shape, generator=g)).clamp(0, 1)
        Image.fromarray((img * 255).byte().permute(1, 2, 0).numpy()).save(os.path.join(d, f"{i:05d}.jpg"), quality=90)
    return root


def bench_decode(quick: bool) -> list[dict]:
    import torchvision
    import torchvision.transforms as T

    from training.data import ImageFolderDataset

    n = 64 if quick else 256
    rows = []
    with tempfile.TemporaryDirectory() as root:
        make_jpeg_folder(root, n)
        for size in (224, 32):
            pil_ds = ImageFolderDataset(root, size, decode="pil")
            tv_ds = ImageFolderDataset(root, size, decode="torchvision")
            baseline = torchvision.datasets.ImageFolder(root, transform=T.Compose(
                [T.Resize(round(size * 256 / 224)), T.PILToTensor()]))
            t = alternate({"pil": lambda: [pil_ds[i] for i in range(n)],
                           "torchvision": lambda: [tv_ds[i] for i in range(n)],
                           "baseline": lambda: [baseline[i] for i in range(n)]}, 3 if quick else 5)
            for name in ("pil", "torchvision"):
                rows.append(row("decode_imagefolder", f"--data-decode {name}, {size}px", round(n / t[name], 1),
                                round(n / t["baseline"], 1), "images/s",
                                detail=f"{n} JPEGs 500x500 q90, decode + resize short side to {round(size * 256 / 224)}, "
                                       "vs torchvision ImageFolder + Resize + PILToTensor"))
            print(f"  decode {size}px: pil {n / t['pil']:.0f}, torchvision {n / t['torchvision']:.0f}, "
                  f"baseline {n / t['baseline']:.0f} images/s", flush=True)
    return rows


# ------------------------------------------------------------------------------------------------------------
# Inference: clzoo.create_model vs the same timm model.

def bench_inference(quick: bool) -> list[dict]:
    import timm

    import clzoo
    rows = []
    cases = [("resnet50", "mocov2_resnet50", 224, 16), ("vit_small_patch16_224", "dino_vits16", 224, 16)]
    for timm_name, entry, size, B in cases:
        torch.manual_seed(0)
        ours = clzoo.create_model(entry, pretrained=False).eval()
        theirs = timm.create_model(timm_name, pretrained=False, num_classes=0).eval()
        theirs.load_state_dict(ours.state_dict())
        x = torch.randn(B, 3, size, size)
        with torch.inference_mode():
            t = alternate({"clzoo": lambda: ours(x), "timm": lambda: theirs(x)}, 9 if quick else 15)
        rows.append(row("inference_vs_timm", entry, round(B / t["clzoo"], 1), round(B / t["timm"], 1), "images/s",
                        detail=f"clzoo.create_model({entry!r}) vs timm.create_model({timm_name!r}), batch {B}, "
                               f"{size} px, fp32, inference_mode"))
        print(f"  inference {entry}: clzoo {B / t['clzoo']:.1f}, timm {B / t['timm']:.1f} images/s", flush=True)
    return rows


# ------------------------------------------------------------------------------------------------------------
# Quality at an equal budget: kNN accuracy after the same epochs, backbone, batch and views.

def knn_setting(quick: bool) -> dict:
    return dict(num_samples=2048 if quick else 4096, epochs=3 if quick else 8, test_samples=1000 if quick else 2000)


def clzoo_knn(method: str, seed: int, k: dict) -> float:
    from training.config import load_config
    from training.pretrain import train
    s = bench_setting(method, quick=False)
    with tempfile.TemporaryDirectory() as out:
        argv = clzoo_argv(method, s, out) + [
            "--seed", str(seed), "--epochs", str(k["epochs"]), "--data-args", json.dumps({"num_samples": k["num_samples"]}),
            "--aug.blur", "0", "--knn.every", str(k["epochs"]), "--knn.test_samples", str(k["test_samples"]),
            "--save-every", "100000", "--log-every", "100000"]
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            results = train(load_config(argv))
    return results["knn_top1"]


def lightly_knn(method: str, seed: int, k: dict) -> float:
    import numpy as np
    from PIL import Image

    import lightly_methods
    from lightly.utils.scheduler import cosine_schedule
    from training.config import load_config
    from training.data import build_dataset
    from training.monitor import eval_view, knn_eval
    from training.pretrain import build_backbone

    s = bench_setting(method, quick=False)
    cfg = load_config(clzoo_argv(method, s, "unused") + ["--seed", str(seed)])
    torch.manual_seed(seed)
    model = lightly_methods.build(method, build_backbone(cfg).to(memory_format=torch.contiguous_format)).train()
    train_set = build_dataset("synthetic", "train", s["image_size"], seed, num_samples=k["num_samples"])
    test_set = build_dataset("synthetic", "test", s["image_size"], seed)
    transform = lightly_methods.transform(method, s["image_size"], s["local_views"], s["local_size"])
    B = s["batch"]
    steps_per_epoch = len(train_set) // B
    total = k["epochs"] * steps_per_epoch
    optimizer = model.make_optimizer(s["optimizer"], s["lr"] * B / 256, s["weight_decay"])
    base_lrs = [g["lr"] for g in optimizer.param_groups]
    rng = np.random.default_rng(seed)
    step = 0
    for epoch in range(k["epochs"]):
        order = rng.permutation(len(train_set))
        for b in range(steps_per_epoch):
            items = train_set.__getitems__(order[b * B:(b + 1) * B].tolist())
            views = [transform(Image.fromarray(im.permute(1, 2, 0).numpy())) for im, _ in items]
            views = [torch.stack(v) for v in zip(*views)]
            for g, lr in zip(optimizer.param_groups, base_lrs):
                g["lr"] = lr * 0.5 * (1 + np.cos(np.pi * step / total))
            model.step(views, epoch, optimizer, momentum=cosine_schedule(step, total, 0.996, 1.0))
            step += 1
    knn = dict(cfg["knn"])
    knn.pop("every")
    knn["test_samples"] = k["test_samples"]
    return knn_eval(model.backbone, eval_view(train_set, s["image_size"], "synthetic"),
                    eval_view(test_set, s["image_size"], "synthetic"), **knn)


def bench_knn(quick: bool, seeds=(0, 1, 2)) -> list[dict]:
    rows = []
    k = knn_setting(quick)
    methods = ("simclr", "byol", "barlowtwins") if quick else ("simclr", "mocov2", "byol", "swav", "barlowtwins")
    for method in methods:
        ours = [clzoo_knn(method, seed, k) for seed in seeds]
        theirs = [lightly_knn(method, seed, k) for seed in seeds]
        mo, so = statistics.mean(ours), statistics.stdev(ours)
        mt, st = statistics.mean(theirs), statistics.stdev(theirs)
        rows.append(row("knn_vs_lightly", method, f"{mo:.3f} ± {so:.3f}", f"{mt:.3f} ± {st:.3f}", "kNN top-1",
                        ratio=mo / mt, detail=f"resnet18 32 px, batch 128, {k['epochs']} epochs of {k['num_samples']} "
                                              f"synthetic images, seeds {list(seeds)}, each library's own views; "
                                              f"clzoo {ours}, lightly {theirs}"))
        print(f"  knn {method}: clzoo {mo:.3f} ± {so:.3f}, lightly {mt:.3f} ± {st:.3f}", flush=True)
    return rows


BENCHMARKS = {"train": bench_train, "augment": bench_augment, "decode": bench_decode, "inference": bench_inference,
              "knn": bench_knn}


def machine(threads: int) -> str:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    return (f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({threads} threads), "
            f"{'CUDA ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU'}")


def markdown(rows: list[dict]) -> str:
    lines = ["| benchmark | method | clzoo | baseline | ratio | goal | unit |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        mark = "" if r["met"] is None else (" ✓" if r["met"] else " ✗")
        lines.append(f"| {r['benchmark']} | {r['method']} | {r['clzoo']} | {r['baseline']} | {r['ratio']}{mark} | "
                     f"{r['goal'] or ''} | {r['unit']} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="smaller batches, fewer rounds and seeds' budget (~15 min on 2 cores)")
    p.add_argument("--only", nargs="*", choices=sorted(BENCHMARKS), help="run only these benchmarks")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads (stated in the table)")
    p.add_argument("--output", default=os.path.join(RESULTS, "latest.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    t0 = time.time()
    for name, fn in BENCHMARKS.items():
        if args.only and name not in args.only:
            continue
        print(f"{name} ...", flush=True)
        rows += fn(args.quick)
    result = {"machine": machine(args.threads), "threads": args.threads, "quick": args.quick,
              "seconds": round(time.time() - t0, 1), "rows": rows}
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(result, f, indent=1)
    print(f"\n{result['machine']}; {'--quick, ' if args.quick else ''}{result['seconds']:.0f} s\n")
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
