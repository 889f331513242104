"""Linear probe on a frozen encoder, with the official per-method protocols (methods.md §1.4) as data.

    python training/eval_linear.py --model dino_vits16 --data /data/imagenet --protocol dino --out runs/lin
    python training/eval_linear.py --model runs/simclr --data synthetic --protocol simclr --out runs/simclr/lin
    python training/eval_linear.py --model resnet18 --weights w.safetensors --data DIR --protocol mocov2 \
        --epochs 10 --batch-size 64 --no-augment --out OUT

The encoder stays in eval mode and receives no gradient; only a linear layer is trained. The official
protocols train on RandomResizedCrop + flip views (`crop_scale` per protocol), so by default every epoch
runs the frozen encoder on fresh views; `--no-augment` embeds the training set once (centre view) and trains
on the cached features, much faster but not the official protocol (the JSON records which ran). Test
features are computed once, with the model's own eval preprocessing. Writes OUT/linear.json and
OUT/linear.png (test accuracy and training loss per epoch, confusion matrix of the final head).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

if __package__ in (None, ""):  # run as a script: make the repo root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch
import torch.nn as nn
import torch.nn.functional as F

from clzoo.features import _AnyImage, data_config, eval_transform
from training.eval_common import (FEATURES, add_common_args, class_names, confusion_matrix, embed, feature_fn,
                                  image_size, is_vit, load_model, load_split, model_description, save_report,
                                  write_json)
from training.modules.optim import LARC


FORWARD_BATCH = 256  # images per encoder forward; a protocol's batch (up to 4096) is split into these


@dataclass(frozen=True)
class Protocol:
    """One official linear-evaluation recipe. `lr` is the base rate; with `lr_scaling` it is x batch/256."""
    source: str
    optimizer: str  # "sgd" or "larc" (apex LARC around SGD, trust 0.001, no clipping)
    lr: float
    batch_size: int
    epochs: int
    weight_decay: float = 0.0
    lr_scaling: bool = False
    momentum: float = 0.9
    nesterov: bool = False
    schedule: str = "cosine"  # per-epoch cosine to 0, or "step": x gamma at each milestone epoch
    milestones: Tuple[int, ...] = ()
    gamma: float = 0.1
    features: str = "pooled"  # or "dino": ViT-S [CLS] x last 4 blocks, ViT-B [CLS] + pooled patches
    head_init: str = "normal"  # weight N(0, 0.01), bias 0; or "zeros"
    crop_scale: Tuple[float, float] = (0.08, 1.0)
    vit_lr: Optional[float] = None  # a different base lr for ViT encoders

    def base_lr(self, model: nn.Module) -> float:
        return self.vit_lr if (self.vit_lr is not None and is_vit(model)) else self.lr

    def scaled_lr(self, model: nn.Module) -> float:
        """The learning rate at this protocol's batch size."""
        return self.base_lr(model) * (self.batch_size / 256 if self.lr_scaling else 1.0)


PROTOCOLS: Dict[str, Protocol] = {
    "mocov2": Protocol("moco main_lincls.py (MoCo v1/v2)", "sgd", 30.0, 256, 100, schedule="step",
                       milestones=(60, 80)),
    "mocov3": Protocol("moco-v3 main_lincls.py (ViT: --lr 3)", "sgd", 0.1, 1024, 90, lr_scaling=True, vit_lr=3.0),
    "simsiam": Protocol("simsiam main_lincls.py --lars", "larc", 0.1, 4096, 90, lr_scaling=True),
    "simclr": Protocol("SimCLR README, linear eval", "sgd", 0.1, 4096, 90, weight_decay=1e-6, lr_scaling=True,
                       nesterov=True, head_init="zeros"),
    "byol": Protocol("byol configs/eval.py; batch, cosine and wd 0 from the paper (App. C.1, not re-read)",
                     "sgd", 0.2, 1024, 80, lr_scaling=True, nesterov=True),
    "swav": Protocol("swav eval_linear.py (32/GPU x 8)", "sgd", 0.3, 256, 100, weight_decay=1e-6),
    "barlowtwins": Protocol("barlowtwins evaluate.py (lr-classifier)", "sgd", 0.3, 256, 100, weight_decay=1e-6),
    "dino": Protocol("dino eval_linear.py (128/GPU x 8)", "sgd", 0.001, 1024, 100, lr_scaling=True,
                     features="dino"),
    "pycontrast": Protocol("PyContrast test_options.py (InsDis/CMC/PIRL/InfoMin)", "sgd", 30.0, 256, 60,
                           schedule="step", milestones=(30, 40, 50), gamma=0.2, crop_scale=(0.2, 1.0)),
}
# methods whose papers evaluate with another method's protocol
ALIASES = {"mocov1": "mocov2", "simclrv2": "simclr", "deepclusterv2": "swav", "selav2": "swav",
           "instdisc": "pycontrast", "cmc": "pycontrast", "pirl": "pycontrast", "infomin": "pycontrast"}


