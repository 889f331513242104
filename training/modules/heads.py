"""Projection / prediction heads and BatchNorm helpers, parameterised by dimensions (methods.md §2).

`MLPHead(in_dim, [hidden...], out_dim, bn=..., last_bn=...)` covers every head of this issue:
* InstDisc / MoCo v1 / InvaSpread / PIRL image head: `MLPHead(D, [], 128)` (one Linear);
* MoCo v2 / InfoMin: `MLPHead(D, [2048], 128, bn=False)` (Linear-ReLU-Linear, no BN);
* SimCLR v1: `MLPHead(D, [2048], 128, bn=True, last_bn=True)` (BN on every layer, last without bias/beta);
* SimCLR v2: `MLPHead(D, [2048, 2048], 128, bn=True, last_bn=True)` (3 layers).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn


class MLPHead(nn.Sequential):
    def __init__(self, in_dim: int, hidden_dims: Sequence[int], out_dim: int, bn: bool = False,
                 last_bn: bool = False, last_bn_affine: bool = False, act: type[nn.Module] = nn.ReLU):
        layers, d = [], in_dim
        for h in hidden_dims:
            layers += [nn.Linear(d, h, bias=not bn)] + ([nn.BatchNorm1d(h)] if bn else []) + [act(inplace=True)]
            d = h
        layers.append(nn.Linear(d, out_dim, bias=not last_bn))
        if last_bn:
            # SimCLR's last head layer: BN with no beta (TF `center=False`), and no learned scale either
            # unless `last_bn_affine` (MoCo v3 / BYOL-style heads use affine=False too).
            layers.append(nn.BatchNorm1d(out_dim, affine=last_bn_affine))
        super().__init__(*layers)


class SplitBatchNorm(nn.BatchNorm2d):
    """BatchNorm over `num_splits` groups of the batch, as if on `num_splits` GPUs (MoCo CIFAR colab):
    simulates shuffle-BN in one process. As in the colab (`input.view(-1, C * S, H, W)`), sample i falls
    in split i % S. Running statistics are the mean over the splits."""

    def __init__(self, num_features: int, num_splits: int, **kw):
        super().__init__(num_features, **kw)
        self.num_splits = num_splits

    def forward(self, x):
        N, C, H, W = x.shape
        if not self.training or self.num_splits == 1 or N % self.num_splits:
            return super().forward(x)
        S = self.num_splits
        rm, rv = self.running_mean.repeat(S), self.running_var.repeat(S)
        out = nn.functional.batch_norm(
            x.reshape(N // S, C * S, H, W), rm, rv, self.weight.repeat(S), self.bias.repeat(S), True,
            self.momentum, self.eps).reshape(N, C, H, W)
        self.running_mean.copy_(rm.view(S, C).mean(0))
        self.running_var.copy_(rv.view(S, C).mean(0))
        return out


def convert_split_bn(module: nn.Module, num_splits: int) -> nn.Module:
    """Replace every BatchNorm2d of `module` by a SplitBatchNorm sharing its parameters and buffers."""
    if num_splits <= 1:
        return module
    if isinstance(module, nn.BatchNorm2d) and not isinstance(module, SplitBatchNorm):
        new = SplitBatchNorm(module.num_features, num_splits, eps=module.eps, momentum=module.momentum,
                             affine=module.affine, track_running_stats=module.track_running_stats)
        new.load_state_dict(module.state_dict())
        return new
    for name, child in module.named_children():
        setattr(module, name, convert_split_bn(child, num_splits))
    return module


class JigsawHead(nn.Module):
    """PIRL's g / PyContrast's `JigsawHead`: a per-patch head (fc1), the patch embeddings of each image
    concatenated in their (shuffled) order, then fc2 to the embedding size. Input (B*9, in_dim) in
    sample-major order; the shuffle is done by the augmentation (data/transforms.Jigsaw)."""

    def __init__(self, in_dim: int, out_dim: int, hidden_dims: Sequence[int] = (), num_patches: int = 9):
        super().__init__()
        self.num_patches = num_patches
        self.fc1 = MLPHead(in_dim, hidden_dims, out_dim)
        self.fc2 = nn.Linear(out_dim * num_patches, out_dim)

    def forward(self, x):
        x = self.fc1(x)
        return self.fc2(x.reshape(-1, self.num_patches * x.shape[1]))
