"""Weighted k-nearest-neighbour classification of embeddings.

The protocol of InstDisc (Wu et al. 2018), kept by the MoCo CIFAR colab and DINO (`eval_knn.py`):
features are L2-normalised, each test sample takes its k most cosine-similar training samples, and
each neighbour votes for its class with weight exp(similarity / T). DINO reports 20-NN with T=0.07.

Memory stays bounded for large banks: test rows are processed in chunks, and within a chunk the
training bank is scanned in blocks whose top-k are merged, so a 1M x D bank never needs a
(chunk x 1M) similarity matrix at once.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

__all__ = ["knn_classify", "knn_accuracy"]


@torch.no_grad()
def _topk_neighbours(test: torch.Tensor, bank: torch.Tensor, k: int, bank_chunk: int):
    """Top-k cosine similarities of `test` rows against `bank` rows, scanning the bank in blocks."""
    best_sim, best_idx = None, None
    for start in range(0, bank.shape[0], bank_chunk):
        sim = test @ bank[start:start + bank_chunk].T
        kk = min(k, sim.shape[1])
        s, i = sim.topk(kk, dim=1)
        i = i + start
        if best_sim is not None:
            s = torch.cat([best_sim, s], dim=1)
            i = torch.cat([best_idx, i], dim=1)
            s, order = s.topk(min(k, s.shape[1]), dim=1)
            i = i.gather(1, order)
        best_sim, best_idx = s, i
    return best_sim, best_idx


@torch.no_grad()
def knn_classify(
        train_features: torch.Tensor,
        train_labels: torch.Tensor,
        test_features: torch.Tensor,
        k: int = 20,
        temperature: float = 0.07,
        num_classes: Optional[int] = None,
        chunk_size: int = 256,
        bank_chunk_size: int = 65536,
) -> torch.Tensor:
    """Class scores of a weighted k-NN vote, shape (num_test, num_classes).

    Args:
        train_features: (N, D) embeddings of the labelled bank (normalised here).
        train_labels: (N,) integer labels.
        test_features: (M, D) embeddings to classify (normalised here).
        k: number of neighbours (clipped to N).
        temperature: T in exp(sim / T); DINO uses 0.07, InstDisc and the MoCo colab 0.1.
        num_classes: defaults to max(train_labels) + 1.
        chunk_size: test rows per similarity block.
        bank_chunk_size: bank rows per similarity block.
    """
    if train_features.shape[0] != train_labels.shape[0]:
        raise ValueError(
            f"train_features has {train_features.shape[0]} rows but train_labels has {train_labels.shape[0]}")
    if train_features.shape[1] != test_features.shape[1]:
        raise ValueError(
            f"feature sizes differ: train {train_features.shape[1]} vs test {test_features.shape[1]}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    train_labels = train_labels.long()
    num_classes = int(num_classes if num_classes is not None else train_labels.max().item() + 1)
    bank = F.normalize(train_features.float(), dim=1)
    test_features = F.normalize(test_features.float(), dim=1)
    k = min(k, bank.shape[0])

    scores = []
    for start in range(0, test_features.shape[0], chunk_size):
        sim, idx = _topk_neighbours(test_features[start:start + chunk_size], bank, k, bank_chunk_size)
        weights = (sim / temperature).exp()
        votes = torch.zeros(sim.shape[0], num_classes, device=sim.device, dtype=weights.dtype)
        votes.scatter_add_(1, train_labels[idx], weights)
        scores.append(votes)
    return torch.cat(scores) if scores else torch.zeros(0, num_classes)


@torch.no_grad()
def knn_accuracy(
        train_features: torch.Tensor,
        train_labels: torch.Tensor,
        test_features: torch.Tensor,
        test_labels: torch.Tensor,
        k: int = 20,
        temperature: float = 0.07,
        **kwargs,
) -> float:
    """Top-1 accuracy (in [0, 1]) of `knn_classify`."""
    scores = knn_classify(train_features, train_labels, test_features, k=k, temperature=temperature, **kwargs)
    return (scores.argmax(dim=1) == test_labels.long().to(scores.device)).float().mean().item()
