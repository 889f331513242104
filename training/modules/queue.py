"""MoCo's queue of negative keys (moco/builder.py `_dequeue_and_enqueue`), as a module buffer so it is
checkpointed with the method. Keys are enqueued after the loss is computed, gathered from every
process, once per optimizer step."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class Queue(nn.Module):
    def __init__(self, size: int, dim: int):
        super().__init__()
        self.register_buffer("queue", F.normalize(torch.randn(size, dim), dim=1))  # (K, D), unit rows
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    @property
    def size(self) -> int:
        return self.queue.shape[0]

    def negatives(self) -> torch.Tensor:
        return self.queue.clone().detach()

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Replace the oldest len(keys) entries (FIFO). MoCo asserts K % batch == 0; here writes wrap
        around, which is the same when it holds."""
        n, K = len(keys), self.size
        if n > K:
            keys, n = keys[-K:], K
        idx = (self.ptr + torch.arange(n, device=keys.device)) % K
        self.queue[idx] = keys.to(self.queue.dtype)
        self.ptr.fill_(int((self.ptr + n) % K))
