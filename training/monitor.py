"""The weighted kNN monitor (methods.md §1.3): backbone features of the training split (the bank) and
of the held-out split, L2-normalised, k=20 neighbours voting with exp(s / T), T=0.07 (DINO).
Used each epoch by the trainer and reusable by evaluation scripts.

The monitor sees the pixels `eval_knn.py`, `eval_linear.py` and `clzoo.features` see for the exported
model: its datasets go through `clzoo.features.eval_transform` of `eval_data_config`, the data config the
trainer writes into the run's `config.json`."""

from __future__ import annotations

import contextlib

import torch

from clzoo.features import eval_transform
from clzoo.knn import knn_accuracy

from .data import SkipUnreadable, collate, with_transform
from .data.transforms import IMAGENET_MEAN, IMAGENET_STD


def eval_data_config(image_size: int, data: str) -> dict:
    """timm data config of a run's encoder. Synthetic images are rendered at the input size with the object
    inside the frame, so they are not cropped (crop_pct 1.0); photos get timm's resize-to-size/0.875 and
    centre crop."""
    return {"input_size": (3, image_size, image_size), "mean": IMAGENET_MEAN, "std": IMAGENET_STD,
            "interpolation": "bilinear", "crop_pct": 1.0 if data == "synthetic" else 0.875, "crop_mode": "center"}


def eval_view(dataset, image_size: int, data: str):
    """`dataset` as the evaluation sees it: every image through the run's eval transform."""
    return with_transform(dataset, eval_transform(eval_data_config(image_size, data)))


@torch.no_grad()
def extract_features(backbone: torch.nn.Module, dataset, batch_size: int = 512, max_samples: int = 0,
                     device=None, autocast=contextlib.nullcontext,
                     channels_last: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(features, labels) of the first `max_samples` images (all if 0) of an `eval_view` dataset, eval mode."""
    was_training = backbone.training
    backbone.eval()
    device = device or next(backbone.parameters()).device
    n = len(dataset) if not max_samples else min(max_samples, len(dataset))
    ds = SkipUnreadable(dataset)
    feats, labels = [], []
    for start in range(0, n, batch_size):
        batch = collate(ds.__getitems__(list(range(start, min(start + batch_size, n)))))
        x = batch["images"].to(device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast():
            feats.append(backbone(x).float().cpu())
        labels.append(batch["labels"])
    backbone.train(was_training)
    return torch.cat(feats), torch.cat(labels)


def knn_eval(backbone, train_set, test_set, k: int = 20, temperature: float = 0.07, train_samples: int = 0,
             test_samples: int = 0, batch_size: int = 512, **kw) -> float:
    """Top-1 accuracy of the weighted kNN classifier of the held-out split against the training split
    (both `eval_view` datasets)."""
    bank, bank_labels = extract_features(backbone, train_set, batch_size, train_samples, **kw)
    test, test_labels = extract_features(backbone, test_set, batch_size, test_samples, **kw)
    return knn_accuracy(bank, bank_labels, test, test_labels, k=k, temperature=temperature)
