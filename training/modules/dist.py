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

import math

import torch
import torch.distributed as dist
import torch.nn as nn


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


def _global_moments(x: torch.Tensor, dims: list[int]) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Mean and biased variance of `x` over `dims` and over every process's batch, differentiable (two
    passes: the variance is a sum of squared deviations from the global mean), and the global count
    (every process holds an equal share of the global batch: the trainer's slices)."""
    n = x.numel() // math.prod(x.shape[d] for d in range(x.dim()) if d not in dims) * world_size()
    mean = all_reduce_sum(x.sum(dims, keepdim=True)) / n
    var = all_reduce_sum(((x - mean) ** 2).sum(dims, keepdim=True)) / n
    return mean, var, n


def global_batch_norm(z: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Affine-free BatchNorm1d in training mode over the global batch (SyncBatchNorm of Barlow Twins'
    `bn`), differentiable, on any device: mean and biased variance from sums over every process."""
    z = fp32(z)
    mean, var, _ = _global_moments(z, [0])
    return (z - mean) / torch.sqrt(var + eps)


class AnyRankBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Base of the trainer's BatchNorm variants: any input of shape (N, C, ...), and nn.BatchNorm's
    running-statistics factor for the forward being counted."""

    def _check_input_dim(self, x):
        if x.dim() < 2:
            raise ValueError(f"expected a 2D or higher input (N, C, ...), got {x.dim()}D")

    def _count_batch(self) -> float:
        """Count this batch; the factor of its statistics in the running ones (momentum, or a cumulative
        average when momentum is None)."""
        self.num_batches_tracked.add_(1)
        return 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum


def replace_batchnorm(module: nn.Module, make, skip: type) -> nn.Module:
    """Replace every BatchNorm of `module` that is not a `skip` by `make(bn)`, which shares its parameters
    and buffers (the same tensors, `requires_grad` included, so frozen momentum copies stay frozen; the
    state-dict keys do not change) and its train / eval mode."""
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, skip):
        new = make(module)
        for name in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
            setattr(new, name, getattr(module, name))
        return new.train(module.training)
    for name, child in module.named_children():
        setattr(module, name, replace_batchnorm(child, make, skip))
    return module


class GlobalBatchNorm(AnyRankBatchNorm):
    """BatchNorm over the global batch on any backend (gloo / CPU included): `SyncBatchNorm` without
    its CUDA kernels. In training mode the batch mean and biased variance are all-reduced over every
    process, with the gradient through the all-reduce, and the running statistics take nn.BatchNorm's
    update (momentum, or a cumulative average when momentum is None; the unbiased variance of the global
    batch), so every process holds the same buffers. Evaluation mode, or a single process, is plain BN."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or world_size() == 1:
            return super().forward(x)
        self._check_input_dim(x)
        mean, var, n = _global_moments(x, [d for d in range(x.dim()) if d != 1])
        if self.track_running_stats:
            with torch.no_grad():
                f = self._count_batch()
                self.running_mean.mul_(1 - f).add_(mean.flatten().to(self.running_mean.dtype), alpha=f)
                unbiased = var.flatten() * (n / max(n - 1, 1))
                self.running_var.mul_(1 - f).add_(unbiased.to(self.running_var.dtype), alpha=f)
        shape = [1, -1] + [1] * (x.dim() - 2)
        out = (x - mean) * torch.rsqrt(var + self.eps)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Every BatchNorm of `module` normalised over the global batch: torch's SyncBatchNorm on CUDA,
    GlobalBatchNorm elsewhere (`replace_batchnorm`: the same parameters and buffers)."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return replace_batchnorm(module, lambda bn: GlobalBatchNorm(bn.num_features, bn.eps, bn.momentum, bn.affine,
                                                                bn.track_running_stats), GlobalBatchNorm)


@torch.no_grad()
def average_bn_statistics(module: nn.Module) -> None:
    """Average every BatchNorm's running mean and variance over the processes (one all-reduce). With BN
    per process (no sync_bn) each process would keep the statistics of its own slices; their mean is
    what one process holding all slices as `bn_splits` groups keeps (SplitBatchNorm), so the exported
    statistics do not depend on the number of processes. A no-op for one process."""
    W = world_size()
    if W == 1:
        return
    buffers = [b for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
               and m.track_running_stats for b in (m.running_mean, m.running_var)]
    if not buffers:
        return
    flat = torch.cat([b.flatten().double() for b in buffers])
    dist.all_reduce(flat)
    flat /= W
    for b, v in zip(buffers, flat.split([b.numel() for b in buffers])):
        b.copy_(v.view_as(b))
