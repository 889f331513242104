"""Distributed helpers that also work in a single process (methods.md §1.6, §4).

* `gather(x)`: all-gather **with gradient** (SimCLR / InvaSpread negatives). The backward sums the
  gradients every process sends to a slice and returns this process's slice (solo-learn / lightly
  `GatherLayer`). With DDP averaging gradients over W processes and each process's loss being the mean
  over its own anchors, the result equals the gradient of the single-process loss on the global batch
  (tests/training/test_distributed.py checks this with 2 gloo processes).
* `gather_no_grad(x)`: MoCo's `concat_all_gather` (keys, queue and memory-bank updates).
* `all_reduce_sum(x)`: a sum over processes **with gradient**, by the same rule as `gather`: the
  backward all-reduces, so every process's loss reaches every process's input (Barlow Twins' cross-
  correlation, the global BatchNorm of its embedding). `reduce_no_grad(x, op)`: sums / maxima without
  gradient (Sinkhorn-Knopp's marginals, DINO's center, k-means).
* `shuffle_bn_forward(encoder, x)`: MoCo's shuffle-BN around the key encoder.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


class _Gather(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        out = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(out, x.contiguous())
        return torch.cat(out)

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous()
        dist.all_reduce(grad)  # every process's loss contributes to every slice
        return grad.chunk(dist.get_world_size())[dist.get_rank()]


def gather(x: torch.Tensor) -> torch.Tensor:
    """Concatenate `x` from every process along dim 0, keeping the gradient to every slice."""
    return _Gather.apply(x) if world_size() > 1 else x


class _AllReduceSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum of `x` over processes, differentiable (see the module docstring)."""
    return _AllReduceSum.apply(x) if world_size() > 1 else x


@torch.no_grad()
def reduce_no_grad(x: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """All-reduce (sum or max) of a copy of `x`, without gradient."""
    x = x.detach().clone()
    if world_size() > 1:
        dist.all_reduce(x, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
    return x


@torch.no_grad()
def gather_no_grad(x: torch.Tensor) -> torch.Tensor:
    if world_size() == 1:
        return x
    out = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(out, x.contiguous())
    return torch.cat(out)


@torch.no_grad()
def shuffle_bn_forward(encoder, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """MoCo's `_batch_shuffle_ddp` + key forward + `_batch_unshuffle_ddp` (moco/builder.py).

    The global batch of key images is permuted (permutation drawn on rank 0 and broadcast), each process
    encodes its slice of the shuffled batch, and the outputs are un-shuffled back to this process's own
    rows, so BatchNorm statistics of the key encoder never come from the query's own samples. In a single
    process this only permutes; use `SplitBatchNorm` (modules/heads.py) to simulate several GPUs there."""
    W, B = world_size(), len(x)
    x_all = gather_no_grad(x)
    perm = torch.randperm(len(x_all), generator=generator).to(x.device)
    if W > 1:
        dist.broadcast(perm, src=0)
    k = encoder(x_all[perm[rank() * B:(rank() + 1) * B]])
    k_all = gather_no_grad(k)
    return k_all[perm.argsort()[rank() * B:(rank() + 1) * B]]


def fp32(x: torch.Tensor) -> torch.Tensor:
    """`x` in at least fp32: half precision is upcast, a float64 run (the step-parity fixtures) stays float64."""
    return x if x.dtype == torch.float64 else x.float()


def global_batch_norm(z: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Affine-free BatchNorm1d in training mode over the global batch (SyncBatchNorm of Barlow Twins'
    `bn`), differentiable, on any device: mean and biased variance from sums over every process."""
    z = fp32(z)
    n = len(z) * world_size()  # every process holds an equal share of the global batch
    mean = all_reduce_sum(z.sum(0)) / n
    var = all_reduce_sum(((z - mean) ** 2).sum(0)) / n
    return (z - mean) / torch.sqrt(var + eps)
