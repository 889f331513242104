"""SeLa-v2 — released with SwAV (Caron et al., NeurIPS 2020, appendix): SeLa (Asano, Rupprecht, Vedaldi,
"Self-labelling via simultaneous clustering and representation learning", ICLR 2020) with SwAV's improvements
(MLP projection head, L2-normalised prototypes, temperature, multi-crop, LARS, cosine schedule). The swav
repository releases its weights (`selav2_resnet50`) but no training code; this follows the two papers.

    memory: the L2-normalised embeddings of the assignment crops (2 global crops) of every image (as
            DeepCluster-v2, deepclusterv2.py, which this subclasses)
    at each epoch start: for each prototype head h (3 x 3000): SeLa's self-labelling, Sinkhorn-Knopp over
            the WHOLE dataset's scores memory_h . C_h (N x K: every image and every cluster in the
            equipartition), each image's label the argmax of its code
    loss = mean_h CE(C_h z / tau, label_h[index]) over every crop (multi-crop)
    the prototypes C_h are learned (DeepCluster-v2 replaces them by k-means centroids), L2-normalised after
            every step as in SwAV, frozen for `freeze_prototypes_epochs`
SwAV computes its codes per batch (online); SeLa-v2 computes hard labels for the whole dataset offline, once
per epoch (SeLa recomputes them on a schedule; here every epoch, as the swav repo's DeepCluster-v2 does its
k-means). The first epoch fills the memory (no update), as in deepclusterv2.py. eps and the Sinkhorn
iterations are SwAV's (0.05, 3); SeLa's lambda = 25 is eps = 0.04.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..modules.sinkhorn import sinkhorn_knopp
from .deepclusterv2 import DeepClusterV2
from .official import OfficialLayout, load_official, single_layer_keys
from .swav import clustering_hparams


def prototype_list_keys(sd: dict) -> dict:
    """MultiPrototypes' `prototypes{i}.weight` (or a single SwAV `weight`) as our ModuleList's `{i}.weight`."""
    if set(sd) == {"weight"}:
        return {"0.weight": sd["weight"]}
    return {k.removeprefix("prototypes"): v for k, v in sd.items()}


OFFICIAL = OfficialLayout(heads={"projection_head": "projector", "prototypes": "prototypes"},
                          hparams=clustering_hparams,
                          keys={"projection_head": single_layer_keys, "prototypes": prototype_list_keys})


class SeLaV2(DeepClusterV2):
    def __init__(self, backbone: nn.Module, info, tau: float = 0.1, dim: int = 128, hidden_mlp: int = 2048,
                 nmb_prototypes: tuple = (3000, 3000, 3000), crops_for_assign: tuple = (0, 1), eps: float = 0.05,
                 sinkhorn_iters: int = 3, freeze_prototypes_epochs: float = 1.0):
        super().__init__(backbone, info, tau=tau, dim=dim, hidden_mlp=hidden_mlp, nmb_prototypes=nmb_prototypes,
                         crops_for_assign=crops_for_assign,
                         freeze_prototypes_steps=int(round(freeze_prototypes_epochs * info.steps_per_epoch)))
        self.eps, self.sinkhorn_iters = eps, sinkhorn_iters
        self.normalize_prototypes()

    @torch.no_grad()
    def normalize_prototypes(self) -> None:
        for prototypes in self.prototypes:
            prototypes.weight.copy_(F.normalize(prototypes.weight, dim=1))

    @torch.no_grad()
    def after_optimizer_step(self, step: int) -> None:
        self.normalize_prototypes()
        super().after_optimizer_step(step)  # the memory, and at an epoch's end the labels for the next

    @torch.no_grad()
    def cluster(self, epoch: int) -> None:
        """Self-labelling for `epoch`: Sinkhorn-Knopp over every image in memory, per head (identical on every
        process: each holds the whole memory)."""
        rows = self.filled.nonzero().squeeze(1)
        self.assignments.fill_(-100)
        for h, prototypes in enumerate(self.prototypes):
            scores = self.memory[h % len(self.crops_for_assign), rows] @ prototypes.weight.T
            codes = sinkhorn_knopp(scores, self.eps, self.sinkhorn_iters, distributed=False)
            self.assignments[h, rows] = codes.argmax(1)

    def load_pretrained(self, ckpt) -> list[str]:
        loaded = load_official(self, ckpt, OFFICIAL)
        self.normalize_prototypes()
        return loaded
