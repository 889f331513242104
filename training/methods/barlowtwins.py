"""Barlow Twins — Zbontar, Jing, Misra, LeCun, Deny, "Barlow Twins: Self-Supervised Learning via
Redundancy Reduction", ICML 2021. Official code: facebookresearch/barlowtwins (main.py).

Algorithm 1 of the paper, line by line:
    for x in loader:
        y_a, y_b = augment(x), augment(x)          -> batch["views"] (BYOL asymmetric preset)
        z_a, z_b = f(y_a), f(y_b)                  -> projector(backbone(y)), each view on its own
        z_a_norm = (z_a - z_a.mean(0)) / z_a.std(0)    -> affine-free BN over the GLOBAL batch
        c = mm(z_a_norm.T, z_b_norm) / N           -> divided by the global batch, summed over processes
        c_diff = (c - eye(D)).pow(2); off-diagonal c_diff *= lambda
        loss = c_diff.sum()                        -> losses.barlow_twins (lambda = 0.0051)
Projector 8192-8192-8192: Linear(no bias)-BN-ReLU twice, then Linear(no bias). LARS with two lrs:
`lr` for the weights and lr x bias_lr_scale (0.0048 / 0.2) for biases and BN parameters, which get neither
weight decay nor the trust ratio (main.py `LARS(..., weight_decay_filter, lars_adaptation_filter)`).

Gradient scale (`grad_scale`). main.py all-reduces C outside autograd, so each process back-propagates only
its own samples' part of the global loss and DDP averages: the gradient is 1/W of the global loss's
(`official`, the default: the same training dynamics as the released runs at every W). `invariant` gives
the global loss's own gradient, the same on any number of processes (W times the official one).
"""

from __future__ import annotations

import torch.nn as nn

from ..modules.heads import MLPHead
from ..modules.dist import world_size
from ..modules.losses import barlow_twins
from ..modules.optim import split_decay
from .official import OfficialLayout, linear_out_dims, load_official

# main.py's `bn` (affine-free BatchNorm1d) has only running statistics, which training never uses: the
# loss normalises with the batch statistics, so it is left out.
OFFICIAL = OfficialLayout(heads={"projector": "projector"},
                          hparams=lambda ckpt: {"proj_dims": linear_out_dims(ckpt.online.heads["projector"])})


class BarlowTwins(nn.Module):
    def __init__(self, backbone: nn.Module, info=None, lambd: float = 0.0051,
                 proj_dims: tuple = (8192, 8192, 8192), bias_lr_scale: float = 0.0048 / 0.2,
                 grad_scale: str = "official"):
        super().__init__()
        if grad_scale not in ("official", "invariant"):
            raise ValueError(f"grad_scale must be 'official' or 'invariant', got {grad_scale!r}")
        self.backbone, self.lambd, self.bias_lr_scale = backbone, lambd, bias_lr_scale
        self.grad_scale = grad_scale
        *hidden, out = proj_dims
        self.projector = MLPHead(backbone.num_features, hidden, out, bn=True, last_bias=False)

    def forward(self, batch: dict, step: int):
        y1, y2 = batch["views"][:2]
        z1, z2 = self.projector(self.backbone(y1)), self.projector(self.backbone(y2))
        loss = barlow_twins(z1, z2, self.lambd)
        W = world_size()
        if self.grad_scale == "official" and W > 1:
            loss = loss.detach() + (loss - loss.detach()) / W  # the same value, main.py's 1/W gradient
        return loss, {}

    def after_optimizer_step(self, step: int) -> None:
        pass

    def load_pretrained(self, ckpt) -> list[str]:
        return load_official(self, ckpt, OFFICIAL)

    def param_groups(self) -> list[dict]:
        weights, biases = split_decay(self)
        return [weights, {**biases, "lr_scale": self.bias_lr_scale}]
