"""SimCLR v2's semi-supervised stage 2 (Chen, Kornblith, Swersky, Norouzi, Hinton, "Big Self-Supervised Models
are Strong Semi-Supervised Learners", NeurIPS 2020, §2): fine-tune a pretrained encoder on a labelled fraction
of the training set, from a middle layer of its projection head.

    python training/finetune.py --model runs/simclrv2 --label-fraction 0.1 --from-head-layer 1 --output runs/ft
    python training/finetune.py --model mocov2_resnet50 --data /data/imagenet --label-fraction 0.01 --output ft
    python training/finetune.py --model runs/simclrv2 --random-init --label-fraction 0.1 --output runs/scratch

`--model`: a training run directory (its exported encoder, and with `--from-head-layer k` the first k layers of
its projection head from checkpoint.pt: Linear-BN-ReLU each, SimCLR v2's "fine-tuning from the first layer"
for k = 1) or any clzoo / timm name (the encoder alone: k = 0). The network is the trunk, that neck and a new
linear classifier (clzoo `head_classifier`); everything is trained (SGD with momentum, cosine, no weight decay
as in SimCLR v2's fine-tuning) on crop + flip views of the labelled images: `--label-fraction` of each class,
drawn from the seed. Writes OUT/model.safetensors + config.json (loads with `clzoo.create_model("local-dir:OUT",
pretrained=True)`, logits out), OUT/labelled.json (the subset) and OUT/results.json (top-1 on the test split).
`training/distill.py` then distils it on all images.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch
import torch.nn as nn
import torch.nn.functional as F

import clzoo
from clzoo._io import write_json
from training.checkpoint import export_backbone, load_checkpoint
from training.data import SkipUnreadable, build_dataset
from training.data.rng import generator
from training.data.transforms import build_views
from training.monitor import eval_data_config, eval_view

NOT_TRUNK = ("num_classes", "global_pool", "pretrained_cfg", "in_chans")


def label_subset(targets: torch.Tensor, fraction: float, seed: int) -> torch.Tensor:
    """Sorted indices of `fraction` of each class (at least one image per class), drawn from the seed: the
    class-balanced subsets SimCLR's 1 % / 10 % ImageNet lists are."""
    if not 0 < fraction <= 1:
        raise ValueError(f"--label-fraction must be in (0, 1], got {fraction}")
    chosen = []
    for c in targets.unique().tolist():
        members = (targets == c).nonzero().squeeze(1)
        order = torch.randperm(len(members), generator=generator(seed, 0x1AB, c))
        chosen.append(members[order[:max(1, round(fraction * len(members)))]])
    return torch.cat(chosen).sort().values


def _run_dir_source(path: str) -> tuple[str, dict, dict]:
    with open(os.path.join(path, "config.json")) as f:
        config = json.load(f)
    args = {k: v for k, v in config.get("model_args", {}).items() if k not in NOT_TRUNK}
    trunk = clzoo.create_model(f"local-dir:{path}", pretrained=True).state_dict()
    return config["architecture"], args, trunk


def projector_neck(path: str, layers: int) -> tuple[list[int], bool, dict]:
    """The first `layers` hidden layers of the run's `projector` (widths, BN or not, state) from checkpoint.pt."""
    state = load_checkpoint(path)["method"]
    head = {k.removeprefix("projector."): v for k, v in state.items() if k.startswith("projector.")}
    if not head:
        raise ValueError(f"{path}/checkpoint.pt has no projector (method state keys: {sorted(state)[:8]} ...): "
                         f"use --from-head-layer 0")
    linears = sorted({int(k.split(".")[0]) for k, v in head.items() if k.endswith("weight") and v.dim() == 2})
    bn = f"{linears[0] + 1}.running_mean" in head
    if layers >= len(linears):
        raise ValueError(f"--from-head-layer {layers}: the projector has {len(linears)} layers, {len(linears) - 1} "
                         f"hidden (the last is its output)")
    step = 3 if bn else 2  # MLPHead: Linear-BN-ReLU or Linear-ReLU per hidden layer
    keep = {k: v for k, v in head.items() if int(k.split(".")[0]) < layers * step}
    return [int(head[f"{i}.weight"].shape[0]) for i in linears[:layers]], bn, keep


def build_classifier(source: str, num_classes: int, head_layers: int = 0, random_init: bool = False,
                     model_args: dict | None = None) -> nn.Module:
    """trunk (+ neck) + a new linear classifier, from a run directory or a model name (see the docstring)."""
    neck, bn, neck_state = [], True, {}
    source = source.removeprefix("local-dir:")
    if os.path.isdir(source) and os.path.exists(os.path.join(source, "config.json")):
        base, base_args, trunk = _run_dir_source(source)
        if head_layers:
            neck, bn, neck_state = projector_neck(source, head_layers)
    else:
        if head_layers:
            raise ValueError(f"--from-head-layer {head_layers} needs a training run directory (its projection "
                             f"head); {source!r} is a model name: use --from-head-layer 0")
        base, base_args = source, dict(model_args or {})
        trunk = None if random_init else clzoo.create_model(source, pretrained=True, num_classes=0, **base_args).state_dict()
    model = clzoo.create_model("head_classifier", base=base, base_args=base_args, neck=neck, neck_bn=bn,
                               num_classes=num_classes)
    if not random_init:
        model.trunk.load_state_dict(trunk)
        model.neck.load_state_dict(neck_state)
    return model


