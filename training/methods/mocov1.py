"""MoCo — He, Fan, Wu, Xie, Girshick, "Momentum Contrast for Unsupervised Visual Representation
Learning", CVPR 2020. Official code: facebookresearch/moco (moco/builder.py, main_moco.py).

Algorithm 1 of the paper, line by line:
    f_k.params = f_q.params                      -> momentum_copy at construction
    for x in loader:
        x_q, x_k = aug(x), aug(x)                 -> batch["views"] (InstDisc preset for v1)
        q = f_q.forward(x_q)                      -> projector(backbone(x_q)), L2-normalised
        k = f_k.forward(x_k); k = k.detach()      -> under no_grad, with shuffle-BN (modules/dist.py)
        l_pos = bmm(q, k); l_neg = mm(q, queue)   -> losses.info_nce: positive at index 0
        loss = CrossEntropyLoss(logits / t, 0)
        update(f_q.params)                        -> the optimizer step
        f_k.params = m * f_k.params + (1-m) * f_q.params   -> after_optimizer_step (MoCo does it right
                                                     before the next key forward: the same sequence)
        enqueue(queue, k); dequeue(queue)         -> after_optimizer_step, keys gathered from every process
The trainer's `--bn-splits S` simulates shuffle-BN in a single process (SplitBatchNorm, MoCo's CIFAR
colab): one process with S groups normalises as S processes do; with several processes the real shuffle
across processes is used.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..modules.dist import gather_no_grad, shuffle_bn_forward
from ..modules.heads import MLPHead
from ..modules.losses import info_nce
from ..modules.momentum import ema_update, momentum_copy
from ..modules.optim import split_decay
from ..modules.queue import Queue
from .official import OfficialLayout, linear_out_dims, load_buffer, load_official, single_layer_keys

# v1's fc is a bare Linear in the file; v2's the Sequential(Linear, ReLU, Linear) of main_moco.py --mlp
OFFICIAL = OfficialLayout(heads={"fc": "projector"}, keys={"fc": single_layer_keys},
                          hparams=lambda ckpt: {"dim": linear_out_dims(ckpt.online.heads["fc"])[-1]},
                          momentum={"momentum_backbone": "backbone", "momentum_projector": "projector"})


class MoCo(nn.Module):
    def __init__(self, backbone: nn.Module, info=None, tau: float = 0.07, K: int = 65536, m: float = 0.999,
                 dim: int = 128, mlp: bool = False):
        super().__init__()
        self.tau, self.m = tau, m
        self.backbone = backbone
        D = backbone.num_features
        # v1: fc -> dim; v2 (`--mlp`): Linear(D, D)-ReLU-Linear(D, dim), no BN (moco/builder.py)
        self.projector = MLPHead(D, [D] if mlp else [], dim)
        self.momentum_backbone = momentum_copy(self.backbone)
        self.momentum_projector = momentum_copy(self.projector)
        self.queue = Queue(K, dim)
        self._pending: list[torch.Tensor] = []

    def key_encoder(self, x):
        return F.normalize(self.momentum_projector(self.momentum_backbone(x)), dim=1)

    def encode(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """The query of view 0 and the (detached, shuffle-BN) key of view 1, both L2-normalised."""
        x_q, x_k = batch["views"][:2]
        q = F.normalize(self.projector(self.backbone(x_q)), dim=1)
        return q, shuffle_bn_forward(self.key_encoder, x_k)

    def contrast(self, q: torch.Tensor, k: torch.Tensor, batch: dict | None = None):
        """InfoNCE against the queue; the keys are enqueued after the step. With `--aug.background_negative`
        the batch's `bg_negative` view (another image's foreground on the query's background: BG_Swaps) is
        keyed and scored as one more negative of its query."""
        hard = batch.get("bg_negative") if batch is not None else None
        k_hard = shuffle_bn_forward(self.key_encoder, hard) if hard is not None else None
        loss = info_nce(q, k, self.queue.negatives(), self.tau, k_hard)
        self._pending.append(gather_no_grad(k))
        return loss, {"pos_sim": (q.detach().float() * k.float()).sum(1).mean()}

    def forward(self, batch: dict, step: int):
        return self.contrast(*self.encode(batch), batch)

    @torch.no_grad()
    def after_optimizer_step(self, step: int) -> None:
        ema_update(self.momentum_backbone, self.backbone, self.m)
        ema_update(self.momentum_projector, self.projector, self.m)
        for keys in self._pending:
            self.queue.enqueue(keys)
        self._pending = []

    def load_pretrained(self, ckpt) -> list[str]:
        """main_moco.py's checkpoint: query and key encoders, and the queue of keys with its pointer."""
        loaded = load_official(self, ckpt, OFFICIAL)
        queue = ckpt.state.get("queue")
        if queue is None:
            return loaded + ["queue: not in the file, random keys kept"]
        queue = queue.T  # (dim, K) in builder.py, (K, dim) here
        loaded.append(load_buffer(self.queue.queue, queue, "queue", f"--hparams.K {len(queue)}"))
        if queue.shape == self.queue.queue.shape:
            self.queue.ptr.fill_(int(ckpt.state.get("queue_ptr", 0)))
        return loaded

    def param_groups(self) -> list[dict]:
        return split_decay(self, exclude_bias_and_norm=False)  # the official SGD decays every parameter
