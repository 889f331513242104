"""DINO — Caron, Touvron, Misra, Jégou, Mairal, Bojanowski, Joulin, "Emerging Properties in
Self-Supervised Vision Transformers", ICCV 2021. Official code: facebookresearch/dino (main_dino.py
DINOLoss / train_one_epoch, vision_transformer.DINOHead, utils.MultiCropWrapper / cosine_scheduler).

Algorithm 1 of the paper, line by line:
    gt.params = gs.params                         -> teacher = momentum_copy of the student (backbone + head)
    for x in loader:
        x1, x2 = augment(x), augment(x)           -> 2 global crops (+ N local crops), crop-major views
        s1, s2 = gs(x1), gs(x2)                   -> student: every crop, one backbone pass per resolution
        t1, t2 = gt(x1), gt(x2)                   -> teacher: only the 2 global crops, no gradient
        loss = H(t1, s2)/2 + H(t2, s1)/2          -> losses.dino_cross_entropy over all (global teacher crop,
                                                     other student crop) pairs, averaged
        loss.backward(); update(gs)
        gt.params = l gt.params + (1-l) gs.params -> after_optimizer_step, l cosine from 0.996 to 1
        C = m C + (1-m) cat([t1, t2]).mean(dim=0) -> the center, summed over processes, once per step
    def H(t, s):
        t = t.detach(); s = softmax(s / tps); t = softmax((t - C) / tpt)   # center + sharpen
        return - (t * log(s)).sum(dim=1).mean()
The teacher temperature tpt warms up linearly per epoch (`warmup_teacher_temp` -> `teacher_temp` over
`warmup_teacher_temp_epochs`). The head's last (weight-normalised) layer gets no update during the first
`freeze_last_layer` epoch(s) (`cancel_gradients_last_layer`); the recipe clips each parameter's gradient
(clip_grad 3.0, per_param), schedules the weight decay 0.04 -> 0.4, and gives biases / norms none. The
teacher has no drop path. `backbone` is the TEACHER's, which DINO evaluates and releases; the trained
student is `student_backbone`.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..modules.dist import fp32, reduce_no_grad
from ..modules.heads import DINOHead
from ..modules.losses import dino_cross_entropy
from ..modules.momentum import ema_update, momentum_copy, momentum_schedule
from ..modules.multicrop import multicrop_forward
from ..modules.optim import cancel_gradients, split_decay
from .official import OfficialLayout, linear_out_dims, load_buffer, load_official


def _official_hparams(ckpt) -> dict:
    head = ckpt.online.heads["head"]
    out_dim, bottleneck_dim = head.last_layer.weight_v.shape
    return {"out_dim": out_dim, "hidden_dim": linear_out_dims(head.mlp)[0], "bottleneck_dim": bottleneck_dim,
            "use_bn_in_head": any(isinstance(m, nn.BatchNorm1d) for m in head.mlp.modules()),
            "norm_last_layer": bool((head.last_layer.weight_g == 1).all())}  # DINOHead fills g with 1 to fix it


OFFICIAL = OfficialLayout(heads={"head": "student_head"}, backbone="student_backbone", hparams=_official_hparams,
                          momentum={"backbone": "student_backbone", "teacher_head": "student_head"})


@torch.no_grad()
def _collapse_monitor(p: torch.Tensor) -> dict:
    """The paper's collapse monitor (Fig. 7): the teacher's mean per-sample entropy goes to ln(out_dim) when
    the output collapses to uniform, and the entropy of its batch mean goes to 0 when one dimension wins."""
    def entropy(q):
        return float(-(q * q.clamp_min(1e-12).log()).sum(-1).mean())
    return {"teacher_entropy": entropy(p), "teacher_mean_entropy": entropy(p.mean(0))}


class DINO(nn.Module):
    def __init__(self, backbone: nn.Module, info, out_dim: int = 65536, hidden_dim: int = 2048,
                 bottleneck_dim: int = 256, use_bn_in_head: bool = False, norm_last_layer: bool = True,
                 momentum_teacher: float = 0.996, warmup_teacher_temp: float = 0.04, teacher_temp: float = 0.04,
                 warmup_teacher_temp_epochs: int = 0, student_temp: float = 0.1, center_momentum: float = 0.9,
                 freeze_last_layer: int = 1):
        super().__init__()
        self.student_backbone = backbone
        self.student_head = DINOHead(backbone.num_features, out_dim, hidden_dim, bottleneck_dim,
                                     use_bn=use_bn_in_head, norm_last_layer=norm_last_layer)
        self.backbone = momentum_copy(backbone)  # the teacher: exported and evaluated
        for m in self.backbone.modules():  # the official teacher is built without drop path
            if hasattr(m, "drop_prob"):
                m.drop_prob = 0.0
        self.teacher_head = momentum_copy(self.student_head)
        self.register_buffer("center", torch.zeros(1, out_dim))
        self.student_temp, self.center_momentum = student_temp, center_momentum
        self.steps_per_epoch = info.steps_per_epoch
        self.freeze_steps = freeze_last_layer * info.steps_per_epoch
        epochs = max(math.ceil(info.total_steps / info.steps_per_epoch), 1)
        warm = min(warmup_teacher_temp_epochs, epochs)
        self.teacher_temp = np.concatenate((np.linspace(warmup_teacher_temp, teacher_temp, warm),
                                            np.full(epochs - warm, teacher_temp)))
        self.momentum = momentum_schedule(momentum_teacher, info.total_steps)
        self._pending: list[tuple[torch.Tensor, int]] = []

    def forward(self, batch: dict, step: int):
        views = batch["views"]
        with torch.no_grad():
            t = fp32(self.teacher_head(multicrop_forward(self.backbone, views[:2])))
        s = fp32(self.student_head(multicrop_forward(self.student_backbone, views)))
        temp = float(self.teacher_temp[step // self.steps_per_epoch])
        student = (s / self.student_temp).split([len(v) for v in views])
        teacher = F.softmax((t - self.center) / temp, dim=-1)
        loss = dino_cross_entropy(list(student), list(teacher.split([len(v) for v in views[:2]])))
        self._pending.append((t.sum(0, keepdim=True), len(t)))
        return loss, {"teacher_temp": temp, **_collapse_monitor(teacher)}

    def before_optimizer_step(self, step: int) -> None:
        if step < self.freeze_steps:
            cancel_gradients(self.student_head.last_layer.parameters())

    @torch.no_grad()
    def after_optimizer_step(self, step: int) -> None:
        m = float(self.momentum[step])
        ema_update(self.backbone, self.student_backbone, m)
        ema_update(self.teacher_head, self.student_head, m)
        if self._pending:  # DINOLoss.update_center, over the whole optimizer step's global batch
            total = reduce_no_grad(sum(s for s, _ in self._pending))
            count = reduce_no_grad(torch.tensor(float(sum(n for _, n in self._pending)), device=total.device))
            self.center.mul_(self.center_momentum).add_(total / count, alpha=1 - self.center_momentum)
        self._pending = []

    def load_pretrained(self, ckpt) -> list[str]:
        """main_dino.py's checkpoint: student, teacher, and the loss's center."""
        loaded = load_official(self, ckpt, OFFICIAL)
        loaded.append(load_buffer(self.center, ckpt.state.get("center"), "center", "--hparams.out_dim"))
        if not _official_hparams(ckpt)["norm_last_layer"] and not self.student_head.last_layer.weight_g.requires_grad:
            loaded.append("student_head.last_layer.weight_g: trained in the file (norm_last_layer false), kept "
                          "frozen at its values here: --hparams.norm_last_layer false trains it")
        return loaded

    def param_groups(self) -> list[dict]:
        return split_decay(self)  # only the student has trainable parameters