def get_protocol(name: str) -> Protocol:
    key = ALIASES.get(name, name)
    if key not in PROTOCOLS:
        raise ValueError(f"unknown protocol {name!r}; choose from {sorted(PROTOCOLS) + sorted(ALIASES)}")
    return PROTOCOLS[key]


def lr_at(epoch: int, lr: float, protocol: Protocol) -> float:
    """The learning rate of an epoch: per-epoch cosine from `lr` to 0, or step decay at the milestones."""
    if protocol.schedule == "cosine":
        return lr * 0.5 * (1.0 + math.cos(math.pi * epoch / protocol.epochs))
    if protocol.schedule == "step":
        return lr * protocol.gamma ** sum(epoch >= m for m in protocol.milestones)
    raise ValueError(f"unknown schedule {protocol.schedule!r}")


def build_head(dim: int, num_classes: int, protocol: Protocol) -> nn.Linear:
    head = nn.Linear(dim, num_classes)
    if protocol.head_init == "zeros":
        nn.init.zeros_(head.weight)
    else:
        nn.init.normal_(head.weight, std=0.01)
    nn.init.zeros_(head.bias)
    return head


def build_optimizer(head: nn.Module, protocol: Protocol, lr: float) -> torch.optim.Optimizer:
    kw = dict(lr=lr, momentum=protocol.momentum, weight_decay=protocol.weight_decay, nesterov=protocol.nesterov)
    if protocol.optimizer == "larc":
        return LARC(head.parameters(), **kw)
    if protocol.optimizer == "sgd":
        return torch.optim.SGD(head.parameters(), **kw)
    raise ValueError(f"unknown optimizer {protocol.optimizer!r}")


def train_transform(model: nn.Module, crop_scale) -> _AnyImage:
    """The official probes' training views: RandomResizedCrop(crop_scale) + horizontal flip, normalised."""
    from torchvision import transforms
    cfg = data_config(model)
    interp = transforms.InterpolationMode(cfg["interpolation"]) if cfg["interpolation"] in (
        "bilinear", "bicubic", "nearest") else transforms.InterpolationMode.BILINEAR
    return _AnyImage(transforms.Compose([
        transforms.RandomResizedCrop(cfg["input_size"][-1], scale=tuple(crop_scale), interpolation=interp),
        transforms.RandomHorizontalFlip(), transforms.ToTensor(), transforms.Normalize(cfg["mean"], cfg["std"])]))


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> Tuple[float, Optional[float]]:
    top1 = (logits.argmax(1) == labels).float().mean().item()
    if logits.shape[1] < 5:
        return top1, None
    return top1, (logits.topk(5, dim=1).indices == labels[:, None]).any(1).float().mean().item()


