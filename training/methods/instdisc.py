"""InstDisc — Wu, Xiong, Yu, Lin, "Unsupervised Feature Learning via Non-Parametric Instance
Discrimination", CVPR 2018. Official code: zhirongw/lemniscate.pytorch (lib/NCEAverage.py,
lib/NCECriterion.py, lib/LinearAverage.py).

    v = norm(fc(f(x)))                               one view per image, fc -> 128
    P(i | v) = exp(v_i.v / tau) / sum_j exp(v_j.v / tau)   over the memory bank {v_j}     (eq. 2)
    approximated with NCE (eq. 3-6): K noise entries drawn uniformly, P_n = 1/n,
        P_m = exp(v_i.v / tau) / Z, Z estimated from the first batch (Monte Carlo, eq. 6);
    bank update v_i <- norm(m v_i + (1 - m) v) with m = 0.5 (the released code's replacement of the
        paper's proximal term, lemniscate#11), from features gathered over processes, after the step.
Options: `loss: softmax` is InfoNCE (CE over the positive and the same K sampled negatives); `K: 0` with
`loss: softmax` is the exact non-parametric softmax over the whole bank (`--nce-k 0`, LinearAverage);
`z_momentum > 0` replaces the one-shot Z by an EMA of the per-batch estimate (Kaiming He's suggestion,
HobbitLong/CMC#23).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..data.rng import generator
from ..modules.dist import fp32, gather_no_grad
from ..modules.heads import MLPHead
from ..modules.losses import nce_binary, nce_normaliser
from ..modules.memory_bank import MemoryBank
from ..modules.optim import split_decay


class InstDisc(nn.Module):
    def __init__(self, backbone: nn.Module, info, tau: float = 0.07, K: int = 4096, m: float = 0.5,
                 dim: int = 128, loss: str = "nce", z_momentum: float = 0.0):
        super().__init__()
        if loss not in ("nce", "softmax"):
            raise ValueError(f"instdisc loss must be 'nce' or 'softmax', got {loss!r}")
        if loss == "nce" and K < 1:
            raise ValueError("instdisc: NCE needs K >= 1 noise samples (K = 0 is the full softmax)")
        self.backbone, self.tau, self.K, self.m, self.loss, self.z_momentum = backbone, tau, K, m, loss, z_momentum
        self.seed = info.seed
        self.projector = MLPHead(backbone.num_features, [], dim)
        self.bank = MemoryBank(info.num_samples, dim, generator=generator(info.seed, 1))
        self.register_buffer("Z", torch.tensor(-1.0))  # < 0: not estimated yet
        self._pending: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._z_estimates: list[torch.Tensor] = []

    def forward(self, batch: dict, step: int):
        x, index = batch["views"][0], batch["index"]
        v = fp32(F.normalize(self.projector(self.backbone(x)), dim=1))
        index = index.to(v.device)
        noise = self.bank.sample(index, self.K, self.seed, 2, step, len(self._pending)) if self.K else None
        self._pending.append((gather_no_grad(index), gather_no_grad(v.detach())))
        if self.loss == "softmax":
            return self.bank.softmax_loss(v, index, self.tau, noise), {}
        s = self.bank.scores(v, index, noise)
        Z, estimate = nce_normaliser(self.Z, s, self.tau, self.bank.size, estimate=self.z_momentum > 0)
        if estimate is not None:
            self._z_estimates.append(estimate)
        return nce_binary(s[:, 0], s[:, 1:], self.tau, self.bank.size, Z), {"Z": Z}

    @torch.no_grad()
    def after_optimizer_step(self, step: int) -> None:
        for index, v in self._pending:
            self.bank.update(index, v, self.m)
        if self.z_momentum > 0 and self._z_estimates:
            self.Z.mul_(self.z_momentum).add_(torch.stack(self._z_estimates).mean() * (1 - self.z_momentum))
        self._pending, self._z_estimates = [], []

    def param_groups(self) -> list[dict]:
        return split_decay(self, exclude_bias_and_norm=False)  # lemniscate: SGD, weight decay on all
