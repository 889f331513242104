"""BYOL — Grill et al., "Bootstrap Your Own Latent: A New Approach to Self-Supervised Learning",
NeurIPS 2020. Official code: deepmind/deepmind-research byol/ (byol_experiment.py, utils/networks.py,
utils/helpers.py, utils/schedules.py).

    online:  y = f_theta(v), z = g_theta(y), p = q_theta(z)      backbone, projector, predictor
    target:  z' = g_xi(f_xi(v'))                                 EMA copy, no predictor, no gradient
    L = ||norm(p(v1)) - norm(sg(z'(v2)))||^2 + ||norm(p(v2)) - norm(sg(z'(v1)))||^2
                                                                 both directions SUMMED (loss_fn), each
                                                                 2 - 2 cos averaged over the batch
    xi <- tau xi + (1 - tau) theta,  tau = 1 - (1 - tau_base)(cos(pi k / K) + 1) / 2   after each step
Heads: Linear(D, 4096)-BN-ReLU-Linear(4096, 256) (haiku: bias on the first Linear, none on the last);
the predictor is the same MLP on 256-d. Each view goes through the networks on its own (BN statistics per
view); the target runs in train mode (batch statistics), as the official code does (`is_training=True`).
LARS excludes biases and BN parameters from weight decay and from the trust ratio (configs/byol.yaml).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..modules.heads import MLPHead
from ..modules.losses import byol_regression
from ..modules.momentum import ema_update, momentum_copy, momentum_schedule
from ..modules.optim import split_decay
from .official import OfficialLayout, linear_out_dims, load_official


def _official_hparams(ckpt) -> dict:
    projector = linear_out_dims(ckpt.online.heads["projector"])
    return {"hidden_dim": projector[0], "dim": projector[-1]}


OFFICIAL = OfficialLayout(heads={"projector": "projector", "predictor": "predictor"}, hparams=_official_hparams,
                          momentum={"target_backbone": "backbone", "target_projector": "projector"})


class BYOL(nn.Module):
    def __init__(self, backbone: nn.Module, info, tau_base: float = 0.996, hidden_dim: int = 4096,
                 dim: int = 256):
        super().__init__()
        self.backbone = backbone
        self.projector = MLPHead(backbone.num_features, [hidden_dim], dim, bn=True, hidden_bias=True, last_bias=False)
        self.predictor = MLPHead(dim, [hidden_dim], dim, bn=True, hidden_bias=True, last_bias=False)
        self.target_backbone = momentum_copy(self.backbone)
        self.target_projector = momentum_copy(self.projector)
        self.tau = momentum_schedule(tau_base, info.total_steps)

    def forward(self, batch: dict, step: int):
        v1, v2 = batch["views"][:2]
        p1 = self.predictor(self.projector(self.backbone(v1)))
        p2 = self.predictor(self.projector(self.backbone(v2)))
        with torch.no_grad():
            z1 = self.target_projector(self.target_backbone(v1))
            z2 = self.target_projector(self.target_backbone(v2))
        loss = byol_regression(p1, z2) + byol_regression(p2, z1)
        return loss, {"tau": float(self.tau[step])}

    @torch.no_grad()
    def after_optimizer_step(self, step: int) -> None:
        ema_update(self.target_backbone, self.backbone, float(self.tau[step]))
        ema_update(self.target_projector, self.projector, float(self.tau[step]))

    def load_pretrained(self, ckpt) -> list[str]:
        return load_official(self, ckpt, OFFICIAL)

    def param_groups(self) -> list[dict]:
        return split_decay(self)
