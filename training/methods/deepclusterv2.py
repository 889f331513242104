"""DeepCluster-v2 — as released with SwAV (Caron et al., NeurIPS 2020, appendix). Official code:
facebookresearch/swav (main_deepclusterv2.py).

    memory: the L2-normalised embeddings of the assignment crops (2 global crops) of every image
    at each epoch start: for each prototype head h (3 x 3000): spherical k-means (10 iterations) on the
                         memory of crop h % 2, centroids initialised from random memory rows; the head's
                         prototypes := the centroids; every image gets its cluster as target
    loss = mean_h CE(prototypes_h(z) / tau, target_h[index]) over every crop (multi-crop, as SwAV)
    after each step: the memory rows of the batch := its embeddings (detached)
The official code fills the memory in one no-gradient pass before training (`init_memory`). Here the
first epoch is that pass: it fills the memory with the same train-mode forward while every gradient is
cancelled (no update), and k-means runs at the end of each epoch for the next one. The memory is kept for
the whole dataset on every process (filled from the gathered indices and embeddings), so k-means needs no
communication and gives the same clusters on every process. The prototypes stay frozen
(`freeze_prototypes_niters` 300000 in the released recipe, more than the whole run) unless
`freeze_prototypes_steps` is set. Projector, multi-crop and LARC as in SwAV (swav.py).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..data.rng import generator
from ..modules.dist import fp32, gather_no_grad
from ..modules.kmeans import spherical_kmeans
from ..modules.multicrop import multicrop_forward
from ..modules.optim import cancel_gradients, split_decay
from .official import OfficialLayout, load_official, single_layer_keys
from .swav import clustering_hparams, clustering_projector

# The prototypes are loaded for completeness: k-means replaces them once the memory is filled, as
# main_deepclusterv2.py does at every epoch start. MultiPrototypes' `prototypes{i}` is our ModuleList's `{i}`.
OFFICIAL = OfficialLayout(heads={"projection_head": "projector", "prototypes": "prototypes"},
                          hparams=clustering_hparams,
                          keys={"projection_head": single_layer_keys,
                                "prototypes": lambda sd: {k.removeprefix("prototypes"): v for k, v in sd.items()}})


class DeepClusterV2(nn.Module):
    def __init__(self, backbone: nn.Module, info, tau: float = 0.1, dim: int = 128, hidden_mlp: int = 2048,
                 nmb_prototypes: tuple = (3000, 3000, 3000), crops_for_assign: tuple = (0, 1),
                 kmeans_iters: int = 10, freeze_prototypes_steps: int | None = None):
        super().__init__()
        self.backbone, self.tau, self.kmeans_iters = backbone, tau, kmeans_iters
        self.crops_for_assign = tuple(crops_for_assign)
        self.steps_per_epoch, self.seed = info.steps_per_epoch, info.seed
        self.freeze_steps = info.total_steps if freeze_prototypes_steps is None else freeze_prototypes_steps
        self.projector = clustering_projector(backbone.num_features, hidden_mlp, dim)
        self.prototypes = nn.ModuleList(nn.Linear(dim, K, bias=False) for K in nmb_prototypes)
        N = info.num_samples
        self.register_buffer("memory", torch.zeros(len(self.crops_for_assign), N, dim))
        self.register_buffer("filled", torch.zeros(N, dtype=torch.bool))
        self.register_buffer("assignments", torch.full((len(nmb_prototypes), N), -100, dtype=torch.long))
        self._pending: list[tuple[torch.Tensor, torch.Tensor]] = []

    @property
    def clustered(self) -> bool:
        return bool((self.assignments[0] >= 0).any())

    def forward(self, batch: dict, step: int):
        views, index = batch["views"], batch["index"].to(self.memory.device)
        B = len(views[0])
        z = F.normalize(self.projector(multicrop_forward(self.backbone, views)), dim=1)
        loss = 0.0
        for h, prototypes in enumerate(self.prototypes):
            scores = fp32(prototypes(z)) / self.tau
            targets = self.assignments[h][index].repeat(len(views))
            loss = loss + (F.cross_entropy(scores, targets, ignore_index=-100) if self.clustered
                           else scores.sum() * 0.0)  # epoch 0: only fills the memory
        zd = fp32(z.detach())
        self._pending.append((gather_no_grad(index),
                              torch.stack([gather_no_grad(zd[s * B:(s + 1) * B]) for s in self.crops_for_assign])))
        return loss / len(self.prototypes), {}

    def before_optimizer_step(self, step: int) -> None:
        if not self.clustered:  # the memory-filling epoch changes nothing
            cancel_gradients(self.parameters())
        elif step < self.freeze_steps:
            cancel_gradients(self.prototypes.parameters())

    @torch.no_grad()
    def after_optimizer_step(self, step: int) -> None:
        for index, emb in self._pending:
            self.memory[:, index] = emb
            self.filled[index] = True
        self._pending = []
        if (step + 1) % self.steps_per_epoch == 0:
            self.cluster((step + 1) // self.steps_per_epoch)

    @torch.no_grad()
    def cluster(self, epoch: int) -> None:
        """k-means for `epoch` on the memory of the images seen so far (identical on every process)."""
        rows = self.filled.nonzero().squeeze(1)
        self.assignments.fill_(-100)
        for h, prototypes in enumerate(self.prototypes):
            g = generator(self.seed, 3000, epoch, h)
            centroids, assign = spherical_kmeans(self.memory[h % len(self.crops_for_assign), rows],
                                                 prototypes.out_features, self.kmeans_iters, g)
            prototypes.weight.copy_(centroids)
            self.assignments[h, rows] = assign

    def load_pretrained(self, ckpt) -> list[str]:
        return load_official(self, ckpt, OFFICIAL)

    def param_groups(self) -> list[dict]:
        return split_decay(self, exclude_bias_and_norm=False)
