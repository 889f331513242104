"""The weighted kNN monitor (methods.md §1.3): backbone features of the training split (the bank) and
of the held-out split, L2-normalised, k=20 neighbours voting with exp(s / T), T=0.07 (DINO).
Used each epoch by the trainer and reusable by evaluation scripts.

The monitor sees the pixels `eval_knn.py`, `eval_linear.py` and `clzoo.features` see for the exported
model: its datasets go through `clzoo.features.eval_transform` of `eval_data_config`, the data config the
trainer writes into the run's `config.json`."""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

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


def monitor_eval(backbone, train_set, test_set, k: int = 20, temperature: float = 0.07, train_samples: int = 0,
                 test_samples: int = 0, batch_size: int = 512, linear: bool = False, **kw) -> dict:
    """{"knn_top1": the weighted kNN top-1 of the held-out split against the training split (both `eval_view`
    datasets)}, plus with `linear` {"linear_top1": `linear_probe` on the same features}."""
    bank, bank_labels = extract_features(backbone, train_set, batch_size, train_samples, **kw)
    test, test_labels = extract_features(backbone, test_set, batch_size, test_samples, **kw)
    accs = {"knn_top1": knn_accuracy(bank, bank_labels, test, test_labels, k=k, temperature=temperature)}
    if linear:
        accs["linear_top1"] = linear_probe(bank, bank_labels, test, test_labels)["linear_top1"]
    return accs


def knn_eval(backbone, train_set, test_set, **kw) -> float:
    """The kNN top-1 of `monitor_eval`."""
    return monitor_eval(backbone, train_set, test_set, **kw)["knn_top1"]


# The linear probe (`--knn.linear true`, training/linear_probe.py): standardised features, a multinomial logistic
# regression fitted full batch by L-BFGS, its L2 penalty chosen on a held-out fifth of the bank. CPC is judged
# by a linear classifier on its pooled grid; its cosine kNN shows no margin in the CPU-sized runs (README).
def fit_linear(x: torch.Tensor, y: torch.Tensor, num_classes: int, l2: float, steps: int = 100) -> torch.nn.Linear:
    clf = torch.nn.Linear(x.shape[1], num_classes)
    torch.nn.init.zeros_(clf.weight), torch.nn.init.zeros_(clf.bias)  # a convex fit: no draw of the run's RNG
    opt = torch.optim.LBFGS(clf.parameters(), lr=1, max_iter=steps, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(clf(x), y) + l2 * clf.weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():  # callable from the monitor's no_grad
        opt.step(closure)
    return clf


def linear_probe(train_x, train_y, test_x, test_y, l2_grid=(1e-5, 1e-4, 1e-3, 1e-2)) -> dict:
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
    C = int(max(train_y.max(), test_y.max())) + 1
    n_val = len(train_x) // 5
    best = max(l2_grid, key=lambda l2: (fit_linear(train_x[n_val:], train_y[n_val:], C, l2)(train_x[:n_val])
                                        .argmax(1) == train_y[:n_val]).float().mean().item())
    clf = fit_linear(train_x, train_y, C, best)
    with torch.no_grad():
        acc = (clf(test_x).argmax(1) == test_y).float().mean().item()
    return {"linear_top1": acc, "l2": best}
