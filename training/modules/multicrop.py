"""Multi-crop forward (SwAV `resnet50.forward`, DINO `utils.MultiCropWrapper`; methods.md §4.10): the
views are crop-major tensors [all images of crop 0, crop 1, ...]; consecutive crops of the same
resolution are concatenated and go through the backbone in one pass (so BatchNorm statistics are per
resolution group), then the features of every crop are concatenated for a single head pass."""

from __future__ import annotations

import types

import torch
import torch.nn as nn
import torch.nn.functional as F


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


def _dino_pos_embed(self, x: torch.Tensor) -> torch.Tensor:
    """timm `VisionTransformer._pos_embed` (dynamic_img_size: x is B, H, W, C) with DINO's resizing of the
    position embedding (vision_transformer.py `interpolate_pos_encoding`): bicubic by the scale factor
    (grid + 0.1) / trained grid, without antialiasing, the class token's entry kept."""
    B, H, W, C = x.shape
    pos = self.pos_embed
    gh, gw = self.patch_embed.grid_size
    if (H, W) != (gh, gw):
        grid = pos[:, 1:].reshape(1, gh, gw, C).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, scale_factor=((H + 0.1) / gh, (W + 0.1) / gw), mode="bicubic")
        pos = torch.cat((pos[:, :1], grid.permute(0, 2, 3, 1).reshape(1, H * W, C)), dim=1)
    x = torch.cat((self.cls_token.expand(B, -1, -1), x.reshape(B, H * W, C)), dim=1)
    return self.pos_drop(x + pos)


def use_dino_pos_interpolation(vit: nn.Module) -> nn.Module:
    """Crops of another size get DINO's interpolated position embedding instead of timm's antialiased
    `resample_abs_pos_embed` (which differs from it whenever the grid shrinks, e.g. 14 x 14 -> 6 x 6 for
    96-px local crops of a ViT-S/16). For a timm ViT built with dynamic_img_size, a class token, no register
    tokens and the class token's own position entry; a bound method, so a deep copy (the teacher) uses its
    own weights."""
    if not (getattr(vit, "dynamic_img_size", False) and vit.cls_token is not None and vit.pos_embed is not None
            and getattr(vit, "reg_token", None) is None and not getattr(vit, "no_embed_class", False)):
        raise ValueError(f"{type(vit).__name__}: DINO's position interpolation needs a timm VisionTransformer "
                         "with dynamic_img_size=True, a class token with its own position entry and no "
                         "register tokens; use --vit-pos-interpolation timm for this model")
    vit._pos_embed = types.MethodType(_dino_pos_embed, vit)
    return vit
