"""MoCo v2 — Chen, Fan, Girshick, He, "Improved Baselines with Momentum Contrastive Learning", 2020.
Official code: facebookresearch/moco with `--mlp --moco-t 0.2 --aug-plus --cos`.

MoCo v2 is MoCo v1 (mocov1.py) with three changes, two of them in the recipe:
* an MLP head, Linear(D, D)-ReLU-Linear(D, 128) on both encoders (here);
* tau 0.2 (here, as the default);
* "aug+" (blur, jitter p=0.8) and a cosine lr schedule: configs/mocov2.yaml.
"""

from __future__ import annotations

import torch.nn as nn

from .mocov1 import MoCo


class MoCoV2(MoCo):
    def __init__(self, backbone: nn.Module, info=None, tau: float = 0.2, K: int = 65536, m: float = 0.999,
                 dim: int = 128):
        super().__init__(backbone, info, tau=tau, K=K, m=m, dim=dim, mlp=True)
