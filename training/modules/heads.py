"""Projection / prediction heads and BatchNorm helpers, parameterised by dimensions (methods.md §2).

`MLPHead(in_dim, [hidden...], out_dim, bn=..., last_bn=...)` covers every head of this issue:
* InstDisc / MoCo v1 / InvaSpread / PIRL image head: `MLPHead(D, [], 128)` (one Linear);
* MoCo v2 / InfoMin: `MLPHead(D, [2048], 128, bn=False)` (Linear-ReLU-Linear, no BN);
* SimCLR v1: `MLPHead(D, [2048], 128, bn=True, last_bn=True)` (BN on every layer, last without bias/beta);
* SimCLR v2: `MLPHead(D, [2048, 2048], 128, bn=True, last_bn=True)` (3 layers);
* BYOL projector / predictor: `MLPHead(D, [4096], 256, bn=True, hidden_bias=True)` (haiku's Linear keeps
  its bias before the BN; the output Linear has none);
* SimSiam projector: `MLPHead(D, [D, D], D, bn=True, last_bn=True)`; predictor `MLPHead(D, [512], D, bn=True)`;
* Barlow Twins: `MLPHead(D, [8192, 8192], 8192, bn=True, last_bias=False)`;
* SwAV / DeepCluster-v2: `MLPHead(D, [2048], 128, bn=True, hidden_bias=True)`;
* MoCo v3: `MLPHead(D, [4096], 256, bn=True, last_bn=True)` (projector), `last_bias=False` (predictor);
* DINO: `DINOHead` below (GELU MLP, L2 bottleneck, weight-normalised prototypes).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from .dist import AnyRankBatchNorm, replace_batchnorm


class MLPHead(nn.Sequential):
    """Linear-[BN]-act per hidden width, then the output Linear [+ BN]. A Linear followed by BN has no bias
    unless `hidden_bias`; the output Linear has one unless followed by BN or `last_bias=False`."""

    def __init__(self, in_dim: int, hidden_dims: Sequence[int], out_dim: int, bn: bool = False,
                 last_bn: bool = False, last_bn_affine: bool = False, act: type[nn.Module] = nn.ReLU,
                 hidden_bias: bool | None = None, last_bias: bool | None = None):
        layers, d = [], in_dim
        hidden_bias = (not bn) if hidden_bias is None else hidden_bias
        last_bias = (not last_bn) if last_bias is None else last_bias
        for h in hidden_dims:
            act_layer = act(inplace=True) if act is nn.ReLU else act()
            layers += [nn.Linear(d, h, bias=hidden_bias)] + ([nn.BatchNorm1d(h)] if bn else []) + [act_layer]
            d = h
        layers.append(nn.Linear(d, out_dim, bias=last_bias))
        if last_bn:
            # SimCLR's last head layer: BN with no beta (TF `center=False`), and no learned scale either
            # unless `last_bn_affine` (MoCo v3 / BYOL-style heads use affine=False too).
            layers.append(nn.BatchNorm1d(out_dim, affine=last_bn_affine))
        super().__init__(*layers)


class SplitBatchNorm(AnyRankBatchNorm):
    """BatchNorm over `num_splits` contiguous groups of the batch, as if on `num_splits` processes (MoCo's
    CIFAR colab simulates shuffle-BN this way): with the trainer's contiguous per-process slices, one
    process with `bn_splits W` normalises exactly the groups that W processes with per-process BN do.
    Running statistics are the mean over the groups (what `dist.average_bn_statistics` keeps for W
    processes). `bn_class` is the BatchNorm it stands for (restored on export)."""

    def __init__(self, num_features: int, num_splits: int, bn_class: type = nn.BatchNorm2d, **kw):
        super().__init__(num_features, **kw)
        self.num_splits, self.bn_class = num_splits, bn_class

    def forward(self, x):
        N, C = x.shape[:2]
        S = self.num_splits
        if not self.training or S == 1:
            return super().forward(x)
        if N % S:
            raise ValueError(f"bn_splits {S} does not divide this process's batch of {N} rows")
        rest = x.shape[2:]
        # (S, N/S, C, ...) -> (N/S, S*C, ...): group s becomes channels s*C..(s+1)*C of one batch norm
        grouped = x.reshape(S, N // S, C, *rest).transpose(0, 1).reshape(N // S, S * C, *rest)
        rm, rv = self.running_mean.repeat(S), self.running_var.repeat(S)
        w = self.weight.repeat(S) if self.affine else None
        b = self.bias.repeat(S) if self.affine else None
        out = nn.functional.batch_norm(grouped, rm, rv, w, b, True, self._count_batch(), self.eps)
        self.running_mean.copy_(rm.view(S, C).mean(0))
        self.running_var.copy_(rv.view(S, C).mean(0))
        return out.reshape(N // S, S, C, *rest).transpose(0, 1).reshape(N, C, *rest)


def convert_split_bn(module: nn.Module, num_splits: int) -> nn.Module:
    """Replace every BatchNorm of `module` by a SplitBatchNorm sharing its parameters and buffers."""
    if num_splits <= 1:
        return module
    return replace_batchnorm(module, lambda bn: SplitBatchNorm(
        bn.num_features, num_splits, type(bn), eps=bn.eps, momentum=bn.momentum, affine=bn.affine,
        track_running_stats=bn.track_running_stats), SplitBatchNorm)


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


class WeightNormLinear(nn.Module):
    """A bias-free Linear with weight normalisation, W = g v / ||v|| per output row (the weight_g /
    weight_v parameters of `nn.utils.weight_norm`, so DINO's checkpoints load by name)."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.weight_v = nn.Parameter(torch.empty(out_dim, in_dim))
        nn.init.trunc_normal_(self.weight_v, std=0.02)
        self.weight_g = nn.Parameter(torch.ones(out_dim, 1))

    def forward(self, x):
        return nn.functional.linear(x, self.weight_g * self.weight_v / self.weight_v.norm(dim=1, keepdim=True))


class DINOHead(nn.Module):
    """DINO's head (dino/vision_transformer.py DINOHead): an MLP with GELU (BN optional), the L2-normalised
    bottleneck, then a weight-normalised bias-free Linear to `out_dim` "prototypes" whose norm g is fixed
    to 1 when `norm_last_layer`. Linear weights: trunc-normal std 0.02, biases 0."""

    def __init__(self, in_dim: int, out_dim: int = 65536, hidden_dim: int = 2048, bottleneck_dim: int = 256,
                 nlayers: int = 3, use_bn: bool = False, norm_last_layer: bool = True):
        super().__init__()
        nlayers = max(nlayers, 1)
        self.mlp = MLPHead(in_dim, [hidden_dim] * (nlayers - 1), bottleneck_dim, bn=use_bn, act=nn.GELU,
                           hidden_bias=True, last_bias=True)
        for m in self.mlp.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        self.last_layer = WeightNormLinear(bottleneck_dim, out_dim)
        self.last_layer.weight_g.requires_grad = not norm_last_layer

    def forward(self, x):
        return self.last_layer(nn.functional.normalize(self.mlp(x), dim=-1))
