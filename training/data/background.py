"""Background augmentations (Ryali, Schwab, Morcos 2021, "Characterizing and improving the robustness of
self-supervised learning through background augmentations"): views whose background is removed or replaced,
so that the contrast cannot rest on the background.

    --aug.background remove    BG_RM: the background becomes a constant fill (grey by default)
    --aug.background random    BG_Random: the foreground on another image's background
    --aug.background swap      the positive of BG_Swaps: view 0 keeps its background, the other views take
                               another image's (so the two views of a positive pair differ in background)

Each view takes its stage with probability `background_p`, drawn per sample from (seed, epoch, view, index),
as every other stage is. The stage runs on the whole image, before the crop, so the crop, flip and colour
stages see the composite.

Masks travel with the image as a 4th uint8 channel (255: foreground; fractional at anti-aliased edges):
`SyntheticShapes(with_masks=True)` renders them, an ImageFolder takes a parallel mask folder
(`--data-args.masks DIR`, DIR/CLASS/NAME.png for ROOT/CLASS/NAME.*). `with_partners` adds, for the random
and swap modes, the 4 channels of a partner image j != i, drawn from (seed, epoch, i) over the whole dataset:
the same partner on any number of processes. The partner's own foreground is filled with the mean colour of
its background before its background is used.

What is not here: BG_Swaps' extra hard negative (another image's foreground on the anchor's background,
scored as one more negative), which needs the method's loss. The paper's fill value and probabilities were
not available to us (only its abstract); the defaults (grey fill, p = 0.2) are clzoo's choice.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .rng import randint, uniform

MODES = ("remove", "random", "swap")
PARTNER_KEY = 0xB6  # the partner draw: (seed, this, epoch) per sample
GREY = (124.0, 116.0, 104.0)  # ImageNet's mean colour, uint8 scale: a removed background normalises to ~0


def partners(index, num_samples: int, seed: int, epoch: int) -> torch.Tensor:
    """A partner j != i for each i, uniform over the other images of the dataset."""
    j = randint(index, 1, num_samples - 1, seed, PARTNER_KEY, epoch)[:, 0]
    return j + (j >= torch.as_tensor(index).reshape(-1).cpu()).long()


def _fit(partner: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    if partner.shape[-2:] == like.shape[-2:]:
        return partner
    out = F.interpolate(partner[None].float(), size=like.shape[-2:], mode="bilinear", antialias=True,
                        align_corners=False)[0]
    return out.round().clamp(0, 255).to(partner.dtype)


class WithPartners(torch.utils.data.Dataset):
    """`ds` (items (4-channel image, label)) with each image's partner appended: items (8-channel image, label).
    Set `.epoch` before each epoch's loader is made (the partner draw depends on it). Use `with_partners`."""

    def __init__(self, ds, seed: int = 0):
        if len(ds) < 2:
            raise ValueError("aug.background random / swap needs at least 2 images (a partner for each)")
        self.ds, self.seed, self.epoch = ds, seed, 0
        self.targets = ds.targets

    def __len__(self):
        return len(self.ds)

    def partner(self, indices) -> list[int]:
        return partners(torch.as_tensor(indices), len(self.ds), self.seed, self.epoch).tolist()

    def __getitem__(self, i):
        (x, y), (p, _) = self.ds[int(i)], self.ds[self.partner([int(i)])[0]]
        return torch.cat([x, _fit(p, x)]), y


class _BatchedWithPartners(WithPartners):
    def __getitems__(self, indices):  # the synthetic set renders a batch (and its partners) at once
        own, other = self.ds.__getitems__(indices), self.ds.__getitems__(self.partner(indices))
        return [(torch.cat([x, _fit(p, x)]), y) for (x, y), (p, _) in zip(own, other)]


def with_partners(ds, seed: int = 0) -> WithPartners:
    """Batched when `ds` is (a file that fails then fails its item alone, as SkipUnreadable expects)."""
    return (_BatchedWithPartners if hasattr(ds, "__getitems__") else WithPartners)(ds, seed)


def _composite(images: torch.Tensor, mode: str, fill: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) with C = 4 (RGB + mask) or 8 (+ the partner's): the RGB with its background replaced."""
    rgb, mask = images[:, :3].float(), images[:, 3:4].float() / 255
    if mode == "remove":
        background = fill.to(rgb.device).view(1, 3, 1, 1).expand_as(rgb)
    else:
        prgb, weight = images[:, 4:7].float(), 1 - images[:, 7:8].float() / 255
        mean = (prgb * weight).sum((2, 3), keepdim=True) / weight.sum((2, 3), keepdim=True).clamp_min(1e-6)
        background = prgb * weight + mean * (1 - weight)
    return rgb * mask + background * (1 - mask)


def hard_negative(images: torch.Tensor) -> torch.Tensor:
    """(B, 8, H, W) -> (B, 3, H, W): the partner's foreground on the image's own background (its own shape filled
    with the mean colour of its background): BG_Swaps' negative, which shares the anchor's background."""
    swapped = torch.cat([images[:, 4:8], images[:, :4]], 1)  # the partner as the image, the image as the partner
    return _composite(swapped, "random", torch.zeros(3))


@dataclass
class Background:
    """The background stage of view `v`: see the module docstring. Images: a (B, C, H, W) uint8 batch or a
    list of (C, H, W); returns the RGB (float, 0-255), the background replaced where the draw < p."""
    mode: str
    p: float = 0.2
    fill: tuple = GREY
    negative: bool = False

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"aug.background must be one of {MODES}, got {self.mode!r}")
        if self.negative and self.mode != "swap":
            raise ValueError(f"aug.background_negative is BG_Swaps' hard negative: it needs aug.background swap, "
                             f"not {self.mode!r}")
        if not 0.0 <= self.p <= 1.0:
            raise ValueError(f"aug.background_p must be in [0, 1], got {self.p}")

    def applies(self, view: int) -> bool:
        return not (self.mode == "swap" and view == 0)

    def __call__(self, images, index, view: int, *keys):
        fill = torch.tensor(self.fill, dtype=torch.float32)
        on = (uniform(index, 1, *keys, view, PARTNER_KEY)[:, 0] < self.p) & self.applies(view)
        if torch.is_tensor(images):
            self._check(images)
            on = on.to(images.device).view(-1, 1, 1, 1)
            return torch.where(on, _composite(images, self.mode, fill), images[:, :3].float()) if on.any() \
                else images[:, :3].float()
        out = []
        for im, o in zip(images, on.tolist()):
            self._check(im[None])
            out.append(_composite(im[None], self.mode, fill)[0] if o else im[:3].float())
        return out

    def _check(self, images: torch.Tensor) -> None:
        need = 4 if self.mode == "remove" else 8
        if images.shape[1] < need:
            raise ValueError(f"aug.background {self.mode} needs images with {need} channels (RGB + mask"
                             f"{' + a partner' if need == 8 else ''}); got {images.shape[1]}: the dataset has "
                             f"no foreground masks (see training/data/background.py)")
