"""CMC — Tian, Krishnan, Isola, "Contrastive Multiview Coding", ECCV 2020. Official code: HobbitLong/CMC
(train_CMC.py, NCE/NCEAverage.py, NCE/NCECriterion.py, models/resnet.py).

    one crop x in Lab (or YDbDr), split into views x_1 .. x_V (L | ab by default)
    v_i = norm(fc_i(f_i(x_i)))                      one encoder and one fc -> 128 per view (CMCResNet branches)
    L(V_a -> V_b): v_a scored against the memory bank of view b (NCEAverage: out_l = bmm(memory_ab, l)),
        its own entry the positive and K noise entries (one draw shared by every pair) the negatives, with
        NCE (P_m = exp(s / tau) / Z_ab, Z_ab fixed from the first batch; NCECriterion) or, with
        `loss: softmax`, cross-entropy over the 1 + K scores (NCESoftmaxLoss); K = 0 with softmax is the
        whole bank
    two views: L = L(L -> ab) + L(ab -> L); more views (the paper's §3.3): `graph: core` sums the pairs
        (core view 1, view j) both ways, `graph: full` every ordered pair
    banks: one per view, v_i <- norm(m v_i + (1 - m) f_i), m = 0.5, from features gathered over processes,
        after the step (the official forward writes them after the scores are read: the same values).

The encoder is a `clzoo.models.CMCResNet` (`--model resnet18` builds `cmc_resnet18`, `--init-from
cmc_resnet50half.pycontrast` continues from the official weights); its `split` model argument sets the views.
The exported encoder concatenates the views' features, as the official linear evaluation does."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..data.rng import generator
from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD
from ..modules.dist import fp32, gather_no_grad
from ..modules.heads import MLPHead
from ..modules.losses import nce_binary, nce_normaliser
from ..modules.memory_bank import MemoryBank
from ..modules.optim import split_decay

RESNETS = ("resnet18", "resnet34", "resnet50")


def view_pairs(n_views: int, graph: str) -> list[tuple[int, int]]:
    """(anchor view, bank view) of every term: `core` pairs view 0 with each other view both ways, `full`
    every ordered pair (the same two terms for two views)."""
    if graph == "core":
        return [p for j in range(1, n_views) for p in ((0, j), (j, 0))]
    return [(a, b) for a in range(n_views) for b in range(n_views) if a != b]


class CMC(nn.Module):
    def __init__(self, backbone: nn.Module, info, tau: float = 0.07, K: int = 4096, m: float = 0.5,
                 dim: int = 128, loss: str = "nce", graph: str = "core", z_momentum: float = 0.0):
        super().__init__()
        if not hasattr(backbone, "forward_branches"):
            raise ValueError(f"cmc needs a CMC encoder (one ResNet per view): --model {' / '.join(RESNETS)} or a "
                             f"cmc_* entry, not {type(backbone).__name__}")
        if loss not in ("nce", "softmax"):
            raise ValueError(f"cmc loss must be 'nce' or 'softmax', got {loss!r}")
        if loss == "nce" and K < 1:
            raise ValueError("cmc: NCE needs K >= 1 noise samples (K = 0 is the full softmax)")
        if graph not in ("core", "full"):
            raise ValueError(f"cmc graph must be 'core' or 'full', got {graph!r}")
        self.backbone, self.tau, self.K, self.m, self.loss, self.z_momentum = backbone, tau, K, m, loss, z_momentum
        self.seed = info.seed
        n = len(backbone.branches)
        self.pairs = view_pairs(n, graph)
        self.projectors = nn.ModuleList(MLPHead(b.num_features, [], dim) for b in backbone.branches)
        self.banks = nn.ModuleList(MemoryBank(info.num_samples, dim, generator=generator(info.seed, 1, v))
                                   for v in range(n))
        self.register_buffer("Z", torch.full((n, n), -1.0))  # Z[a, b]: anchor view a against bank b; < 0: unset
        self._pending: list[tuple[torch.Tensor, list[torch.Tensor]]] = []
        self._z_estimates: list[torch.Tensor] = []

    @staticmethod
    def encoder_spec(name: str, model_args: dict, image_size: int = 224) -> tuple[str, dict]:
        """The trainer's encoder for `--model name`: a plain ResNet becomes the CMC encoder of that depth (the
        official models/resnet.py keeps every BN gamma at 1: no zero-init of the last BN), and the encoder
        takes the trainer's ImageNet-normalised views."""
        if name in RESNETS:
            name = f"cmc_{name}"
            model_args.setdefault("zero_init_last", False)
        model_args.setdefault("input_mean", IMAGENET_MEAN)
        model_args.setdefault("input_std", IMAGENET_STD)
        return name, model_args

    def forward(self, batch: dict, step: int):
        views, index = batch["views"], batch["index"]
        x = views[0] if len(views) == 1 else views  # one crop per view: view i's channels from crop i
        v = [fp32(F.normalize(proj(f), dim=1)) for proj, f in zip(self.projectors, self.backbone.forward_branches(x))]
        index = index.to(v[0].device)
        noise = self.banks[0].sample(index, self.K, self.seed, 2, step, len(self._pending)) if self.K else None
        self._pending.append((gather_no_grad(index), [gather_no_grad(f.detach()) for f in v]))
        total, logs, estimates = 0.0, {}, []
        for a, b in self.pairs:
            bank = self.banks[b]
            if self.loss == "softmax":
                term = bank.softmax_loss(v[a], index, self.tau, noise)
            else:
                s = bank.scores(v[a], index, noise)
                Z, estimate = nce_normaliser(self.Z[a, b], s, self.tau, bank.size, estimate=self.z_momentum > 0)
                if estimate is not None:
                    estimates.append(estimate)
                term = nce_binary(s[:, 0], s[:, 1:], self.tau, bank.size, Z)
            logs[f"loss_{a}{b}"] = term.detach()
            total = total + term
        if estimates:
            self._z_estimates.append(torch.stack(estimates))
        return total, logs

    @torch.no_grad()
    def after_optimizer_step(self, step: int) -> None:
        for index, features in self._pending:
            for bank, f in zip(self.banks, features):
                bank.update(index, f, self.m)
        if self.z_momentum > 0 and self._z_estimates:
            mean = torch.stack(self._z_estimates).mean(0)
            for (a, b), z in zip(self.pairs, mean):
                self.Z[a, b] = self.Z[a, b] * self.z_momentum + z * (1 - self.z_momentum)
        self._pending, self._z_estimates = [], []

    def param_groups(self) -> list[dict]:
        return split_decay(self, exclude_bias_and_norm=False)  # train_CMC.py: SGD over model.parameters()
