"""CPC (v1) — van den Oord, Li, Vinyals, "Representation Learning with Contrastive Predictive Coding", 2018,
§3.3 (images). No official code: this follows the paper.

    x -> a G x G grid of overlapping patches (64 px every 32 px of a 256 crop: 7 x 7; default here: patch
         image_size / 4, stride patch / 2, so 7 x 7 at any size)
    z_{i,j} = mean-pool(g_enc(patch_{i,j}))         the backbone on each patch (CPCEncoder)
    c_{i,j} = g_ar(z_{<=i, .})                        a masked-conv (PixelCNN-style) context over rows 0..i
    L = mean_k InfoNCE(W_k c_{i,j} . z_{i+k,j} against z of every patch of every image in the batch),
        k = 1..steps (5), one W_k per step (eq. 3-4)
`directions` adds the other prediction directions of CPC v2 (up, right, left), each with its own context and
W_k; `patch_aug` CPC v2's per-patch augmentation (methods/cpcv2.py sets both). The BatchNorm of the v1 encoder
normalises the patches of an image together, which CPC v2 §3 names as a way to cheat; cpcv2 replaces it.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..data.rng import uniform
from ..modules.cpc import DIRECTIONS, RowContext, augment_patches, cpc_infonce
from ..modules.optim import split_decay

PATCH_AUG_KEY = 0xC9C2  # the keys of the per-patch draws: (seed, this, step) per sample


class CPC(nn.Module):
    directions_default = ("down",)
    patch_fraction, stride_fraction = 1 / 4, 1 / 2  # patch / image size, stride / patch

    def __init__(self, backbone: nn.Module, info, steps: int = 5, context_dim: int | None = None,
                 context_blocks: int = 3, directions=None, patch_aug: bool = False, crop: float = 0.875):
        super().__init__()
        if not hasattr(backbone, "encode_patches"):
            raise ValueError(f"cpc needs a patch encoder (--model any timm name; it is wrapped in clzoo's "
                             f"cpc_encoder), not {type(backbone).__name__}")
        directions = tuple(directions or self.directions_default)
        unknown = [d for d in directions if d not in DIRECTIONS]
        if unknown or not directions:
            raise ValueError(f"cpc directions must be some of {sorted(DIRECTIONS)}, got {list(directions)}")
        self.backbone, self.directions, self.patch_aug, self.crop, self.seed = backbone, directions, patch_aug, crop, info.seed
        D = backbone.num_features
        self.contexts = nn.ModuleDict({d: RowContext(D, context_dim or D // 2, context_blocks) for d in directions})
        self.predictors = nn.ModuleDict({d: nn.ModuleList(nn.Conv2d(D, D, 1, bias=False) for _ in range(steps))
                                         for d in directions})

    @classmethod
    def encoder_spec(cls, name: str, model_args: dict, image_size: int = 224) -> tuple[str, dict]:
        """`--model NAME` (any timm model) becomes cpc_encoder(base=NAME, base_args=model_args), with the
        patch size and stride of `--model-args.patch / .stride` or the method's fractions of the image size."""
        if name == "cpc_encoder" or name.startswith(("local-dir:", "hf-hub:")):
            return name, model_args
        patch = int(model_args.pop("patch", max(1, round(image_size * cls.patch_fraction))))
        stride = int(model_args.pop("stride", max(1, round(patch * cls.stride_fraction))))
        return "cpc_encoder", {"base": name, "base_args": cls.base_args(model_args), "patch": patch, "stride": stride}

    @staticmethod
    def base_args(model_args: dict) -> dict:
        return model_args

    def forward(self, batch: dict, step: int):
        x = batch["views"][0]
        patches = self.backbone.patches(x)
        if self.patch_aug:
            G = patches.shape[1] * patches.shape[2]
            patches = augment_patches(patches, uniform(batch["index"], G * 6, self.seed, PATCH_AUG_KEY, step), self.crop)
        z = self.backbone.encode_patches(patches)
        total, logs = 0.0, {}
        for d in self.directions:
            zd = DIRECTIONS[d](z)
            loss, _ = cpc_infonce(self.contexts[d](zd), zd, self.predictors[d])
            logs[f"loss_{d}"] = loss.detach()
            total = total + loss
        return total / len(self.directions), logs

    def after_optimizer_step(self, step: int) -> None:
        pass

    def param_groups(self) -> list[dict]:
        return split_decay(self)
