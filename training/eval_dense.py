"""Dense linear probe: foreground / background segmentation from frozen features, against the synthetic data's
shape masks.

    python training/eval_dense.py --model local-dir:runs/quickstart --image-size 32 --out runs/quickstart/dense
    python training/eval_dense.py --model test_resnet --random-init --image-size 32 --out runs/dense_init

Features: a CNN's stride-8 stage (timm `feature_info` reduction 8; ResNets: layer2), a ViT's last-block patch
tokens as a map (patch 8 gives stride 8). A 1x1 conv (a linear classifier per location) is trained on them with
its logits bilinearly upsampled to the image (cross-entropy against the masks: pixels >= half covered are
foreground), full-batch Adam, on `--train-samples` training images; the frozen encoder runs once, in eval mode,
on the images as evaluation sees them. Reported on the held-out split: mIoU over {background, foreground},
each class's IoU and pixel accuracy, written to OUT/dense.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch
import torch.nn as nn
import torch.nn.functional as F

import clzoo
from clzoo._io import write_json
from training.data.synthetic import SyntheticShapes
from training.monitor import eval_data_config, eval_view


def iou(pred: torch.Tensor, target: torch.Tensor, num_classes: int = 2) -> list[float]:
    """Per-class intersection over union over every pixel of the set."""
    out = []
    for c in range(num_classes):
        p, t = pred == c, target == c
        union = (p | t).sum().item()
        out.append((p & t).sum().item() / union if union else float("nan"))
    return out


def dense_features(model: nn.Module):
    """(function image batch -> (B, C, h, w) map, its stride) for a CNN's stride-8 stage or a ViT's tokens."""
    if hasattr(model, "patch_embed") and hasattr(model, "blocks"):
        patch = model.patch_embed.patch_size
        patch = patch[0] if isinstance(patch, (tuple, list)) else patch

        def vit(x):
            return model.forward_intermediates(x, indices=1, output_fmt="NCHW", intermediates_only=True)[-1]
        return vit, patch
    infos = list(getattr(model, "feature_info", []))
    stage = next((i for i, info in enumerate(infos) if info["reduction"] == 8), None)
    if stage is None:
        raise ValueError(f"{type(model).__name__}: no stride-8 stage in its feature_info ({[i['reduction'] for i in infos]})")

    def cnn(x):
        return model.forward_intermediates(x, indices=[stage], intermediates_only=True)[0]
    return cnn, 8


@torch.no_grad()
def embed(fn, dataset, view, n: int, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    feats, masks = [], []
    for start in range(0, n, batch_size):
        idx = list(range(start, min(start + batch_size, n)))
        feats.append(fn(torch.stack([view[i][0] for i in idx])))
        masks.append((dataset.masks(idx)[:, 0] >= 128).long())
    return torch.cat(feats), torch.cat(masks)


def fit_probe(feats: torch.Tensor, masks: torch.Tensor, steps: int = 300, lr: float = 0.05) -> nn.Conv2d:
    mean, std = feats.mean((0, 2, 3), keepdim=True), feats.std((0, 2, 3), keepdim=True).clamp_min(1e-6)
    probe = nn.Conv2d(feats.shape[1], 2, 1)
    opt = torch.optim.Adam(probe.parameters(), lr=lr)
    x = (feats - mean) / std
    for _ in range(steps):
        logits = F.interpolate(probe(x), size=masks.shape[-2:], mode="bilinear", align_corners=False)
        loss = F.cross_entropy(logits, masks)
        opt.zero_grad()
        loss.backward()
        opt.step()
    probe.norm = (mean, std)
    return probe


@torch.no_grad()
def evaluate(probe: nn.Conv2d, feats: torch.Tensor, masks: torch.Tensor) -> dict:
    mean, std = probe.norm
    logits = F.interpolate(probe((feats - mean) / std), size=masks.shape[-2:], mode="bilinear", align_corners=False)
    pred = logits.argmax(1)
    bg, fg = iou(pred, masks)
    return {"miou": (bg + fg) / 2, "iou_background": bg, "iou_foreground": fg,
            "pixel_accuracy": (pred == masks).float().mean().item()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a clzoo / timm name, local-dir:RUN_DIR or a run directory")
    p.add_argument("--random-init", action="store_true")
    p.add_argument("--model-args", default="{}", help="timm keyword arguments as YAML (e.g. '{patch_size: 8}')")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--train-samples", type=int, default=2000)
    p.add_argument("--test-samples", type=int, default=2000)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    import yaml
    torch.manual_seed(args.seed)
    source = f"local-dir:{args.model}" if os.path.isdir(args.model) else args.model
    model = clzoo.create_model(source, pretrained=not args.random_init, num_classes=0,
                               **(yaml.safe_load(args.model_args) or {})).eval()
    fn, stride = dense_features(model)
    sets = {s: SyntheticShapes(s, args.image_size, args.seed) for s in ("train", "test")}
    views = {s: eval_view(d, args.image_size, "synthetic") for s, d in sets.items()}
    train = embed(fn, sets["train"], views["train"], args.train_samples)
    test = embed(fn, sets["test"], views["test"], args.test_samples)
    probe = fit_probe(*train, steps=args.steps)
    result = {"model": args.model, "random_init": args.random_init, "image_size": args.image_size,
              "feature_stride": stride, "feature_grid": list(train[0].shape[-2:]), "channels": train[0].shape[1],
              "train_samples": args.train_samples, "test": evaluate(probe, *test), "train": evaluate(probe, *train),
              "foreground_fraction_test": test[1].float().mean().item()}
    os.makedirs(args.out, exist_ok=True)
    write_json(os.path.join(args.out, "dense.json"), result)
    t = result["test"]
    print(f"dense probe ({stride}-px features, {result['feature_grid']} grid): test mIoU {t['miou']:.4f} "
          f"(background {t['iou_background']:.4f}, foreground {t['iou_foreground']:.4f}), pixel accuracy "
          f"{t['pixel_accuracy']:.4f}; {args.out}/dense.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
