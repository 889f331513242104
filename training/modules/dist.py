"""Distributed helpers that also work in a single process (methods.md §1.6, §4).

* `gather(x)`: all-gather **with gradient** (SimCLR / InvaSpread negatives). The backward sums the
  gradients every process sends to a slice and returns this process's slice (solo-learn / lightly
  `GatherLayer`). With DDP averaging gradients over W processes and each process's loss being the mean
  over its own anchors, the result equals the gradient of the single-process loss on the global batch
  (tests/training/test_distributed.py checks this with 2 gloo processes).
* `gather_no_grad(x)`: MoCo's `concat_all_gather` (keys, queue and memory-bank updates).
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
