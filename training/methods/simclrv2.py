"""SimCLR v2 — Chen, Kornblith, Swersky, Norouzi, Hinton, "Big Self-Supervised Models are Strong
Semi-Supervised Learners", NeurIPS 2020. Official code: google-research/simclr (v2 branch of the repo).

Changes from SimCLR v1 (methods.md §2.9):
* a 3-layer projection head (`num_proj_layers=3`), BN on every layer, the last without beta;
* optionally, MoCo-style negatives from a momentum encoder ("memory buffer", +~1 % in the paper, not
  released). The authors describe it as contrasting "examples from momentum encoder from current and
  past batches, consistent with MoCo" (google-research/simclr#115, #167). Here, with `memory_size > 0`:
  each online view z_a is contrasted with the momentum-encoder keys of the other view of the whole
  (gathered) batch, its own at index rank * B + i, plus the queue of past keys; both directions are
  summed, as the released NT-Xent sums them (`loss_reduction`); keys of both views are enqueued once per
  optimizer step; the EMA (m) follows the optimizer step. With `memory_size = 0` (the released code) the
  loss is exactly v1's NT-Xent.
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..modules.dist import fp32, gather_no_grad, rank
from ..modules.momentum import ema_update, momentum_copy
from ..modules.queue import Queue
from .official import load_official
from .simclr import OFFICIAL, SimCLR


class SimCLRv2(SimCLR):
    """SimCLR (projector, NT-Xent, LARS groups) with a 3-layer head and the optional momentum memory."""

    def __init__(self, backbone: nn.Module, info=None, tau: float = 0.1, proj_hidden_dim: int | None = None,
                 proj_dim: int = 128, proj_layers: int = 3, memory_size: int = 0, m: float = 0.999,
                 proj_last_bn_scale: bool = True, loss_reduction: str = "sum"):
        super().__init__(backbone, info, tau=tau, proj_hidden_dim=proj_hidden_dim, proj_dim=proj_dim,
                         proj_layers=proj_layers, proj_last_bn_scale=proj_last_bn_scale,
                         loss_reduction=loss_reduction)
        self.memory_size, self.m = memory_size, m
        if memory_size:
            self.momentum_backbone = momentum_copy(backbone)
            self.momentum_projector = momentum_copy(self.projector)
            self.queue = Queue(memory_size, proj_dim)
        self._pending: list[torch.Tensor] = []

    def forward(self, batch: dict, step: int):
        if not self.memory_size:  # the released code: v1's NT-Xent
            return super().forward(batch, step)
        x1, x2 = batch["views"][:2]
        z = F.normalize(self.projector(self.backbone(torch.cat((x1, x2)))), dim=1)
        z1, z2 = fp32(z).chunk(2)
        with torch.no_grad():
            k = fp32(F.normalize(self.momentum_projector(self.momentum_backbone(torch.cat((x1, x2)))), dim=1))
            k1, k2 = gather_no_grad(k[:len(x1)]), gather_no_grad(k[len(x1):])
        queue = fp32(self.queue.negatives())
        labels = torch.arange(len(z1), device=z1.device) + rank() * len(z1)
        loss = 0
        for q, keys in ((z1, k2), (z2, k1)):
            logits = torch.cat((q @ keys.T, q @ queue.T), 1) / self.tau
            loss = loss + F.cross_entropy(logits, labels) * self.direction_weight
        self._pending += [k1, k2]
        return loss, {"pos_sim": (z1 * z2).sum(1).mean().detach()}

    def load_pretrained(self, ckpt) -> list[str]:
        """The released head; the momentum memory (not released) starts as a copy of the loaded encoder."""
        momentum = {"momentum_backbone": "backbone", "momentum_projector": "projector"} if self.memory_size else {}
        return load_official(self, ckpt, replace(OFFICIAL, momentum=momentum))

    @torch.no_grad()
    def after_optimizer_step(self, step: int) -> None:
        if self.memory_size:
            ema_update(self.momentum_backbone, self.backbone, self.m)
            ema_update(self.momentum_projector, self.projector, self.m)
            for keys in self._pending:
                self.queue.enqueue(keys)
        self._pending = []
