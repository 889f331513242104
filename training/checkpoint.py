"""Atomic checkpoints and the final timm-format export.

* `save_checkpoint(path, state)`: torch.save to `path.tmp`, then `os.replace` (atomic on POSIX): a run
  killed while saving keeps its previous checkpoint intact.
* `export_backbone(backbone, run_dir, image_size, ...)`: `model.safetensors` + timm `config.json`
  (timm's `save_for_hf`), so `clzoo.create_model("local-dir:RUN_DIR", pretrained=True)` rebuilds it.
"""

from __future__ import annotations

import copy
import json
import os
import shutil

import torch

from .data.transforms import IMAGENET_MEAN, IMAGENET_STD


def save_checkpoint(path: str, state: dict) -> None:
    tmp = path + ".tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: str) -> dict:
    if os.path.isdir(path):
        path = os.path.join(path, "checkpoint.pt")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--resume: no checkpoint at {path}")
    return torch.load(path, map_location="cpu", weights_only=False)


def write_json(path: str, data) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2)
    os.replace(tmp, path)


def export_backbone(backbone: torch.nn.Module, run_dir: str, image_size: int, mean=IMAGENET_MEAN,
                    std=IMAGENET_STD, tag: str | None = None) -> str:
    """Write model.safetensors + config.json to run_dir (staged in a temp folder, then moved)."""
    from timm.models import save_for_hf
    from .modules.heads import SplitBatchNorm

    model = copy.deepcopy(backbone).cpu().to(memory_format=torch.contiguous_format)
    for name, mod in list(model.named_modules()):  # SplitBatchNorm is a training-time BatchNorm2d
        if isinstance(mod, SplitBatchNorm):
            mod.__class__ = torch.nn.BatchNorm2d
    for p in model.parameters():
        p.data = p.data.contiguous()
    for b in model.buffers():
        b.data = b.data.contiguous()
    model.pretrained_cfg = dict(model.pretrained_cfg)
    if tag:
        model.pretrained_cfg["tag"] = tag
    stage = os.path.join(run_dir, ".export")
    shutil.rmtree(stage, ignore_errors=True)
    save_for_hf(model, stage, safe_serialization=True, data_config={
        "input_size": (3, image_size, image_size), "mean": tuple(mean), "std": tuple(std),
        "interpolation": "bilinear", "crop_pct": 0.875, "crop_mode": "center"})
    for name in ("model.safetensors", "config.json"):
        os.replace(os.path.join(stage, name), os.path.join(run_dir, name))
    shutil.rmtree(stage, ignore_errors=True)
    return run_dir
