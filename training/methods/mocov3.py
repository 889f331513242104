"""MoCo v3 — Chen, Xie, He, "An Empirical Study of Training Self-Supervised Vision Transformers", ICCV
2021. Official code: facebookresearch/moco-v3 (moco/builder.py, main_moco.py, vits.py).

Algorithm 1 of the paper, line by line:
    f_k.params = f_q.params                      -> momentum_copy of backbone + projector
    for x in loader:
        x1, x2 = aug(x), aug(x)                   -> batch["views"] (BYOL asymmetric preset)
        q1, q2 = f_q(x1), f_q(x2)                 -> predictor(projector(backbone(x))), each view on its own
        k1, k2 = f_k(x1), f_k(x2)                 -> momentum encoder, no gradient
        loss = ctr(q1, k2) + ctr(q2, k1)          -> losses.contrastive_in_batch
        update(f_q); f_k = m f_k + (1 - m) f_q    -> after_optimizer_step (official: right before the next
                                                     forward, with that step's m: the same sequence)
    def ctr(q, k): logits = mm(q, k_all.t()); labels = range(N) + N rank; CE(logits / tau, labels) x 2 tau
Keys of every process are gathered without gradient; m rises from m0 to 1 with a half cosine
(`--moco-m-cos`). Heads (builder.py `_build_mlp`, all Linear bias-free, BN after each layer):
ResNet: projector 2 layers D-4096-256 with last BN(affine=False), predictor 2 layers 256-4096-256 without
last BN; ViT: projector 3 layers, predictor with the last BN. For a ViT backbone (vits.py): the 2-D sin-cos
position embedding, fixed, and (`stop_grad_conv1`) the random patch projection frozen. A random ViT
gets vits.py's initialisation (`mocov3_vit_init_`), not timm's. Weight decay: the ResNet recipe's LARS skips
biases and norms; the ViT recipe's AdamW decays every parameter (main_moco.py), chosen per backbone.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from ..modules.dist import gather_no_grad, rank
from ..modules.heads import MLPHead
from ..modules.losses import contrastive_in_batch, fp32
from ..modules.momentum import ema_update, momentum_copy, momentum_schedule
from ..modules.optim import split_decay
from .official import OfficialLayout, linear_out_dims, load_official


def is_vit(backbone: nn.Module) -> bool:
    return hasattr(backbone, "patch_embed") and getattr(backbone, "pos_embed", None) is not None


def mocov3_vit_(vit: nn.Module, stop_grad_conv1: bool = True) -> None:
    """In place: fixed 2-D sin-cos position embedding; frozen patch projection (`--stop-grad-conv1`)."""
    from clzoo.models._archs import mocov3_sincos_pos_embed
    with torch.no_grad():
        vit.pos_embed.copy_(mocov3_sincos_pos_embed(vit.patch_embed.grid_size, vit.embed_dim,
                                                    num_prefix_tokens=vit.num_prefix_tokens))
    vit.pos_embed.requires_grad = False
    if stop_grad_conv1:
        for p in vit.patch_embed.proj.parameters():
            p.requires_grad = False


@torch.no_grad()
def mocov3_vit_init_(vit: nn.Module) -> None:
    """vits.py's initialisation of a random ViT (VisionTransformerMoCo.__init__), replacing timm's: every
    Linear Xavier-uniform with zero bias, the qkv projection as three (D, D) matrices (bound sqrt(6 / (D + D))
    instead of the fused (3D, D) one's), the patch projection Xavier-uniform over its 3 p^2 inputs, and the
    class token N(0, 1e-6)."""
    for name, m in vit.named_modules():
        if isinstance(m, nn.Linear):
            if "qkv" in name:
                bound = math.sqrt(6.0 / (m.weight.shape[0] // 3 + m.weight.shape[1]))
                nn.init.uniform_(m.weight, -bound, bound)
            else:
                nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    nn.init.normal_(vit.cls_token, std=1e-6)
    proj = vit.patch_embed.proj
    bound = math.sqrt(6.0 / (proj.in_channels * proj.kernel_size[0] * proj.kernel_size[1] + proj.out_channels))
    nn.init.uniform_(proj.weight, -bound, bound)
    nn.init.zeros_(proj.bias)


def _official_hparams(ckpt) -> dict:
    predictor = linear_out_dims(ckpt.online.heads["predictor"])
    return {"mlp_dim": predictor[0], "dim": predictor[-1]}


# builder.py keeps the projector inside the encoder: `fc` of a ResNet, `head` of a ViT
OFFICIAL = OfficialLayout(heads={"fc": "projector", "head": "projector", "predictor": "predictor"},
                          hparams=_official_hparams,
                          momentum={"momentum_backbone": "backbone", "momentum_projector": "projector"})


class MoCoV3(nn.Module):
    def __init__(self, backbone: nn.Module, info, tau: float = 0.2, m: float = 0.99, dim: int = 256,
                 mlp_dim: int = 4096, stop_grad_conv1: bool = True):
        super().__init__()
        self.backbone, self.tau = backbone, tau
        self.vit = is_vit(backbone)
        if self.vit:
            mocov3_vit_(backbone, stop_grad_conv1)
        D = backbone.num_features
        proj_layers, pred_last_bn = (3, True) if self.vit else (2, False)
        self.projector = MLPHead(D, [mlp_dim] * (proj_layers - 1), dim, bn=True, last_bn=True)
        self.predictor = MLPHead(dim, [mlp_dim], dim, bn=True, last_bn=pred_last_bn, last_bias=False)
        self.momentum_backbone = momentum_copy(self.backbone)
        self.momentum_projector = momentum_copy(self.projector)
        self.m = momentum_schedule(m, info.total_steps)

    @staticmethod
    def init_random_backbone(backbone: nn.Module) -> None:
        """Called by the trainer on a random (not --init-from) backbone before the method is built."""
        if is_vit(backbone):
            mocov3_vit_init_(backbone)

    def forward(self, batch: dict, step: int):
        x1, x2 = batch["views"][:2]
        q1 = self.predictor(self.projector(self.backbone(x1)))
        q2 = self.predictor(self.projector(self.backbone(x2)))
        with torch.no_grad():
            k1 = gather_no_grad(fp32(self.momentum_projector(self.momentum_backbone(x1))))
            k2 = gather_no_grad(fp32(self.momentum_projector(self.momentum_backbone(x2))))
        offset = rank() * len(x1)
        loss = contrastive_in_batch(q1, k2, self.tau, offset) + contrastive_in_batch(q2, k1, self.tau, offset)
        return loss, {"m": float(self.m[step])}

    @torch.no_grad()
    def after_optimizer_step(self, step: int) -> None:
        m = float(self.m[min(step + 1, len(self.m) - 1)])  # the m the official code uses at the next step
        ema_update(self.momentum_backbone, self.backbone, m)
        ema_update(self.momentum_projector, self.projector, m)

    def load_pretrained(self, ckpt) -> list[str]:
        loaded = load_official(self, ckpt, OFFICIAL)
        if self.vit:  # the fixed table of this grid (the file's was resampled from its training size)
            mocov3_vit_(self.backbone, stop_grad_conv1=False)
            mocov3_vit_(self.momentum_backbone, stop_grad_conv1=False)
        return loaded

    def param_groups(self) -> list[dict]:
        return split_decay(self, exclude_bias_and_norm=not self.vit)
