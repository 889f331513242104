"""Multi-crop forward (SwAV `resnet50.forward`, DINO `utils.MultiCropWrapper`; methods.md §4.10): the
views are crop-major tensors [all images of crop 0, crop 1, ...]; consecutive crops of the same
resolution are concatenated and go through the backbone in one pass (so BatchNorm statistics are per
resolution group), then the features of every crop are concatenated for a single head pass."""

from __future__ import annotations

import torch
import torch.nn as nn


def multicrop_forward(backbone: nn.Module, views: list[torch.Tensor]) -> torch.Tensor:
    """(sum_v B_v, D) backbone features of `views`, in view order."""
    out, i = [], 0
    while i < len(views):
        j = i + 1
        while j < len(views) and views[j].shape[-2:] == views[i].shape[-2:]:
            j += 1
        out.append(backbone(torch.cat(views[i:j])))
        i = j
    return torch.cat(out)
