"""SwAV — Caron, Misra, Mairal, Goyal, Bojanowski, Joulin, "Unsupervised Learning of Visual Features by
Contrasting Cluster Assignments", NeurIPS 2020. Official code: facebookresearch/swav (main_swav.py,
src/resnet50.py).

Algorithm 1 of the paper, line by line:
    C = normalize(C, dim=1, p=2)                  -> prototypes L2-normalised after every step (and at start)
    x = aug(X)                                    -> 2 global + N small crops (batch["views"], crop-major)
    z = model(x); z = normalize(z, dim=1)         -> projector(backbone) per resolution group, L2-normalised
    scores = mm(z, C)                             -> `prototypes`, a bias-free Linear(dim, K)
    with no_grad: q_t, q_s = sinkhorn(scores_t), sinkhorn(scores_s)   -> modules/sinkhorn.py, only for
                                                     `crops_for_assign` (the 2 global crops), fp32,
                                                     marginals summed over processes
    p = softmax(scores / tau)
    loss = - 0.5 mean(q_t log p_s + q_s log p_t)  -> losses.swapped_prediction: every assignment crop is
                                                     predicted from every other crop, small ones included
Prototypes are frozen (gradient cancelled) for the first `freeze_prototypes_epochs` epoch(s)
(`freeze_prototypes_niters`). Optional queue (`queue_length`, from epoch `epoch_queue_starts`): past
embeddings of the assignment crops, only used to enlarge the Sinkhorn problem once full; per process,
queue_length / W rows, updated once per optimizer step. apex LARC (`--optimizer larc`, modules/optim.py; no
exclusions, wd 1e-6 on all); the warmup from 0.3 by np.linspace (`warmup_style: linspace`).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..modules.dist import fp32, world_size
from ..modules.heads import MLPHead
from ..modules.losses import swapped_prediction
from ..modules.multicrop import multicrop_forward
from ..modules.optim import cancel_gradients, split_decay
from ..modules.sinkhorn import sinkhorn_knopp
from .official import OfficialLayout, linear_out_dims, load_official, single_layer_keys


def clustering_projector(in_dim: int, hidden_mlp: int, dim: int) -> nn.Module:
    """SwAV / DeepCluster-v2 projection head (src/resnet50.py): Linear-BN-ReLU-Linear, or one Linear
    with `hidden_mlp = 0`."""
    return MLPHead(in_dim, [hidden_mlp] if hidden_mlp else [], dim, bn=True, hidden_bias=True)


def clustering_hparams(ckpt) -> dict:
    """hidden_mlp / dim / nmb_prototypes of SwAV's and DeepCluster-v2's official heads."""
    projector = linear_out_dims(ckpt.online.heads["projection_head"])
    prototypes = linear_out_dims(ckpt.online.heads["prototypes"])
    return {"hidden_mlp": projector[0] if len(projector) > 1 else 0, "dim": projector[-1],
            "nmb_prototypes": prototypes[0] if len(prototypes) == 1 else prototypes}


OFFICIAL = OfficialLayout(heads={"projection_head": "projector", "prototypes": "prototypes"},
                          hparams=clustering_hparams, keys={"projection_head": single_layer_keys})


class SwAV(nn.Module):
    def __init__(self, backbone: nn.Module, info, tau: float = 0.1, eps: float = 0.05, sinkhorn_iters: int = 3,
                 dim: int = 128, hidden_mlp: int = 2048, nmb_prototypes: int = 3000,
                 crops_for_assign: tuple = (0, 1), freeze_prototypes_epochs: float = 1.0,
                 queue_length: int = 0, epoch_queue_starts: int = 15):
        super().__init__()
        self.backbone, self.tau, self.eps, self.sinkhorn_iters = backbone, tau, eps, sinkhorn_iters
        self.crops_for_assign = tuple(crops_for_assign)
        self.steps_per_epoch = info.steps_per_epoch
        self.freeze_steps = int(round(freeze_prototypes_epochs * info.steps_per_epoch))
        self.queue_start_step = epoch_queue_starts * info.steps_per_epoch
        self.projector = clustering_projector(backbone.num_features, hidden_mlp, dim)
        self.prototypes = nn.Linear(dim, nmb_prototypes, bias=False)
        self.normalize_prototypes()
        queue_length -= queue_length % info.global_batch  # main_swav.py: a multiple of the global batch
        if queue_length > 0:  # this process's share, as main_swav.py's queue_length // world_size
            self.register_buffer("queue", torch.zeros(len(self.crops_for_assign), queue_length // world_size(), dim))
        else:
            self.queue = None
        self._pending: list[torch.Tensor] = []

    @torch.no_grad()
    def normalize_prototypes(self) -> None:
        self.prototypes.weight.copy_(F.normalize(self.prototypes.weight, dim=1))

    def forward(self, batch: dict, step: int):
        views = batch["views"]
        B = len(views[0])
        z = F.normalize(self.projector(multicrop_forward(self.backbone, views)), dim=1)
        scores = fp32(self.prototypes(z)).split([len(v) for v in views])
        use_queue = self.queue is not None and bool((self.queue[:, -1] != 0).any())  # its oldest row written
        codes = {}
        for i, s in enumerate(self.crops_for_assign):
            out = scores[s].detach()
            if use_queue:
                out = torch.cat((self.queue[i] @ fp32(self.prototypes.weight.detach()).T, out))
            codes[s] = sinkhorn_knopp(out, self.eps, self.sinkhorn_iters)[-B:]
        if self.queue is not None and step >= self.queue_start_step:
            self._pending.append(torch.stack([fp32(z[s * B:(s + 1) * B].detach()) for s in self.crops_for_assign]))
        loss = swapped_prediction(list(scores), codes, self.tau)
        return loss, {"queue_used": float(use_queue)}

    def before_optimizer_step(self, step: int) -> None:
        if step < self.freeze_steps:
            cancel_gradients(self.prototypes.parameters())

    @torch.no_grad()
    def after_optimizer_step(self, step: int) -> None:
        self.normalize_prototypes()
        for emb in self._pending:  # newest first, as main_swav.py shifts the queue by the batch
            n = emb.shape[1]
            self.queue[:, n:] = self.queue[:, :-n].clone()
            self.queue[:, :n] = emb
        self._pending = []

    def load_pretrained(self, ckpt) -> list[str]:
        loaded = load_official(self, ckpt, OFFICIAL)
        self.normalize_prototypes()  # as main_swav.py does before every forward (the file's follow an update)
        return loaded

    def param_groups(self) -> list[dict]:
        return split_decay(self, exclude_bias_and_norm=False)  # LARC over every parameter
