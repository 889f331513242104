"""Contrastive losses (methods.md §1.1), written once and used by every method.

All take L2-normalised embeddings and compute the logits in fp32 (masks with a large negative number
overflow in fp16; methods.md §4.13).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def info_nce(q: torch.Tensor, k_pos: torch.Tensor, k_neg: torch.Tensor, tau: float) -> torch.Tensor:
    """MoCo's InfoNCE: logits [q.k+, q.k-] / tau with the positive at index 0 (moco/builder.py).

    q, k_pos: (B, D); k_neg: (K, D) negatives shared by every query."""
    q, k_pos, k_neg = q.float(), k_pos.float(), k_neg.float()
    l_pos = (q * k_pos).sum(1, keepdim=True)
    l_neg = q @ k_neg.T
    logits = torch.cat((l_pos, l_neg), 1) / tau
    return F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long, device=q.device))


def nt_xent(z_a: torch.Tensor, z_b: torch.Tensor, tau: float, z_a_all: torch.Tensor | None = None,
            z_b_all: torch.Tensor | None = None, offset: int = 0) -> torch.Tensor:
    """SimCLR's NT-Xent (simclr/objective.py), as the mean over the 2B local anchors.

    Anchor a_i's positive is b_i; its negatives are every other view of the (gathered) batch:
    logits_ab = a.b_all, logits_aa = a.a_all with the self-similarity masked. `z_*_all` are the views
    gathered from every process (with gradient; modules.dist.gather), the local rows sitting at
    `offset`. Equals the single-process loss on the global batch when averaged over processes.
    (The TF code returns loss_a + loss_b, i.e. twice this value; the gradient direction is the same.)"""
    z_a_all = z_a if z_a_all is None else z_a_all
    z_b_all = z_b if z_b_all is None else z_b_all
    z_a, z_b, z_a_all, z_b_all = z_a.float(), z_b.float(), z_a_all.float(), z_b_all.float()
    B = len(z_a)
    labels = torch.arange(B, device=z_a.device) + offset
    self_mask = F.one_hot(labels, len(z_a_all)).bool()
    logits_aa = (z_a @ z_a_all.T / tau).masked_fill(self_mask, float("-inf"))
    logits_bb = (z_b @ z_b_all.T / tau).masked_fill(self_mask, float("-inf"))
    logits_ab = z_a @ z_b_all.T / tau
    logits_ba = z_b @ z_a_all.T / tau
    loss_a = F.cross_entropy(torch.cat((logits_ab, logits_aa), 1), labels)
    loss_b = F.cross_entropy(torch.cat((logits_ba, logits_bb), 1), labels)
    return (loss_a + loss_b) / 2


def nce_binary(s_pos: torch.Tensor, s_neg: torch.Tensor, tau: float, n_data: int, Z: torch.Tensor) -> torch.Tensor:
    """InstDisc's NCE (lemniscate lib/NCEAverage.py + NCECriterion.py).

    P_m = exp(s / tau) / Z, P_n = 1 / n_data, h = P_m / (P_m + m P_n); the loss is
    -[log h_pos + sum_neg log(1 - h_neg)] averaged over the batch. s_pos: (B,), s_neg: (B, m)."""
    m = s_neg.shape[1]
    Pn = 1.0 / n_data
    p_pos = torch.exp(s_pos.float() / tau) / Z
    p_neg = torch.exp(s_neg.float() / tau) / Z
    eps = 1e-7  # lemniscate's eps
    log_h_pos = torch.log(p_pos / (p_pos + m * Pn + eps))
    log_1m_h_neg = torch.log(m * Pn / (p_neg + m * Pn + eps))
    return -(log_h_pos.sum() + log_1m_h_neg.sum()) / len(s_pos)


def nce_z_estimate(s: torch.Tensor, tau: float, n_data: int) -> torch.Tensor:
    """Monte-Carlo estimate of InstDisc's normaliser from a batch of scores: Z = mean(exp(s / tau)) * n."""
    return torch.exp(s.detach().float() / tau).mean() * n_data


