"""The weighted kNN monitor (methods.md §1.3): backbone features of the training split (the bank) and
of the held-out split, L2-normalised, k=20 neighbours voting with exp(s / T), T=0.07 (DINO).
Used each epoch by the trainer and reusable by evaluation scripts."""

from __future__ import annotations

import contextlib

import torch

from clzoo.knn import knn_accuracy

from .data import SkipUnreadable, collate
from .data.transforms import eval_transform


@torch.no_grad()
def extract_features(backbone: torch.nn.Module, dataset, image_size: int, batch_size: int = 512,
                     max_samples: int = 0, device=None, autocast=contextlib.nullcontext,
                     channels_last: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(features, labels) of the first `max_samples` images (all if 0), centre view, eval mode."""
    was_training = backbone.training
    backbone.eval()
    device = device or next(backbone.parameters()).device
    n = len(dataset) if not max_samples else min(max_samples, len(dataset))
    ds = SkipUnreadable(dataset)
    feats, labels = [], []
    for start in range(0, n, batch_size):
        batch = collate(ds.__getitems__(list(range(start, min(start + batch_size, n)))))
        x = eval_transform(batch["images"], image_size).to(device)
        if not channels_last:
            x = x.contiguous()
        with autocast():
            feats.append(backbone(x).float().cpu())
        labels.append(batch["labels"])
    backbone.train(was_training)
    return torch.cat(feats), torch.cat(labels)


def knn_eval(backbone, train_set, test_set, image_size: int, k: int = 20, temperature: float = 0.07,
             train_samples: int = 0, test_samples: int = 0, batch_size: int = 512, **kw) -> float:
    """Top-1 accuracy of the weighted kNN classifier of the held-out split against the training split."""
    bank, bank_labels = extract_features(backbone, train_set, image_size, batch_size, train_samples, **kw)
    test, test_labels = extract_features(backbone, test_set, image_size, batch_size, test_samples, **kw)
    return knn_accuracy(bank, bank_labels, test, test_labels, k=k, temperature=temperature)
