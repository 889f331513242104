"""Losses (methods.md §1.1, §2.10-2.17), written once and used by every method.

Contrastive losses take L2-normalised embeddings and compute the logits in fp32 (masks with a large
negative number overflow in fp16; methods.md §4.13). The non-contrastive ones (BYOL, SimSiam, Barlow
Twins, SwAV / DINO cross-entropies) also compute in fp32.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .dist import all_reduce_sum, fp32, gather_no_grad, global_batch_norm, world_size


def info_nce(q: torch.Tensor, k_pos: torch.Tensor, k_neg: torch.Tensor, tau: float,
             k_hard: torch.Tensor | None = None) -> torch.Tensor:
    """MoCo's InfoNCE: logits [q.k+, q.k-] / tau with the positive at index 0 (moco/builder.py).

    q, k_pos: (B, D); k_neg: (K, D) negatives shared by every query; k_hard: (B, D) one more negative per
    query (BG_Swaps' hard negative), scored after the positive."""
    q, k_pos, k_neg = fp32(q), fp32(k_pos), fp32(k_neg)
    l_pos = (q * k_pos).sum(1, keepdim=True)
    l_neg = q @ k_neg.T
    parts = (l_pos, l_neg) if k_hard is None else (l_pos, (q * fp32(k_hard)).sum(1, keepdim=True), l_neg)
    logits = torch.cat(parts, 1) / tau
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
    z_a, z_b, z_a_all, z_b_all = fp32(z_a), fp32(z_b), fp32(z_a_all), fp32(z_b_all)
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
    p_pos = torch.exp(fp32(s_pos) / tau) / Z
    p_neg = torch.exp(fp32(s_neg) / tau) / Z
    eps = 1e-7  # lemniscate's eps
    log_h_pos = torch.log(p_pos / (p_pos + m * Pn + eps))
    log_1m_h_neg = torch.log(m * Pn / (p_neg + m * Pn + eps))
    return -(log_h_pos.sum() + log_1m_h_neg.sum()) / len(s_pos)


def nce_z_estimate(s: torch.Tensor, tau: float, n_data: int) -> torch.Tensor:
    """Monte-Carlo estimate of InstDisc's normaliser from a batch of scores: Z = mean(exp(s / tau)) * n."""
    return torch.exp(fp32(s.detach()) / tau).mean() * n_data


def nce_normaliser(Z: torch.Tensor, s: torch.Tensor, tau: float, n_data: int,
                   estimate: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The Z of an NCE loss (lemniscate NCEAverage, CMC, VISSL's PIRL): `Z`, a 0-dim slot of the method's buffer
    (< 0 while unset), takes the first batch's Monte-Carlo estimate averaged over processes and is then kept.
    Returns (a copy of Z for this batch's loss, this batch's estimate if `estimate` asks for it (an EMA of Z),
    else None); the estimate and its all-gather are computed only when one of the two needs them."""
    batch_estimate = None
    if estimate or Z < 0:
        batch_estimate = gather_no_grad(nce_z_estimate(s, tau, n_data)[None]).mean()
        if Z < 0:
            Z.fill_(batch_estimate)
    return Z.clone(), batch_estimate if estimate else None


def contrastive_in_batch(q: torch.Tensor, k_all: torch.Tensor, tau: float, offset: int = 0) -> torch.Tensor:
    """MoCo v3's `contrastive_loss` (moco-v3 moco/builder.py): CE(norm(q) . norm(k_all)^T / tau, labels
    arange(B) + offset) x 2 tau. `k_all`: keys of every process (gathered, no gradient); this process's
    queries match the keys at `offset` = rank x B."""
    q, k_all = F.normalize(fp32(q), dim=1), F.normalize(fp32(k_all), dim=1)
    labels = torch.arange(len(q), device=q.device) + offset
    return F.cross_entropy(q @ k_all.T / tau, labels) * (2 * tau)


def negative_cosine(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """SimSiam's D(p, z) = -cos(p, sg(z)), averaged over the batch (simsiam main_simsiam.py)."""
    return -F.cosine_similarity(fp32(p), fp32(z.detach()), dim=1).mean()


def byol_regression(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """BYOL's ||norm(p) - norm(sg(z))||^2 = 2 - 2 cos(p, z), averaged over the batch (byol
    utils/helpers.regression_loss)."""
    return (2 - 2 * F.cosine_similarity(fp32(p), fp32(z.detach()), dim=1)).mean()


def barlow_twins(z1: torch.Tensor, z2: torch.Tensor, lambd: float) -> torch.Tensor:
    """Barlow Twins (barlowtwins main.py): C = bn(z1)^T bn(z2) / N over the global batch of N samples,
    L = sum_i (1 - C_ii)^2 + lambd sum_{i != j} C_ij^2. The affine-free BN and C use sums over every process
    (with gradient), so each process computes the global loss and, with DDP averaging, the gradient equals
    the single-process one (the official code's gradient is 1/W of it: its all_reduce is invisible to
    autograd). In fp32."""
    n = len(z1) * world_size()
    c = all_reduce_sum(global_batch_norm(z1).T @ global_batch_norm(z2) / n)
    on_diag = (torch.diagonal(c) - 1).pow(2).sum()
    off_diag = c.pow(2).sum() - torch.diagonal(c).pow(2).sum()
    return on_diag + lambd * off_diag


def swapped_prediction(scores: list[torch.Tensor], codes: dict[int, torch.Tensor], tau: float) -> torch.Tensor:
    """SwAV's loss (swav main_swav.py train()): for each assignment crop s with codes q_s, the mean over the
    other crops v of -sum_k q_s log softmax(scores_v / tau), divided by n_crops - 1, then averaged over the
    assignment crops. `scores`: per crop (B, K) prototype scores; `codes`: crop index -> (B, K) codes."""
    loss = 0.0
    for s, q in codes.items():
        sub = 0.0
        for v, x in enumerate(scores):
            if v != s:
                sub = sub - (q * F.log_softmax(fp32(x) / tau, dim=1)).sum(1).mean()
        loss = loss + sub / (len(scores) - 1)
    return loss / len(codes)


def dino_cross_entropy(student: list[torch.Tensor], teacher: list[torch.Tensor]) -> torch.Tensor:
    """DINO's loss (dino main_dino.py DINOLoss.forward) on prepared outputs: `student` are the per-crop
    student logits already divided by the student temperature, `teacher` the per-global-crop teacher
    probabilities (centred, sharpened, detached). Mean of -sum_k t log_softmax(s) over every (teacher crop,
    different student crop) pair."""
    total, terms = 0.0, 0
    for iq, t in enumerate(teacher):
        for v, s in enumerate(student):
            if v == iq:
                continue
            total = total + (-t * F.log_softmax(fp32(s), dim=-1)).sum(-1).mean()
            terms += 1
    return total / terms
