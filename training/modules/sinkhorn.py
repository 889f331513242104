"""Sinkhorn-Knopp equipartition of SwAV (swav main_swav.py `distributed_sinkhorn`, methods.md §2.10e).

    Q = exp(scores / eps)^T                    K prototypes x B samples (B summed over processes)
    Q /= sum(Q)                                 the sum all-reduced
    repeat n_iters: rows: Q /= row sums (all-reduced, per prototype), Q /= K
                    columns: Q /= column sums (local: one column per sample), Q /= B
    return (Q * B)^T                            each sample's codes sum to 1

In float32 (float64 stays float64) with the global maximum subtracted before exp (a constant factor, cancelled by the first
normalisation), so fp16 / bf16 scores and small eps do not overflow."""

from __future__ import annotations

import torch

from .dist import fp32, reduce_no_grad, world_size


@torch.no_grad()
def sinkhorn_knopp(scores: torch.Tensor, eps: float = 0.05, n_iters: int = 3, distributed: bool = True) -> torch.Tensor:
    """Codes (B_local, K) for this process's rows of `scores`, every process's rows in the marginals.
    `distributed=False`: `scores` are all the rows (SeLa-v2's whole-dataset memory, the same on every process)."""
    reduce = reduce_no_grad if distributed else (lambda x, op="sum": x)
    scores = fp32(scores.detach())
    Q = torch.exp((scores - reduce(scores.max(), "max")) / eps).T
    K, B = Q.shape[0], Q.shape[1] * (world_size() if distributed else 1)
    Q /= reduce(Q.sum())
    for _ in range(n_iters):
        Q /= reduce(Q.sum(1, keepdim=True))
        Q /= K
        Q /= Q.sum(0, keepdim=True)
        Q /= B
    return (Q * B).T
