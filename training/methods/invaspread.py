"""InvaSpread — Ye, Zhang, Yuen, Chang, "Unsupervised Embedding Learning via Invariant and Spreading
Instance Feature", CVPR 2019. Official code: mangye16/Unsupervised_Embedding_Learning (BatchAverage.py).

One encoder (ResNet -> Linear -> 128 -> L2), B images with two views, 2B embeddings f; negatives are the
other images of the batch (no memory bank). With P(i | x) = exp(f_i.x / tau) / sum_k exp(f_k.x / tau)
over the 2B - 1 other embeddings of the batch,
    J = - sum_i log P(i | x^_i) - sum_i sum_{j != i} log(1 - P(i | x_j))          (paper eq. 7-8)
summed over all 2B anchors and divided by 2B, as `BatchCriterion` does. Like the official code, the
"weight" side of every similarity is detached (`x @ x.t().data`, `x * reordered_x.data`): gradients
flow through the anchor only. So the other processes' embeddings are gathered without gradient, which
gives exactly the single-process gradient (methods.md §2.2).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..modules.dist import fp32, gather_no_grad, rank
from ..modules.heads import MLPHead
from ..modules.optim import split_decay


def batch_criterion(x: torch.Tensor, x_all: torch.Tensor, offset: int, tau: float) -> torch.Tensor:
    """BatchCriterion for the local anchors x (2b, D), laid out [view 1; view 2], against every process's
    embeddings x_all (2N, D) laid out [view 1 of all; view 2 of all], this process's view-1 rows at
    `offset` of each half. Returns the sum over local anchors divided by the global 2N."""
    n2, b = len(x_all), len(x) // 2
    N = n2 // 2
    rows = torch.cat((torch.arange(b) + offset, torch.arange(b) + offset + N)).to(x.device)  # own columns
    partner = torch.cat((rows[b:], rows[:b]))
    x_all = x_all.detach()
    sim = torch.exp(x @ x_all.T / tau)  # (2b, 2N)
    sim = sim.masked_fill(F.one_hot(rows, n2).bool(), 0.0)  # diag_mat: no self term
    pos = sim.gather(1, partner[:, None]).squeeze(1)
    all_div = sim.sum(1)  # negM = 1
    lnPmt = torch.log(pos / all_div)
    # log(1 - P(i | x_j)) for every anchor j and every other instance i, minus the positive's own term
    lnPon = torch.log(1 - sim / all_div[:, None]).sum(1) - torch.log(1 - pos / all_div)
    return -(lnPmt.sum() + lnPon.sum()) / n2


class InvaSpread(nn.Module):
    def __init__(self, backbone: nn.Module, info=None, tau: float = 0.1, dim: int = 128):
        super().__init__()
        self.backbone, self.tau = backbone, tau
        self.projector = MLPHead(backbone.num_features, [], dim)

    def forward(self, batch: dict, step: int):
        x1, x2 = batch["views"][:2]
        f = fp32(F.normalize(self.projector(self.backbone(torch.cat((x1, x2)))), dim=1))
        f1, f2 = f.chunk(2)
        f_all = torch.cat((gather_no_grad(f1), gather_no_grad(f2)))
        loss = batch_criterion(f, f_all, rank() * len(f1), self.tau)
        # The official loss is a sum over the global batch / 2N; each process returns its share times the
        # number of processes so that DDP's gradient averaging gives the single-process gradient.
        loss = loss * (len(f_all) // len(f))
        return loss, {"pos_sim": (f1 * f2).sum(1).mean().detach()}

    def after_optimizer_step(self, step: int) -> None:
        pass

    def param_groups(self) -> list[dict]:
        return split_decay(self, exclude_bias_and_norm=False)
