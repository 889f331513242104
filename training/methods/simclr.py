"""SimCLR — Chen, Kornblith, Norouzi, Hinton, "A Simple Framework for Contrastive Learning of Visual
Representations", ICML 2020. Official code: google-research/simclr (objective.py, model_util.py).

Algorithm 1 of the paper, line by line:
    for sampled minibatch {x_k}:
        x_2k-1, x_2k = t(x_k), t'(x_k)           -> batch["views"] (SimCLR preset, data/transforms.py)
        h = f(x), z = g(h)                        -> backbone, then projector (BN on every head layer)
        s_ij = z_i.z_j / (|z_i| |z_j|)            -> L2-normalised z
        L = 1/2N sum_k [l(2k-1, 2k) + l(2k, 2k-1)] with l = NT-Xent at temperature tau
Negatives are the views of every process, gathered with gradient (modules/dist.gather) and labelled at
rank * B, as TF's `tpu_cross_replica_concat` does (methods.md §2.7e). LARS excludes BN and biases from
weight decay and from the trust ratio. The head's last BN has a scale but no beta (TF `center=False`,
`scale=True`); `proj_last_bn_scale: false` drops the scale too (a plain affine-free BN).

The loss is the official `loss_a + loss_b` (objective.py `add_contrastive_loss`), twice the mean over the
2B anchors that lightly's NTXentLoss returns (`loss_reduction: mean`). The factor is not cosmetic: LARS
leaves BN parameters and biases unadapted (their step is lr x gradient) and adds the weight decay before
the trust ratio, so the mean takes a different step (tests/training/test_step_parity_simclr.py).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..modules.dist import fp32, gather, rank
from ..modules.heads import MLPHead
from ..modules.losses import nt_xent
from ..modules.optim import split_decay
from .official import OfficialLayout, linear_out_dims, load_official


def _official_hparams(ckpt) -> dict:
    dims = linear_out_dims(ckpt.online.heads["head_contrastive"])
    return {"proj_hidden_dim": dims[0], "proj_dim": dims[-1], "proj_layers": len(dims), "proj_last_bn_scale": True}


def _tf_head_keys(sd):
    """SimCLRProjectionHead's `layers.{i}.linear` / `layers.{i}.bn` as MLPHead's Linear 3i / BN 3i+1."""
    def key(k):
        _, i, part, leaf = k.split(".")
        return f"{3 * int(i) + (part == 'bn')}.{leaf}"
    return {key(k): v for k, v in sd.items()}


OFFICIAL = OfficialLayout(heads={"head_contrastive": "projector"}, hparams=_official_hparams,
                          keys={"head_contrastive": _tf_head_keys})


class SimCLR(nn.Module):
    def __init__(self, backbone: nn.Module, info=None, tau: float = 0.1, proj_hidden_dim: int | None = None,
                 proj_dim: int = 128, proj_layers: int = 2, proj_last_bn_scale: bool = True,
                 loss_reduction: str = "sum"):
        super().__init__()
        if loss_reduction not in ("sum", "mean"):
            raise ValueError(f"loss_reduction must be 'sum' (the official loss_a + loss_b) or 'mean', "
                             f"not {loss_reduction!r}")
        self.backbone, self.tau = backbone, tau
        self.direction_weight = 1.0 if loss_reduction == "sum" else 0.5
        hidden = proj_hidden_dim or backbone.num_features  # the paper's 2048 = ResNet-50's width
        self.projector = MLPHead(backbone.num_features, [hidden] * (proj_layers - 1), proj_dim, bn=True, last_bn=True,
                                 last_bn_affine=proj_last_bn_scale)
        if proj_last_bn_scale:
            self.projector[-1].bias.requires_grad_(False)  # center=False: no beta, the bias stays 0

    def forward(self, batch: dict, step: int):
        x1, x2 = batch["views"][:2]
        z = F.normalize(self.projector(self.backbone(torch.cat((x1, x2)))), dim=1)  # both views: one BN batch
        z1, z2 = fp32(z).chunk(2)
        loss = 2 * self.direction_weight * nt_xent(z1, z2, self.tau, gather(z1), gather(z2), offset=rank() * len(z1))
        return loss, {"pos_sim": (z1 * z2).sum(1).mean().detach()}

    def after_optimizer_step(self, step: int) -> None:
        pass

    def load_pretrained(self, ckpt) -> list[str]:
        """The released SimCLR v2 `head_contrastive` (v1's head was not released: NoHeadsError earlier)."""
        return load_official(self, ckpt, OFFICIAL)

    def param_groups(self) -> list[dict]:
        return split_decay(self)