def batches(indices: torch.Tensor, batch_size: int, seed: int, epoch: int) -> list[torch.Tensor]:
    order = indices[torch.randperm(len(indices), generator=generator(seed, 0x1AC, epoch))]
    return [order[i:i + batch_size] for i in range(0, len(order) - batch_size + 1, batch_size)] or [order]


def images(dataset, index: torch.Tensor) -> torch.Tensor:
    items = SkipUnreadable(dataset).__getitems__(index.tolist())
    return torch.stack([it[0] for it in items])


@torch.no_grad()
def top1(model: nn.Module, test_set, image_size: int, data: str, batch_size: int = 512) -> float:
    was = model.training
    model.eval()
    view = eval_view(test_set, image_size, data)
    correct = 0
    for start in range(0, len(view), batch_size):
        idx = torch.arange(start, min(start + batch_size, len(view)))
        x = images(view, idx)
        correct += int((model(x).argmax(1) == test_set.targets[idx]).sum())
    model.train(was)
    return correct / len(view)


def train(model: nn.Module, loss_fn, dataset, indices: torch.Tensor, args, log=print) -> list[float]:
    """SGD (momentum 0.9, cosine, no weight decay) over crop + flip views of `dataset[indices]`;
    `loss_fn(model, views, index)` gives the loss of a batch. Returns the mean loss per epoch."""
    views = build_views("cmc", args.image_size, seed=args.seed, num_views=1, scale=(0.08, 1.0))
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=args.weight_decay, nesterov=True)
    steps = args.epochs * max(1, len(indices) // args.batch_size)  # len(batches(...)) of every epoch
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + torch.cos(torch.tensor(torch.pi * s / steps))).item())
    model.train()
    history = []
    for epoch in range(args.epochs):
        total, n = 0.0, 0
        for index in batches(indices, args.batch_size, args.seed, epoch):
            x = views(images(dataset, index), index, epoch)["views"][0]
            loss = loss_fn(model, x, index)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total, n = total + loss.item(), n + 1
        history.append(total / n)
        log(f"epoch {epoch}: loss {history[-1]:.4f}")
    return history


def common_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", default="synthetic", help="'synthetic', an ImageFolder root or hf:NAME (as pretrain.py)")
    p.add_argument("--data-args", default="{}", help="dataset options as YAML, e.g. '{num_samples: 2000}'")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--output", required=True)


def datasets(args):
    import yaml
    data_args = yaml.safe_load(args.data_args) or {}
    train_set = build_dataset(args.data, "train", args.image_size, args.seed, **data_args)
    test_set = build_dataset(args.data, "test", args.image_size, args.seed,
                             **{k: v for k, v in data_args.items() if k != "num_samples"})
    return train_set, test_set


def export(model: nn.Module, args, results: dict) -> None:
    os.makedirs(args.output, exist_ok=True)
    export_backbone(model, args.output, eval_data_config(args.image_size, args.data))
    write_json(os.path.join(args.output, "results.json"), results)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a training run directory, or a clzoo / timm model name")
    p.add_argument("--model-args", default="{}", help="for a model name: timm keyword arguments as YAML")
    p.add_argument("--label-fraction", type=float, default=0.1)
    p.add_argument("--from-head-layer", type=int, default=0,
                   help="keep this many layers of the run's projection head (SimCLR v2: 1); 0: the encoder alone")
    p.add_argument("--random-init", action="store_true", help="the same network from random weights (the baseline)")
    common_args(p)
    args = p.parse_args(argv)
    import yaml
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    train_set, test_set = datasets(args)
    labelled = label_subset(train_set.targets, args.label_fraction, args.seed)
    num_classes = int(train_set.targets.max()) + 1
    model = build_classifier(args.model, num_classes, args.from_head_layer, args.random_init,
                             yaml.safe_load(args.model_args) or {})
    t0 = time.time()
    labels = train_set.targets
    history = train(model, lambda m, x, index: F.cross_entropy(m(x), labels[index]), train_set, labelled, args)
    acc = top1(model, test_set, args.image_size, args.data)
    results = {"stage": "finetune", "model": args.model, "random_init": args.random_init,
               "from_head_layer": args.from_head_layer, "label_fraction": args.label_fraction,
               "labelled_images": len(labelled), "test_top1": acc, "loss": history, "seed": args.seed,
               "wall_time_s": round(time.time() - t0, 1)}
    export(model, args, results)
    write_json(os.path.join(args.output, "labelled.json"), {"indices": labelled.tolist()})
    print(f"fine-tuned on {len(labelled)} labelled images ({args.label_fraction:g} of each class): test top-1 "
          f"{acc:.4f}; exported {args.output} (clzoo.create_model('local-dir:{args.output}', pretrained=True))")
    return 0


if __name__ == "__main__":
    sys.exit(main())
