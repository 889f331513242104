"""What `eval_knn.py` and `eval_linear.py` share: the model and data arguments, frozen-feature extraction
(pooled, or DINO's [CLS] concatenations), the confusion matrix, and the JSON + PNG report."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import torch
import torch.nn as nn

import clzoo
from clzoo._io import atomic_write, write_json  # noqa: F401  (write_json: for the eval scripts)
from clzoo.cli import add_encoder_args, load_encoder_from_args
from clzoo.features import data_config, extract_features, pooled_embedding

FEATURES = ("pooled", "cls_last4", "cls_avgpool")


def add_common_args(p: argparse.ArgumentParser) -> None:
    add_encoder_args(p)
    p.add_argument("--data", required=True,
                   help="an ImageFolder root (ROOT/train + ROOT/val or ROOT/test, each CLASS/IMAGE), "
                        "'synthetic' (the embedded dataset) or 'hf:NAME'")
    p.add_argument("--target", default="shape", choices=("shape", "fg_colour", "bg_colour"),
                   help="--data synthetic only: the label to evaluate, the shape (default) or a nuisance factor, "
                        "the colour octant of the shape or of the background (what else did the encoder learn?)")
    p.add_argument("--train-samples", type=int, help="use a seeded random subset of this many training images")
    p.add_argument("--test-samples", type=int, help="... and of this many test images")
    p.add_argument("--batch-size", type=int,
                   help="kNN: images per forward (64); linear: the probe's batch (default: the protocol's)")
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output directory (JSON result and PNG)")


def load_model(args) -> nn.Module:
    return load_encoder_from_args(args).to(torch.device(args.device))


def _split_dir(root: str, split: str) -> str:
    names = {"train": ("train",), "test": ("val", "test", "validation")}[split]
    found = next((os.path.join(root, n) for n in names if os.path.isdir(os.path.join(root, n))), None)
    if found is None:
        raise FileNotFoundError(f"no {split} split under {root!r}: expected one of {names} "
                                "(each holding CLASS/IMAGE files)")
    return found


def load_split(spec: str, split: str, transform: Callable, image_size: int, seed: int = 0,
               num_samples: Optional[int] = None, target: str = "shape") -> torch.utils.data.Dataset:
    """A labelled split: ImageFolder trees are read here (PIL + the model's transform); 'synthetic' and
    'hf:NAME' come from the trainer's `training.data.build_dataset` (uint8 tensors; the transform takes them)."""
    if target != "shape" and spec != "synthetic":
        raise ValueError(f"--target {target}: a label of the synthetic dataset only (--data synthetic), not of {spec!r}")
    if os.path.isdir(spec):
        from torchvision.datasets import ImageFolder
        ds = ImageFolder(_split_dir(spec, split), transform=transform)
        ds.targets = torch.tensor(ds.targets)
    else:
        try:
            from training.data import build_dataset
        except ImportError as e:
            raise FileNotFoundError(f"--data {spec!r}: not a folder, and the trainer's datasets "
                                    f"(training/data) are not available to build it: {e}") from e
        ds = build_dataset(spec, split, image_size, seed, transform=transform,
                           **({"target": target} if target != "shape" else {}))
    if num_samples is not None and num_samples < len(ds):
        g = torch.Generator().manual_seed(seed + (split == "test"))
        idx = torch.randperm(len(ds), generator=g)[:num_samples].sort().values.tolist()
        sub = torch.utils.data.Subset(ds, idx)
        sub.targets = torch.as_tensor(ds.targets)[idx]
        sub.classes = getattr(ds, "classes", None)
        ds = sub
    return ds


def class_names(*datasets) -> List[str]:
    for ds in datasets:
        if getattr(ds, "classes", None):
            return [str(c) for c in ds.classes]
    n = max(int(torch.as_tensor(ds.targets).max()) for ds in datasets) + 1
    return [str(i) for i in range(n)]


def image_size(model: nn.Module) -> int:
    return int(data_config(model)["input_size"][-1])


# ---------------------------------------------------------------------------------------------
# Frozen features

def is_vit(model: nn.Module) -> bool:
    return hasattr(model, "blocks") and hasattr(model, "forward_intermediates") and hasattr(model, "cls_token")


def cls_tokens(model: nn.Module, x: torch.Tensor, n: int, avgpool: bool) -> torch.Tensor:
    """DINO eval_linear.py: [CLS] of the last `n` blocks after the final norm, concatenated; with `avgpool`
    the last block's average-pooled patch tokens are interleaved with the [CLS] channels as DINO does."""
    out = model.forward_intermediates(x, indices=n, norm=True, output_fmt="NLC", return_prefix_tokens=True,
                                      intermediates_only=True)
    feats = torch.cat([prefix[:, 0] for _, prefix in out], dim=-1)
    if avgpool:
        feats = torch.stack([feats, out[-1][0].mean(dim=1)], dim=-1).flatten(1)
    return feats


def feature_fn(mode: str, model: nn.Module) -> Callable[[nn.Module, torch.Tensor], torch.Tensor]:
    """(model, images) -> (B, D) for a feature mode; 'dino' picks DINO's choice for the architecture:
    ViTs narrower than ViT-B: [CLS] of the last 4 blocks; ViT-B and wider: [CLS] + pooled patches; others pooled."""
    if mode == "dino":
        mode = ("cls_last4" if model.embed_dim < 768 else "cls_avgpool") if is_vit(model) else "pooled"
    if mode == "pooled":
        return pooled_embedding
    if mode not in FEATURES:
        raise ValueError(f"unknown features {mode!r}; choose from {FEATURES + ('dino',)}")
    if not is_vit(model):
        raise ValueError(f"features {mode!r} need a ViT; {type(model).__name__} has only pooled features")
    n, avgpool = (4, False) if mode == "cls_last4" else (1, True)

    def fn(m, x):
        return cls_tokens(m, x, n, avgpool)
    fn.__name__ = mode
    return fn


def _identity(x):
    return x


def embed(model: nn.Module, dataset, forward: Callable, batch_size: int, workers: int):
    """(features (N, D) float32, labels (N,)) of a labelled dataset whose transform is already set."""
    emb = extract_features(model, dataset, batch_size=batch_size, transform=_identity, forward_fn=forward,
                           num_workers=workers)
    return emb.features, emb.labels


# ---------------------------------------------------------------------------------------------
# Report

def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(C, C) counts: row = true class, column = predicted class."""
    idx = target.long() * num_classes + pred.long()
    return torch.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def save_report(path: Path, title: str, x: Sequence[float], curves: Dict[str, Sequence[float]], xlabel: str,
                confusion: torch.Tensor, names: Sequence[str], confusion_title: str, xlog: bool = False) -> Path:
    """Two panels: accuracy curve(s) over `x`, and a row-normalised confusion matrix."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.6), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 2, 1)
    for label, ys in curves.items():
        ax.plot(list(x), [100 * y for y in ys], marker="o", label=label)
    if xlog:
        ax.set_xscale("log")
        ax.set_xticks(list(x), [str(v) for v in x])
    ax.set_xlabel(xlabel)
    ax.set_ylabel("accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend()
    ax = fig.add_subplot(1, 2, 2)
    cm = confusion.float()
    rates = cm / cm.sum(dim=1, keepdim=True).clamp_min(1)
    im = ax.imshow(rates.numpy(), cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, fraction=0.046, label="fraction of the true class")
    if len(names) <= 30:
        ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
        ax.set_yticks(range(len(names)), names, fontsize=7)
        if len(names) <= 12:
            for i in range(len(names)):
                for j in range(len(names)):
                    ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if rates[i, j] > 0.5 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(confusion_title, fontsize=10)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return atomic_write(path, lambda f: fig.savefig(f, format=path.suffix.lstrip(".").lower() or None))


def model_description(args) -> Dict[str, Optional[str]]:
    weights = "random init" if args.random_init else (args.weights or "pretrained")
    return {"model": args.model, "weights": weights, "img_size": args.img_size, "clzoo_version": clzoo.__version__}
