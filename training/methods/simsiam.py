"""SimSiam — Chen, He, "Exploring Simple Siamese Representation Learning", CVPR 2021. Official code:
facebookresearch/simsiam (simsiam/builder.py, main_simsiam.py).

Algorithm 1 of the paper, line by line:
    for x in loader:
        x1, x2 = aug(x), aug(x)                   -> batch["views"] (MoCo v2 preset)
        z1, z2 = f(x1), f(x2)                     -> projector(backbone(x)), each view on its own
        p1, p2 = h(z1), h(z2)                     -> predictor
        L = D(p1, z2)/2 + D(p2, z1)/2             -> losses.negative_cosine
        L.backward(); update(f, h)
    def D(p, z): z = z.detach(); return -(normalize(p) * normalize(z)).sum(dim=1).mean()
Projector (builder.py): Linear(D, D, no bias)-BN-ReLU x 2, then Linear(D, dim)-BN(affine=False) (the
official Linear's bias is frozen because the BN follows it: here the Linear has none). Predictor: the
bottleneck Linear(dim, 512, no bias)-BN-ReLU-Linear(512, dim), no BN on its output. `--fix-pred-lr`:
the predictor's lr stays at the base lr (`fixed_lr`). SGD decays every parameter (wd 1e-4).
"""

from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F

from ..modules.heads import MLPHead
from ..modules.losses import negative_cosine
from .official import OfficialLayout, linear_out_dims, load_official


def _fold_frozen_bias(sd):
    """builder.py keeps the (frozen) bias of the projector's last Linear, right before the affine-free BN;
    ours has none. BN(x + b) with running mean r is BN(x) with running mean r - b (in training the batch
    mean absorbs b), so the bias goes into the running mean."""
    sd = dict(sd)
    bn = max(int(k.split(".")[0]) for k in sd)
    bias = sd.pop(f"{bn - 1}.bias", None)
    if bias is not None:
        sd[f"{bn}.running_mean"] = sd[f"{bn}.running_mean"] - bias
    return sd


def _official_hparams(ckpt) -> dict:
    projector = linear_out_dims(ckpt.online.heads["fc"])
    return {"dim": projector[-1], "pred_dim": linear_out_dims(ckpt.online.heads["predictor"])[0],
            "proj_hidden_dim": projector[0], "proj_layers": len(projector)}


OFFICIAL = OfficialLayout(heads={"fc": "projector", "predictor": "predictor"}, hparams=_official_hparams,
                          keys={"fc": _fold_frozen_bias})


class SimSiam(nn.Module):
    def __init__(self, backbone: nn.Module, info=None, dim: int = 2048, pred_dim: int = 512,
                 proj_hidden_dim: int | None = None, proj_layers: int = 3, fix_pred_lr: bool = True):
        super().__init__()
        self.backbone, self.fix_pred_lr = backbone, fix_pred_lr
        hidden = proj_hidden_dim or backbone.num_features  # the paper's 2048 = ResNet-50's width
        self.projector = MLPHead(backbone.num_features, [hidden] * (proj_layers - 1), dim, bn=True, last_bn=True)
        self.predictor = MLPHead(dim, [pred_dim], dim, bn=True)

    def forward(self, batch: dict, step: int):
        x1, x2 = batch["views"][:2]
        z1, z2 = self.projector(self.backbone(x1)), self.projector(self.backbone(x2))
        p1, p2 = self.predictor(z1), self.predictor(z2)
        loss = negative_cosine(p1, z2) / 2 + negative_cosine(p2, z1) / 2
        # collapse monitor (paper Fig. 2): the per-channel std of norm(z) is ~1/sqrt(dim) unless collapsed
        return loss, {"z_std": F.normalize(z1.detach().float(), dim=1).std(0).mean()}

    def after_optimizer_step(self, step: int) -> None:
        pass

    def load_pretrained(self, ckpt) -> list[str]:
        return load_official(self, ckpt, OFFICIAL)

    def param_groups(self) -> list[dict]:
        encoder = [p for n, p in self.named_parameters() if not n.startswith("predictor.")]
        return [{"params": encoder},
                {"params": list(self.predictor.parameters()), "fixed_lr": self.fix_pred_lr}]
