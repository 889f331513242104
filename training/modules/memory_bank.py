"""InstDisc's memory bank (lemniscate lib/NCEAverage.py): one L2-normalised vector per training image,
updated with momentum, v_i <- norm(m v_i + (1 - m) f_i), from features gathered over every process
(methods.md §4.3), once per optimizer step."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..data.rng import randint
from .dist import fp32


class MemoryBank(nn.Module):
    def __init__(self, size: int, dim: int, generator: torch.Generator | None = None):
        super().__init__()
        stdv = 1.0 / math.sqrt(dim / 3)  # lemniscate: U(-stdv, stdv), stdv = 1 / sqrt(dim / 3)
        self.register_buffer("bank", torch.rand(size, dim, generator=generator).mul_(2 * stdv).add_(-stdv))

    @property
    def size(self) -> int:
        return self.bank.shape[0]

    def __getitem__(self, index: torch.Tensor) -> torch.Tensor:
        return self.bank[index]  # advanced indexing copies: later bank updates do not reach the result

    def similarities(self, v: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """(B, J) dot products v_b . bank[idx[b, j]], differentiable in v. When the bank is small next to the
        B x J rows a gather would copy (J = 1 + K = 4097 rows per sample against a 10 000-image bank), one
        product with the whole bank and a gather of the scores is the same number at a fraction of the
        memory traffic; on ImageNet (1.28M rows) the gather of B x J rows is the cheaper one."""
        if self.size <= 8 * idx.shape[1]:
            return torch.gather(self._all_similarities(v), 1, idx)
        return torch.bmm(self[idx], fp32(v)[:, :, None]).squeeze(2)

    def scores(self, v: torch.Tensor, index: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """(B, 1 + K) similarities of v to its own entry first, then to its K noise entries (lemniscate
        overwrites slot 0 of the sampled indices with the positive)."""
        return self.similarities(v, torch.cat((index[:, None], noise), 1))

    def softmax_loss(self, v: torch.Tensor, index: torch.Tensor, tau: float,
                     noise: torch.Tensor | None = None) -> torch.Tensor:
        """Cross-entropy of v against the bank, its own entry `index` the target: over that entry and the
        sampled `noise` entries (InfoNCE; VISSL's `loss_type: cross_entropy`), or, with `noise` None, over
        the whole bank (the exact non-parametric softmax of InstDisc's eq. 2, lemniscate's `--nce-k 0`)."""
        if noise is None:
            return F.cross_entropy(self._all_similarities(v) / tau, index)
        s = self.scores(v, index, noise)
        return F.cross_entropy(s / tau, torch.zeros(len(s), dtype=torch.long, device=s.device))

    def _all_similarities(self, v: torch.Tensor) -> torch.Tensor:
        # a copy of the bank: the momentum update writes it in place after the step
        return fp32(v) @ self.bank.T.clone()

    def sample(self, index: torch.Tensor, K: int, *keys) -> torch.Tensor:
        """(len(index), K) noise indices, uniform with replacement (lemniscate's AliasMethod over a uniform
        distribution), drawn per sample from (keys, sample index): the same whatever the process split."""
        return randint(index, K, self.size, *keys).to(self.bank.device)

    @torch.no_grad()
    def update(self, index: torch.Tensor, features: torch.Tensor, m: float) -> None:
        """Momentum update of rows `index` (a row listed twice takes its last write, like index_copy_)."""
        mixed = self.bank[index] * m + features.detach().to(self.bank.dtype) * (1 - m)
        self.bank.index_copy_(0, index, F.normalize(mixed, dim=1))
