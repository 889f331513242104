"""CPC (van den Oord et al. 2018; Hénaff et al., ICML 2020): an encoder of overlapping patches.

The image is cut into a G x G grid of `patch`-pixel patches every `stride` pixels; the timm `base` model
(its global average pool: the mean over each patch, as the papers mean-pool the trunk's output) encodes
each patch; `forward_features` is the (B, D, G, G) grid and `forward` its mean over the grid, the pooled
feature a linear evaluation takes. DeepMind released no CPC weights, so this architecture exists for
training: `pretrain.py --method cpc --model resnet18` builds `cpc_encoder(base="resnet18", ...)`, and the
run's export loads with `clzoo.create_model("local-dir:RUN_DIR", pretrained=True)`.
"""
from __future__ import annotations

from typing import Optional

import timm
import torch
import torch.nn as nn
from timm.models import register_model

from .._builder import build_encoder
from ._common import TrunkWrapper, with_training_only_cfg


class CPCEncoder(TrunkWrapper):
    def __init__(self, base: str = "resnet18", base_args: Optional[dict] = None, patch: int = 64, stride: int = 32,
                 num_classes: int = 0, global_pool: str = "avg", in_chans: int = 3, drop_rate: float = 0.0, **kwargs):
        super().__init__()
        if patch < 1 or stride < 1:
            raise ValueError(f"CPC patch and stride must be positive, got patch {patch}, stride {stride}")
        self.base, self.patch, self.stride = base, int(patch), int(stride)
        self.trunk = timm.create_model(base, pretrained=False, num_classes=0, in_chans=in_chans,
                                       **dict(base_args or {}))
        self.init_classifier(self.trunk.num_features, num_classes, drop_rate)

    def patches(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, G, G, C, patch, patch), rows first."""
        if min(x.shape[-2:]) < self.patch:
            raise ValueError(f"CPC: a {tuple(x.shape[-2:])} image is smaller than its {self.patch}-px patches")
        p = x.unfold(2, self.patch, self.stride).unfold(3, self.patch, self.stride)  # B, C, Gh, Gw, p, p
        return p.permute(0, 2, 3, 1, 4, 5)

    def encode_patches(self, patches: torch.Tensor) -> torch.Tensor:
        """(B, Gh, Gw, C, p, p) -> the (B, D, Gh, Gw) grid of mean-pooled patch features."""
        B, Gh, Gw = patches.shape[:3]
        z = self.trunk(patches.reshape(B * Gh * Gw, *patches.shape[3:]))
        return z.view(B, Gh, Gw, -1).permute(0, 3, 1, 2)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode_patches(self.patches(x))

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3))


@register_model
def cpc_encoder(pretrained=False, **kwargs):
    """CPC's patch encoder around any timm model (`base`, `base_args`): the grid of patch features, pooled."""
    return build_encoder(CPCEncoder, "cpc_encoder", pretrained,
                         **with_training_only_cfg(kwargs, first_conv="trunk.conv1"))
