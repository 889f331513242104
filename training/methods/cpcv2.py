"""CPC v2 — Hénaff et al., "Data-Efficient Image Recognition with Contrastive Predictive Coding", ICML 2020.
No official code: this follows the paper (§3 and appendix A).

CPC v1 (methods/cpc.py) with the paper's changes to it:
  * layer normalisation instead of batch normalisation in the patch encoder (timm's `groupnorm1`, GroupNorm
    with one group: each patch normalised over its own channels and pixels), so that no statistic spans the
    patches of one image or the batch;
  * larger patches: 80 px every 32 px of a 240 crop (6 x 6); default here patch image_size / 3, stride
    image_size * 2 / 15;
  * predictions in more directions: top-down and bottom-up by default (`--hparams.directions
    [down,up,right,left]` for all four);
  * per-patch augmentation (`augment_patches`: a random crop-and-resize, a flip, colour dropping), drawn per
    sample and patch from the sample's index, so the same on any process split.
"""

from __future__ import annotations

from .cpc import CPC


class CPCv2(CPC):
    directions_default = ("down", "up")
    patch_fraction, stride_fraction = 1 / 3, 2 / 5  # 80 / 240 and 32 / 80

    def __init__(self, backbone, info, steps: int = 5, context_dim: int | None = None, context_blocks: int = 3,
                 directions=None, patch_aug: bool = True, crop: float = 0.875):
        super().__init__(backbone, info, steps, context_dim, context_blocks, directions, patch_aug, crop)

    @staticmethod
    def base_args(model_args: dict) -> dict:
        return {"norm_layer": "groupnorm1", **model_args}
