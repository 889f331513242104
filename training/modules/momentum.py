"""Momentum (EMA) encoders: MoCo's key encoder, SimCLR v2's memory encoder, BYOL's target, MoCo v3's
momentum encoder, DINO's teacher. Parameters only: BN running statistics evolve from the copy's own
forward passes (methods.md §4.11). `momentum_schedule`: the cosine increase of m to 1 that BYOL, MoCo v3
and DINO share."""

from __future__ import annotations

import copy

import numpy as np

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
    """theta_k <- m * theta_k + (1 - m) * theta_q (MoCo eq. 2), as two multi-tensor kernels over all
    parameters (the same arithmetic as a per-parameter mul_ + add_, without ~2 launches per tensor)."""
    tk = [p for p in target.parameters()]
    tq = [p.detach() for p in online.parameters()]
    torch._foreach_mul_(tk, m)
    torch._foreach_add_(tk, tq, alpha=1 - m)


def momentum_schedule(base: float, total_steps: int) -> np.ndarray:
    """m_k = 1 - (1 - base) (cos(pi k / K) + 1) / 2 for k = 0..K-1: BYOL's `target_ema`, MoCo v3's
    `adjust_moco_momentum`, DINO's `cosine_scheduler(m, 1, ...)` (one value per optimizer step)."""
    k = np.arange(total_steps)
    return 1 - (1 - base) * (np.cos(np.pi * k / max(total_steps, 1)) + 1) / 2