def train_linear(train_batches, test_features: torch.Tensor, test_labels: torch.Tensor, dim: int,
                 num_classes: int, protocol: Protocol, lr: float, device: torch.device, log=print):
    """Train a linear head for `protocol.epochs`; `train_batches(epoch)` yields (features, labels) batches.
    Returns the head and per-epoch history (lr, mean training loss, test top-1/top-5)."""
    head = build_head(dim, num_classes, protocol).to(device)
    opt = build_optimizer(head, protocol, lr)
    test_features, test_labels = test_features.to(device), test_labels.to(device)
    history = []
    for epoch in range(protocol.epochs):
        epoch_lr = lr_at(epoch, lr, protocol)
        for group in opt.param_groups:
            group["lr"] = epoch_lr
        head.train()
        total, count = 0.0, 0
        for feats, labels in train_batches(epoch):
            loss = F.cross_entropy(head(feats.to(device)), labels.to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total, count = total + loss.item() * len(labels), count + len(labels)
        head.eval()
        with torch.no_grad():
            top1, top5 = accuracy(head(test_features), test_labels)
        history.append(dict(epoch=epoch, lr=epoch_lr, train_loss=total / max(count, 1), top1=top1, top5=top5))
        log(f"epoch {epoch}: lr {epoch_lr:.4g} loss {history[-1]['train_loss']:.4f} test top-1 {100 * top1:.2f}%")
    return head, history


def main(argv: Optional[List[str]] = None) -> Dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common_args(p)
    p.add_argument("--protocol", default="dino", help=f"one of {sorted(PROTOCOLS)} (or a method name that "
                   f"uses one: {', '.join(sorted(ALIASES))})")
    p.add_argument("--features", choices=FEATURES + ("dino",), help="override the protocol's features")
    p.add_argument("--epochs", type=int, help="override the protocol's epochs (the schedule follows)")
    p.add_argument("--lr", type=float, help="override the protocol's base lr (before batch scaling)")
    p.add_argument("--no-augment", action="store_true",
                   help="train on cached centre-view features (fast; not the official protocol)")
    args = p.parse_args(argv)
    torch.manual_seed(args.seed)

    protocol = get_protocol(args.protocol)
    protocol = dataclasses.replace(protocol, **{k: v for k, v in dict(
        epochs=args.epochs, batch_size=args.batch_size, features=args.features, lr=args.lr).items() if v is not None})
    if args.lr is not None:
        protocol = dataclasses.replace(protocol, vit_lr=None)
    device = torch.device(args.device)
    model = load_model(args)
    for param in model.parameters():
        param.requires_grad_(False)
    lr = protocol.scaled_lr(model)
    forward = feature_fn(protocol.features, model)
    size = image_size(model)
    eval_tf = eval_transform(model)
    test = load_split(args.data, "test", eval_tf, size, args.seed, args.test_samples, args.target)
    test_features, test_labels = embed(model, test, forward, FORWARD_BATCH, args.workers)
    augment = not args.no_augment
    train = load_split(args.data, "train", train_transform(model, protocol.crop_scale) if augment else eval_tf,
                       size, args.seed, args.train_samples, args.target)
    names = class_names(train, test)

    if augment:
        def train_batches(epoch):
            loader = torch.utils.data.DataLoader(train, batch_size=protocol.batch_size, shuffle=True,
                                                 num_workers=args.workers, drop_last=False,
                                                 generator=torch.Generator().manual_seed(args.seed * 1000 + epoch))
            model.eval()
            for x, y in loader:
                with torch.no_grad():
                    feats = torch.cat([forward(model, c.to(device)).float() for c in x.split(FORWARD_BATCH)])
                yield feats, y
    else:
        cached, cached_labels = embed(model, train, forward, FORWARD_BATCH, args.workers)

        def train_batches(epoch):
            perm = torch.randperm(len(cached), generator=torch.Generator().manual_seed(args.seed * 1000 + epoch))
            for i in range(0, len(perm), protocol.batch_size):
                idx = perm[i:i + protocol.batch_size]
                yield cached[idx], cached_labels[idx]

    head, history = train_linear(train_batches, test_features, test_labels, test_features.shape[1], len(names),
                                 protocol, lr, device)
    with torch.no_grad():
        pred = head(test_features.to(device)).argmax(1).cpu()
    final = history[-1]
    result = {
        "protocol": args.protocol, "protocol_settings": dataclasses.asdict(protocol), "lr": lr,
        "augment": augment, "official_protocol": augment and args.epochs is None and args.batch_size is None
        and args.lr is None and args.features is None,
        **model_description(args), "data": args.data, "target": args.target, "features": getattr(forward, "__name__", protocol.features),
        "feature_dim": int(test_features.shape[1]), "num_train": len(train), "num_test": len(test_labels),
        "num_classes": len(names), "top1": final["top1"], "top5": final["top5"],
        "best_top1": max(h["top1"] for h in history), "history": history,
    }
    out = Path(args.out)
    write_json(out / "linear.json", result)
    epochs = [h["epoch"] + 1 for h in history]
    save_report(out / "linear.png", f"{args.model} — linear probe ({args.protocol} protocol"
                f"{'' if augment else ', cached features'}) on {args.data}", epochs,
                {"test top-1": [h["top1"] for h in history]}, "epoch",
                confusion_matrix(pred, test_labels, len(names)), names,
                f"confusion after {len(history)} epochs: top-1 {100 * final['top1']:.1f}%")
    print(f"linear probe top-1 {100 * final['top1']:.2f}% after {len(history)} epochs; wrote {out}/linear.json, "
          "linear.png")
    return result


if __name__ == "__main__":
    main()
