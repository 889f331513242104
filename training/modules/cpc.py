"""CPC's pieces (van den Oord et al. 2018 §3, Hénaff et al. 2020 §3): the autoregressive context over the patch
grid's rows, the prediction directions, the InfoNCE over every patch of the batch, and CPC v2's patch
augmentation. Used by methods/cpc.py and methods/cpcv2.py."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.ops import roi_align

from .dist import fp32, gather, rank


class CausalRowConv(nn.Conv2d):
    """A conv whose output row i sees input rows i - (k - 1) .. i only (padded above, never below); every
    column of those rows is visible (PixelCNN's vertical stack)."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 3):
        super().__init__(c_in, c_out, kernel, padding=0)
        self.k = kernel

    def forward(self, x):
        return super().forward(F.pad(x, (self.k // 2, (self.k - 1) // 2, self.k - 1, 0)))


class RowContext(nn.Module):
    """c = g_ar(z) over the (B, D, G, G) grid: residual blocks of ReLU-1x1-ReLU-causal kxk-ReLU-1x1, so that
    c[:, :, i] summarises rows 0..i of z and nothing below (CPC's masked-conv "PixelCNN-style" context)."""

    def __init__(self, dim: int, hidden: int, blocks: int = 3, kernel: int = 3):
        super().__init__()
        self.blocks = nn.ModuleList(nn.Sequential(
            nn.ReLU(), nn.Conv2d(dim, hidden, 1), nn.ReLU(), CausalRowConv(hidden, hidden, kernel), nn.ReLU(),
            nn.Conv2d(hidden, dim, 1)) for _ in range(blocks))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            z = z + block(z)
        return z


# each direction as a view of the grid in which "predict the rows below from the rows above" is that direction
DIRECTIONS = {"down": lambda g: g, "up": lambda g: g.flip(2), "right": lambda g: g.transpose(2, 3),
              "left": lambda g: g.transpose(2, 3).flip(2)}


def cpc_infonce(context: torch.Tensor, z: torch.Tensor, predictors: nn.ModuleList) -> tuple[torch.Tensor, list]:
    """Mean over k = 1..K of InfoNCE(W_k c_{i,j}; z_{i+k,j}) (CPC eq. 4 with f_k = exp(z^T W_k c)): the
    prediction from row i scores the true patch two-plus rows below against every patch of every image of
    the batch, gathered over processes (other locations and other images are the negatives). context, z:
    (B, D, G, G) in the direction's frame; returns (loss, [loss of each k])."""
    B, D, G, W = z.shape
    targets = fp32(gather(z.permute(0, 2, 3, 1).reshape(B * G * W, D)))  # every patch of the global batch
    cell = torch.arange(G * W, device=z.device).view(G, W)
    terms = []
    for k, W_k in enumerate(predictors, start=1):
        if k >= G:
            break
        pred = fp32(W_k(context[:, :, :G - k])).permute(0, 2, 3, 1).reshape(-1, D)
        label = ((rank() * B + torch.arange(B, device=z.device))[:, None, None] * G * W
                 + cell[k:][None]).reshape(-1)
        terms.append(F.cross_entropy(pred @ targets.T, label))
    return torch.stack(terms).mean(), terms


def augment_patches(patches: torch.Tensor, u: torch.Tensor, crop: float = 0.875) -> torch.Tensor:
    """CPC v2's per-patch augmentation on (B, G, G, C, p, p) with u (B, G * G * 6) uniforms: a random
    `crop`-size window resized back to p (random translation), a horizontal flip (p 0.5), and colour dropping
    (2 of the 3 channels set to 0, the normalised mean; p 0.5 here, always in the paper's final model)."""
    B, Gh, Gw, C, p, _ = patches.shape
    x = patches.reshape(-1, C, p, p)
    u = u.reshape(-1, 6).to(x.device)
    side = crop * p
    x0, y0 = u[:, 0] * (p - side), u[:, 1] * (p - side)
    boxes = torch.stack((torch.arange(len(x), device=x.device, dtype=x.dtype), x0, y0, x0 + side, y0 + side), 1)
    x = roi_align(x, boxes.to(x.dtype), p, aligned=True, sampling_ratio=1)  # one bilinear sample per pixel
    x = torch.where((u[:, 2] < 0.5).view(-1, 1, 1, 1), x.flip(3), x)
    keep = (u[:, 3] * C).long().clamp_max(C - 1)
    drop = (u[:, 4] < 0.5).view(-1, 1, 1, 1)
    mask = F.one_hot(keep, C).to(x.dtype).view(-1, C, 1, 1)
    x = torch.where(drop, x * mask, x)
    return x.view(B, Gh, Gw, C, p, p)
