"""InfoMin — Tian, Sun, Poole, Krishnan, Schmid, Isola, "What Makes for Good Views for Contrastive
Learning?", NeurIPS 2020. Official code: HobbitLong/PyContrast (`--method InfoMin`:
learning/contrast_trainer.py `_train_moco`, memory/mem_moco.py `RGBMoCo`, networks/util.py `JigsawHead`).

MoCo v2 (queue, momentum encoder, shuffle-BN, MLP head) plus a jigsaw branch on the query side:
    q     = norm(mlp(f_q(x_1)))                          image query
    q_jig = norm(fc2(concat_shuffled(mlp(f_q(patch_p))))) jigsaw query (PyContrast JigsawHead, 'mlp')
    k     = norm(mlp_k(f_k(x_2)))                        key, momentum encoder with shuffle-BN
    L = (1 - beta) CE([q.k, q.queue] / tau, 0) + beta CE([q_jig.k, q_jig.queue] / tau, 0), beta = 0.5
Both queries use the same key and queue; the key is enqueued once per optimizer step; the momentum
update (alpha = 0.999) follows the step. Views: the InfoMin "D" preset (RandAugment) for x_1, x_2, and
plain jigsaw patches (no per-patch colour augmentation, as in PyContrast).
"""

from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F

from ..modules.heads import JigsawHead
from ..modules.dist import gather_no_grad, shuffle_bn_forward
from ..modules.losses import info_nce
from .mocov1 import MoCo


class InfoMin(MoCo):
    """MoCo v2 (the queue, momentum encoder, shuffle-BN and `after_optimizer_step` are MoCo's) plus the
    jigsaw query branch."""

    def __init__(self, backbone: nn.Module, info=None, tau: float = 0.15, K: int = 65536, m: float = 0.999,
                 beta: float = 0.5, dim: int = 128):
        super().__init__(backbone, info, tau=tau, K=K, m=m, dim=dim, mlp=True)
        self.beta = beta
        D = backbone.num_features
        self.jigsaw_head = JigsawHead(D, dim, hidden_dims=[D])

    def forward(self, batch: dict, step: int):
        (x1, x2), patches = batch["views"][:2], batch["jigsaw"]
        q = F.normalize(self.projector(self.backbone(x1)), dim=1)
        q_jig = F.normalize(self.jigsaw_head(self.backbone(patches.flatten(0, 1))), dim=1)
        k = shuffle_bn_forward(self.key_encoder, x2)
        queue = self.queue.negatives()
        loss_image, loss_jigsaw = info_nce(q, k, queue, self.tau), info_nce(q_jig, k, queue, self.tau)
        self._pending.append(gather_no_grad(k))
        loss = (1 - self.beta) * loss_image + self.beta * loss_jigsaw
        return loss, {"loss_image": loss_image.detach(), "loss_jigsaw": loss_jigsaw.detach()}
