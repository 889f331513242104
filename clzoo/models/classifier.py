"""A classifier on a timm trunk with part of an SSL projection head in between: what SimCLR v2 fine-tunes
(Chen et al. 2020, §2: "fine-tuning from a middle layer of the projection head") and distils into.

    pooled trunk feature -> neck (the projection head's first layers: Linear[-BN]-ReLU per width) -> fc

`neck: []` is a plain linear classifier on the trunk (the usual fine-tuning). A timm model ResNet / ViT cannot
hold a neck in its own `fc` / `head`, hence this wrapper; it is registered in timm (`head_classifier`), so a
`training/finetune.py` or `training/distill.py` export loads with `clzoo.create_model("local-dir:DIR",
pretrained=True)` (or timm's own `create_model`) and gives logits, and `forward_features` is the trunk's.
"""

from __future__ import annotations

from typing import Optional, Sequence

import timm
import torch
import torch.nn as nn
from timm.models import register_model

from .._builder import build_encoder
from ._common import TrunkWrapper, with_training_only_cfg


def neck_layers(in_dim: int, widths: Sequence[int], bn: bool) -> nn.Sequential:
    """Linear-BN-ReLU per width (SimCLR's head layers: no bias before BN) or Linear-ReLU without BN: indexed
    as training/modules/heads.py MLPHead's first layers, so a projector's keys load unchanged."""
    layers, d = [], in_dim
    for w in widths:
        layers += [nn.Linear(d, w, bias=not bn)] + ([nn.BatchNorm1d(w)] if bn else []) + [nn.ReLU(inplace=True)]
        d = w
    return nn.Sequential(*layers)


class HeadClassifier(TrunkWrapper):
    def __init__(self, base: str = "resnet50", base_args: Optional[dict] = None, neck: Sequence[int] = (),
                 neck_bn: bool = True, num_classes: int = 1000, global_pool: str = "avg", in_chans: int = 3,
                 drop_rate: float = 0.0, **kwargs):
        super().__init__()
        self.base, self.neck_widths, self.neck_bn = base, [int(w) for w in neck], bool(neck_bn)
        self.trunk = timm.create_model(base, pretrained=False, **{"in_chans": in_chans, **dict(base_args or {}),
                                                                   "num_classes": 0})
        self.neck = neck_layers(self.trunk.num_features, self.neck_widths, self.neck_bn)
        self.init_classifier(self.neck_widths[-1] if self.neck_widths else self.trunk.num_features, num_classes,
                             drop_rate)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk.forward_features(x)

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        return self.neck(self.trunk.forward_head(x, pre_logits=True))


@register_model
def head_classifier(pretrained=False, **kwargs):
    """A timm `base` trunk, an SSL head's first layers (`neck` widths) and a linear classifier."""
    return build_encoder(HeadClassifier, "head_classifier", pretrained,
                         **with_training_only_cfg(kwargs, first_conv="trunk.conv1", num_classes=kwargs.get("num_classes", 1000)))
