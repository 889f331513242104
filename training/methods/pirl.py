"""PIRL — Misra, van der Maaten, "Self-Supervised Learning of Pretext-Invariant Representations",
CVPR 2020. No standalone official repository; the reference is VISSL
(configs/config/pretrain/pirl/pirl_jigsaw_4node_resnet50.yaml, NCELossWithMemory).

    f(v_I)   = Linear(D, 128)(pool(trunk(I)))                       image head
    g(v_I^t) = Linear(9*128, 128)(concat_shuffled(Linear(D, 128)(pool(trunk(patch_p)))))  jigsaw head
    h(a, b)  = exp(s(a, b) / tau) / (exp(s(a, b) / tau) + N / |D|)  the NCE posterior (eq. 4),
               with the normaliser Z estimated from the first batch as in VISSL / lemniscate
    L = lambd * L_NCE(m_I, g(v_I^t)) + (1 - lambd) * L_NCE(m_I, f(v_I))     (eq. 5), lambd = 0.5
    m_I <- norm(m m_I + (1 - m) f(v_I)), m = 0.5, after the step          (memory bank, eq. 6)
Negatives: K = 32000 memory entries drawn uniformly, shared by both terms. `loss: softmax` replaces each
NCE term by the cross-entropy over the same entries (VISSL NCELossWithMemory's `loss_type: cross_entropy`),
or with `K: 0` over the whole bank (PyContrast's `--method PIRL` is `loss: softmax` with
`decay_bias_and_norm: true`: tests/training/test_step_parity_pirl.py). The patches come from
data/transforms.Jigsaw (3x3 grid, colour augmentation per patch, shuffled order).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..data.rng import generator
from ..modules.dist import fp32, gather_no_grad
from ..modules.heads import JigsawHead, MLPHead
from ..modules.losses import nce_binary, nce_normaliser
from ..modules.memory_bank import MemoryBank
from ..modules.optim import split_decay


class PIRL(nn.Module):
    def __init__(self, backbone: nn.Module, info, tau: float = 0.07, K: int = 32000, m: float = 0.5,
                 lambd: float = 0.5, dim: int = 128, loss: str = "nce", decay_bias_and_norm: bool = False):
        super().__init__()
        if loss not in ("nce", "softmax"):
            raise ValueError(f"pirl loss must be 'nce' or 'softmax', got {loss!r}")
        if loss == "nce" and K < 1:
            raise ValueError("pirl: NCE needs K >= 1 noise samples (K = 0 is the softmax over the whole bank)")
        self.backbone, self.tau, self.K, self.m, self.lambd, self.seed = backbone, tau, K, m, lambd, info.seed
        self.loss, self.decay_bias_and_norm = loss, decay_bias_and_norm
        D = backbone.num_features
        self.image_head = MLPHead(D, [], dim)
        self.jigsaw_head = JigsawHead(D, dim)
        self.bank = MemoryBank(info.num_samples, dim, generator=generator(info.seed, 1))
        self.register_buffer("Z", torch.tensor([-1.0, -1.0]))  # (jigsaw, image), < 0: not estimated yet
        self._pending: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, batch: dict, step: int):
        x, patches, index = batch["views"][0], batch["jigsaw"], batch["index"]
        f = fp32(F.normalize(self.image_head(self.backbone(x)), dim=1))
        g = fp32(F.normalize(self.jigsaw_head(self.backbone(patches.flatten(0, 1))), dim=1))
        index = index.to(f.device)
        noise = self.bank.sample(index, self.K, self.seed, 2, step, len(self._pending)) if self.K else None
        losses = []
        for t, emb in enumerate((g, f)):
            if self.loss == "softmax":
                losses.append(self.bank.softmax_loss(emb, index, self.tau, noise))
                continue
            s = self.bank.scores(emb, index, noise)  # m_I first, then the negatives
            Z, _ = nce_normaliser(self.Z[t], s, self.tau, self.bank.size)
            losses.append(nce_binary(s[:, 0], s[:, 1:], self.tau, self.bank.size, Z))
        self._pending.append((gather_no_grad(index), gather_no_grad(f.detach())))
        loss = self.lambd * losses[0] + (1 - self.lambd) * losses[1]
        return loss, {"loss_jigsaw": losses[0].detach(), "loss_image": losses[1].detach()}

    @torch.no_grad()
    def after_optimizer_step(self, step: int) -> None:
        for index, f in self._pending:
            self.bank.update(index, f, self.m)
        self._pending = []

    def param_groups(self) -> list[dict]:
        # VISSL: no weight decay on BN and biases; PyContrast's PIRL (`decay_bias_and_norm`) decays every parameter
        return split_decay(self, exclude_bias_and_norm=not self.decay_bias_and_norm)
