"""Momentum (EMA) encoders: MoCo's key encoder, SimCLR v2's memory encoder, and later BYOL / DINO
teachers. Parameters only: BN running statistics evolve from the copy's own forward passes
(methods.md §4.11)."""

from __future__ import annotations

import copy

import torch
import torch.nn as nn


def momentum_copy(module: nn.Module) -> nn.Module:
    """A frozen deep copy to be updated by `ema_update` (MoCo: `param_k.data.copy_(param_q.data)`)."""
    target = copy.deepcopy(module)
    for p in target.parameters():
        p.requires_grad = False
    return target


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, m: float) -> None:
    """theta_k <- m * theta_k + (1 - m) * theta_q (MoCo eq. 2)."""
    for pk, pq in zip(target.parameters(), online.parameters()):
        pk.mul_(m).add_(pq.detach(), alpha=1 - m)
