"""SimCLR v2 — Chen, Kornblith, Swersky, Norouzi, Hinton, "Big Self-Supervised Models are Strong
Semi-Supervised Learners", NeurIPS 2020. Official code: google-research/simclr (v2 branch of the repo).

Changes from SimCLR v1 (methods.md §2.9):
* a 3-layer projection head (`num_proj_layers=3`), BN on every layer, the last without beta;
* optionally, MoCo-style negatives from a momentum encoder ("memory buffer", +~1 % in the paper, not
  released). The authors describe it as contrasting "examples from momentum encoder from current and
  past batches, consistent with MoCo" (google-research/simclr#115, #167). Here, with `memory_size > 0`:
  each online view z_a is contrasted with the momentum-encoder keys of the other view of the whole
  (gathered) batch, its own at index rank * B + i, plus the queue of past keys; both directions are
  averaged; keys of both views are enqueued once per optimizer step; the EMA (m) follows the optimizer
  step. With `memory_size = 0` (the released code) the loss is exactly v1's NT-Xent.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..modules.dist import gather, gather_no_grad, rank
from ..modules.heads import MLPHead
from ..modules.losses import nt_xent
from ..modules.momentum import ema_update, momentum_copy
from ..modules.optim import split_decay
from ..modules.queue import Queue


class SimCLRv2(nn.Module):
    def __init__(self, backbone: nn.Module, info=None, tau: float = 0.1, proj_hidden_dim: int | None = None,
                 proj_dim: int = 128, proj_layers: int = 3, memory_size: int = 0, m: float = 0.999):
        super().__init__()
        self.backbone, self.tau, self.m = backbone, tau, m
        hidden = proj_hidden_dim or backbone.num_features
        self.projector = MLPHead(backbone.num_features, [hidden] * (proj_layers - 1), proj_dim, bn=True, last_bn=True)
        self.memory_size = memory_size
        if memory_size:
            self.momentum_backbone = momentum_copy(backbone)
            self.momentum_projector = momentum_copy(self.projector)
            self.queue = Queue(memory_size, proj_dim)
        self._pending: list[torch.Tensor] = []

    def forward(self, batch: dict, step: int):
        x1, x2 = batch["views"][:2]
        z = F.normalize(self.projector(self.backbone(torch.cat((x1, x2)))), dim=1)
        z1, z2 = z.float().chunk(2)
        logs = {"pos_sim": (z1 * z2).sum(1).mean().detach()}
        if not self.memory_size:
            return nt_xent(z1, z2, self.tau, gather(z1), gather(z2), offset=rank() * len(z1)), logs
        with torch.no_grad():
            k = F.normalize(self.momentum_projector(self.momentum_backbone(torch.cat((x1, x2)))), dim=1).float()
            k1, k2 = gather_no_grad(k[:len(x1)]), gather_no_grad(k[len(x1):])
        queue = self.queue.negatives().float()
        labels = torch.arange(len(z1), device=z1.device) + rank() * len(z1)
        loss = 0
        for q, keys in ((z1, k2), (z2, k1)):
            logits = torch.cat((q @ keys.T, q @ queue.T), 1) / self.tau
            loss = loss + F.cross_entropy(logits, labels) / 2
        self._pending += [k1, k2]
        return loss, logs

    @torch.no_grad()
    def after_optimizer_step(self, step: int) -> None:
        if self.memory_size:
            ema_update(self.momentum_backbone, self.backbone, self.m)
            ema_update(self.momentum_projector, self.projector, self.m)
            for keys in self._pending:
                self.queue.enqueue(keys)
        self._pending = []

    def param_groups(self) -> list[dict]:
        return split_decay(self)
