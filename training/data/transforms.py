"""Batched, seeded view generation: the augmentation presets of methods.md §1.5 on tensors.

A view is a list of stages applied to a whole batch at once; each stage draws its per-sample parameters
with `rng.uniform(index, n, seed, epoch, view, stage)`, so sample `i` of epoch `e` gets the same views
whatever the batch it lands in or the number of processes. Per-sample torchvision transforms are about
10x slower on a 2-core CPU (reference/cpu-facts.md); the ops below follow torchvision's semantics:

* `RandomResizedCrop`: torchvision's 10 tries of (area, log-ratio), then the centre-crop fallback;
  crop + resize with `roi_align` (bilinear, averaging when shrinking).
* `ColorJitter`: brightness, contrast, saturation, hue factors, applied in a random order per sample.
* `Grayscale`, `GaussianBlur` (sigma given at 224 px and scaled with the output side; kernel = 10 % of
  the side, as in SimCLR), `Solarize`, and timm's `RandAugment` (rand-n2-m10-mstd0.5, 15 ops).

`ViewMaker(views, seed)` turns a uint8 batch (a `(B, 3, H, W)` tensor, or a list of `(3, H_i, W_i)`
tensors of different sizes; on the CPU or, moved there first, on the GPU) and the samples' dataset indices into `{"views": [...], "index": ...}`
(+ `"jigsaw"` for PIRL / InfoMin). `build_views(preset, image_size, ...)` builds it from a preset name.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

from .background import GREY, Background, hard_negative
from .rng import uniform

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _gray(x: torch.Tensor) -> torch.Tensor:
    """ITU-R 601 luma (torchvision's rgb_to_grayscale weights), one pass per channel."""
    r, g, b = x.unbind(1)
    return (0.299 * r).add_(g, alpha=0.587).add_(b, alpha=0.114).unsqueeze(1)


def _stats(mean, std, device):
    return torch.tensor(mean, device=device).view(1, 3, 1, 1), torch.tensor(std, device=device).view(1, 3, 1, 1)


def _blend(a: torch.Tensor, b: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """torchvision's `_blend`: f * a + (1 - f) * b, clamped to [0, 1]; f is per sample."""
    f = f.view(-1, 1, 1, 1)
    return (a * f).add_(b * (1 - f)).clamp_(0, 1)


def _rgb_to_hsv(x):
    r, g, b = x.unbind(1)
    maxc = torch.maximum(torch.maximum(r, g), b)  # (not x.max(1): no index tensor)
    cr = maxc - torch.minimum(torch.minimum(r, g), b)
    v = maxc
    s = cr / torch.where(maxc == 0, 1.0, maxc)
    crd = torch.where(cr == 0, 1.0, cr)
    # torchvision's (bc - gc, 2 + rc - bc, 4 + gc - rc) with rc = (maxc - r) / crd etc., one division each
    h = torch.where(maxc == r, (g - b) / crd, torch.where(maxc == g, 2.0 + (b - r) / crd, 4.0 + (r - g) / crd))
    h = torch.where(cr == 0, 0.0, h)
    return torch.stack(((h / 6.0) % 1.0, s, v), 1)


def _hsv_to_rgb(x):
    """torchvision's `_hsv2rgb` (the sector table of p, q, t) in the closed form c = v - v s clamp(min(k, 4 - k),
    0, 1), k = (n + 6 h) mod 6 for n = 5, 3, 1: the same values up to float rounding, without the 6-way table."""
    h, s, v = x.unbind(1)
    h6 = h * 6.0
    vs = v * s
    return torch.stack([v - vs * torch.clamp(torch.minimum(k, 4.0 - k), 0.0, 1.0)
                        for k in ((h6 + n) % 6.0 for n in (5.0, 3.0, 1.0))], 1)


def adjust_hue(x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    hsv = _rgb_to_hsv(x)
    hsv[:, 0] = (hsv[:, 0] + h.view(-1, 1, 1)) % 1.0
    return _hsv_to_rgb(hsv)


def _apply(x: torch.Tensor, sel: torch.Tensor, fn, inplace: bool = False) -> torch.Tensor:
    """x[sel] = fn(x[sel], sel_indices) without touching the other samples (in a copy unless `inplace`)."""
    idx = sel.nonzero().squeeze(1)
    if len(idx):
        if not inplace:
            x = x.clone()
        x[idx] = fn(x[idx], idx)
    return x


# ---------------------------------------------------------------------------------------------------------
# Stages. Each has `n` (uniforms it draws per sample) and `__call__(x, u)` on float (B, 3, H, W) in [0, 1].

@dataclass
class RandomResizedCrop:
    size: int
    scale: tuple = (0.08, 1.0)
    ratio: tuple = (3 / 4, 4 / 3)
    n: int = 30  # 10 tries x (area, ratio) + 10 x (top, left) positions for the accepted try

    def boxes(self, heights: torch.Tensor, widths: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """torchvision's `RandomResizedCrop.get_params`, vectorised: (B, 4) boxes x1, y1, x2, y2."""
        area = (heights * widths).float()[:, None]
        target = area * (self.scale[0] + (self.scale[1] - self.scale[0]) * u[:, 0:10])
        log_r = math.log(self.ratio[0]) + (math.log(self.ratio[1]) - math.log(self.ratio[0])) * u[:, 10:20]
        r = log_r.exp()
        w = torch.sqrt(target * r).round()
        h = torch.sqrt(target / r).round()
        ok = (w > 0) & (h > 0) & (w <= widths[:, None]) & (h <= heights[:, None])
        first = torch.where(ok.any(1), ok.float().argmax(1), torch.full_like(heights, -1))
        # Fallback (no try fits): centre crop clamped to the ratio range.
        in_ratio = widths.float() / heights.float()
        fw = torch.where(in_ratio < self.ratio[0], widths.float(),
                         torch.where(in_ratio > self.ratio[1], (heights * self.ratio[1]).round(), widths.float()))
        fh = torch.where(in_ratio < self.ratio[0], (widths / self.ratio[0]).round(),
                         torch.where(in_ratio > self.ratio[1], heights.float(), heights.float()))
        pick = first.clamp_min(0)[:, None]
        cw = torch.where(first >= 0, w.gather(1, pick).squeeze(1), fw)
        ch = torch.where(first >= 0, h.gather(1, pick).squeeze(1), fh)
        pos = u[:, 20:30].gather(1, pick).squeeze(1), u[:, 20:30].gather(1, (pick + 5) % 10).squeeze(1)
        top = torch.where(first >= 0, torch.floor(pos[0] * (heights - ch + 1)), ((heights - ch) / 2).round())
        left = torch.where(first >= 0, torch.floor(pos[1] * (widths - cw + 1)), ((widths - cw) / 2).round())
        return torch.stack((left, top, left + cw, top + ch), 1).float()

    def __call__(self, images, u):
        if torch.is_tensor(images):
            B, _, H, W = images.shape
            heights, widths = torch.full((B,), H), torch.full((B,), W)
        else:
            heights = torch.tensor([im.shape[-2] for im in images])
            widths = torch.tensor([im.shape[-1] for im in images])
        boxes = self.boxes(heights, widths, u)
        if torch.is_tensor(images):
            rois = torch.cat((torch.arange(len(boxes), dtype=torch.float32)[:, None], boxes), 1)
            return roi_align(images.float() / 255, rois.to(images.device), self.size, aligned=True, sampling_ratio=-1)
        out = []
        for im, b in zip(images, boxes.long().tolist()):  # images of different sizes: one at a time
            crop = im[:, b[1]:b[3], b[0]:b[2]].float()[None] / 255
            out.append(F.interpolate(crop, size=(self.size, self.size), mode="bilinear", antialias=True,
                                     align_corners=False))
        return torch.cat(out)


@dataclass
class HorizontalFlip:
    p: float = 0.5
    n: int = 1

    def __call__(self, x, u):
        return torch.where((u[:, 0] < self.p).view(-1, 1, 1, 1), x.flip(-1), x)


@dataclass
class ColorJitter:
    """torchvision `RandomApply([ColorJitter(b, c, s, h)], p)`: factors U(1-b, 1+b) etc., random order."""
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.1
    p: float = 0.8
    n: int = 9  # apply, 4 factors, 4 sort keys for the order

    def __call__(self, x, u):
        apply = u[:, 0] < self.p
        b = 1 + self.brightness * (2 * u[:, 1] - 1)
        c = 1 + self.contrast * (2 * u[:, 2] - 1)
        s = 1 + self.saturation * (2 * u[:, 3] - 1)
        h = self.hue * (2 * u[:, 4] - 1)
        ops = [
            (self.brightness, lambda y, i: _blend(y, torch.zeros_like(y), b[i])),
            (self.contrast, lambda y, i: _blend(y, _gray(y).mean((1, 2, 3), keepdim=True), c[i])),
            (self.saturation, lambda y, i: _blend(y, _gray(y), s[i])),
            (self.hue, lambda y, i: adjust_hue(y, h[i])),
        ]
        order = u[:, 5:9].argsort(1)  # a uniform random permutation per sample
        x = x.clone()  # one copy for the 16 (slot, op) updates, not one each
        for slot in range(4):
            for k, (strength, fn) in enumerate(ops):
                if strength:
                    x = _apply(x, apply & (order[:, slot] == k), fn, inplace=True)
        return x


@dataclass
class Grayscale:
    p: float = 0.2
    n: int = 1

    def __call__(self, x, u):
        return torch.where((u[:, 0] < self.p).view(-1, 1, 1, 1), _gray(x).expand_as(x), x)


@dataclass
class GaussianBlur:
    """Blur with sigma ~ U(sigma) given for 224 px images, scaled by size / 224; kernel 10 % of the side."""
    p: float = 0.5
    sigma: tuple = (0.1, 2.0)
    n: int = 2

    def __call__(self, x, u):
        B, C, H, W = x.shape
        sigma = (self.sigma[0] + (self.sigma[1] - self.sigma[0]) * u[:, 1]) * H / 224
        radius = max(1, int(0.1 * H) // 2)
        t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
        k = torch.exp(-0.5 * (t[None] / sigma[:, None]) ** 2)
        k = (k / k.sum(1, keepdim=True)).repeat_interleave(C, 0)  # (B*C, K)
        y = F.pad(x.reshape(1, B * C, H, W), (radius, radius, radius, radius), mode="reflect")
        y = F.conv2d(y, k[:, None, None, :], groups=B * C)
        y = F.conv2d(y, k[:, None, :, None], groups=B * C).reshape(B, C, H, W)
        return torch.where((u[:, 0] < self.p).view(-1, 1, 1, 1), y, x)


@dataclass
class Solarize:
    p: float = 0.2
    threshold: float = 0.5
    n: int = 1

    def __call__(self, x, u):
        return torch.where((u[:, 0] < self.p).view(-1, 1, 1, 1) & (x >= self.threshold), 1 - x, x)


# RandAugment: timm `rand_augment_transform("rand-n2-m10-mstd0.5")` (the 'rand' op set, each layer applied
# with p=0.5, magnitude ~ N(m, mstd) clipped to [0, 10], random sign where timm negates).
def _affine(x, matrices, fill):
    grid = F.affine_grid(matrices, list(x.shape), align_corners=False)
    ones = torch.ones_like(x[:, :1])
    fill = fill.to(x.device)
    out = F.grid_sample(torch.cat((x, ones), 1), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    inside = out[:, 3:]
    return out[:, :3] + (1 - inside) * fill.view(1, 3, 1, 1)


def _equalize(x):
    """PIL `ImageOps.equalize` per channel, on 8-bit values."""
    B, C, H, W = x.shape
    v = (x * 255).round().long().view(B * C, H * W)
    hist = torch.zeros(B * C, 256, device=x.device).scatter_add_(1, v, torch.ones_like(v, dtype=torch.float32))
    last = hist.gather(1, (255 - (hist.flip(1) > 0).float().argmax(1))[:, None]).squeeze(1)
    step = torch.div(H * W - last, 255, rounding_mode="floor")
    lut = (torch.cumsum(hist, 1) - hist + torch.div(step, 2, rounding_mode="floor")[:, None])
    lut = torch.div(lut, step.clamp_min(1)[:, None], rounding_mode="floor").clamp(0, 255)
    lut = torch.where((step > 0)[:, None], lut, torch.arange(256.0, device=x.device).expand(B * C, 256))
    return (lut.gather(1, v) / 255).view(B, C, H, W)


def _autocontrast(x):
    lo = x.amin((2, 3), keepdim=True)
    hi = x.amax((2, 3), keepdim=True)
    scale = torch.where(hi > lo, 1 / (hi - lo).clamp_min(1e-6), torch.ones_like(hi))
    return torch.where(hi > lo, (x - lo) * scale, x).clamp(0, 1)


def _sharpness(x, f):
    k = torch.tensor([[1.0, 1, 1], [1, 5, 1], [1, 1, 1]], device=x.device) / 13
    B, C, H, W = x.shape
    smooth = F.conv2d(x.reshape(B * C, 1, H, W), k.view(1, 1, 3, 3), padding=1).view(B, C, H, W)
    smooth[..., 0, :], smooth[..., -1, :], smooth[..., :, 0], smooth[..., :, -1] = \
        x[..., 0, :], x[..., -1, :], x[..., :, 0], x[..., :, -1]  # PIL keeps the border pixels
    return _blend(x, smooth, f)


def _quantize(x):
    return (x * 255).round()


def _posterize(x, bits):
    """PIL `ImageOps.posterize`: keep the `bits` (per sample) most significant bits of each 8-bit value."""
    mask = (255 - (2 ** (8 - bits) - 1)).view(-1, 1, 1, 1)
    return torch.bitwise_and(_quantize(x).long(), mask).float() / 255


def _solarize(x, threshold):
    """PIL `ImageOps.solarize`: 8-bit values >= `threshold` (per sample, 0-256) inverted."""
    q = _quantize(x)
    return torch.where(q >= threshold.view(-1, 1, 1, 1), 255 - q, q) / 255


RAND_OPS = ("AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "SolarizeAdd", "Color",
            "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel")


@dataclass
class RandAugment:
    num_layers: int = 2
    magnitude: float = 10.0
    magnitude_std: float = 0.5
    p: float = 0.5
    fill: tuple = IMAGENET_MEAN
    n: int = 0

    def __post_init__(self):
        self.n = 5 * self.num_layers  # op, apply, 2 for a Gaussian magnitude, sign

    def _op(self, name, x, m, sign):
        lvl = m / 10.0
        fill = torch.tensor(self.fill)
        eye = torch.eye(2, 3, device=x.device).expand(len(x), 2, 3).clone()
        if name == "AutoContrast":
            return _autocontrast(x)
        if name == "Equalize":
            return _equalize(x)
        if name == "Invert":
            return 1 - x
        if name == "Rotate":
            a = torch.deg2rad(30 * lvl * sign)
            eye[:, 0, 0], eye[:, 0, 1], eye[:, 1, 0], eye[:, 1, 1] = a.cos(), -a.sin(), a.sin(), a.cos()
            return _affine(x, eye, fill)
        if name == "Posterize":
            return _posterize(x, (lvl * 4).long())
        if name == "Solarize":
            return _solarize(x, torch.clamp((lvl * 256).long(), max=256))
        if name == "SolarizeAdd":
            add = torch.clamp((lvl * 110).long(), max=128).view(-1, 1, 1, 1)
            q = _quantize(x)
            return torch.where(q < 128, (q + add).clamp(max=255), q) / 255
        f = lvl * 1.8 + 0.1
        if name == "Color":
            return _blend(x, _gray(x).expand_as(x), f)
        if name == "Contrast":
            return _blend(x, _gray(x).mean((1, 2, 3), keepdim=True).expand_as(x), f)
        if name == "Brightness":
            return _blend(x, torch.zeros_like(x), f)
        if name == "Sharpness":
            return _sharpness(x, f)
        if name in ("ShearX", "ShearY"):
            eye[:, 0 if name == "ShearX" else 1, 1 if name == "ShearX" else 0] = 0.3 * lvl * sign
            return _affine(x, eye, fill)
        # TranslateX/YRel: a fraction of the side; affine_grid works in [-1, 1], so twice it
        eye[:, 0 if name == "TranslateXRel" else 1, 2] = 2 * 0.45 * lvl * sign
        return _affine(x, eye, fill)

    def __call__(self, x, u):
        for layer in range(self.num_layers):
            ul = u[:, 5 * layer:5 * layer + 5]
            op = (ul[:, 0] * len(RAND_OPS)).long().clamp_max(len(RAND_OPS) - 1)
            gauss = torch.sqrt(-2 * torch.log1p(-ul[:, 2])) * torch.cos(2 * math.pi * ul[:, 3])  # Box-Muller
            m = (self.magnitude + self.magnitude_std * gauss).clamp(0, 10)
            sign = torch.where(ul[:, 4] < 0.5, -1.0, 1.0)
            for k, name in enumerate(RAND_OPS):
                x = _apply(x, (op == k) & (ul[:, 1] < self.p), lambda y, i, name=name: self._op(name, y, m[i], sign[i]))
        return x


@dataclass
class RandomPhotometric:
    """VISSL's `ImgPilRandomPhotometric` (PIRL; vissl/data/ssl_transforms/img_pil_random_photometric.py): with
    probability p (VISSL's default 0.66) all four, in order: posterize to 4-8 bits (an integer, both ends
    included), sharpness by a factor U(0.1, 1.9), solarize at an integer threshold in [0, 256], autocontrast."""
    p: float = 0.66
    n: int = 4

    def __call__(self, x, u):
        def photometric(y, i):
            y = _posterize(y, (u[i, 1] * 5).long().clamp_max(4) + 4)
            y = _quantize(_sharpness(y, 0.1 + 1.8 * u[i, 2])) / 255  # PIL's ops work on 8-bit values
            y = _solarize(y, (u[i, 3] * 257).long().clamp_max(256))
            return _autocontrast(y)
        return _apply(x, u[:, 0] < self.p, photometric)


@dataclass
class View:
    """One view recipe: a crop, then photometric stages, then normalisation."""
    crop: RandomResizedCrop
    stages: Sequence = ()
    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD

    def __call__(self, images, index, *keys) -> torch.Tensor:
        x = self.crop(images, uniform(index, self.crop.n, *keys, 0))
        for k, stage in enumerate(self.stages, start=1):
            x = stage(x, uniform(index, stage.n, *keys, k).to(x.device))
        mean, std = _stats(self.mean, self.std, x.device)
        return ((x - mean) / std).contiguous(memory_format=torch.channels_last)


@dataclass
class Jigsaw:
    """PIRL / PyContrast `JigsawCrop`: crop (scale 0.6-1) to 255/224 of the size, flip, cut a 3x3 grid,
    take a random 64/85 crop of each cell, give each patch the photometric `stages` (PIRL / VISSL; the
    PyContrast InfoMin jigsaw has none), shuffle the patch order (PyContrast's `JigsawHead` shuffle, done
    here). Returns (B, 9, 3, p, p) with p = 64/224 of the image size."""
    size: int
    stages: Sequence = ()
    mean: tuple = IMAGENET_MEAN
    std: tuple = IMAGENET_STD
    grid: int = 3
    flip: float = 0.5

    def __call__(self, images, index, *keys):
        cell = max(2, round(self.size * 255 / 224) // self.grid)
        patch = max(1, round(cell * 64 / 85))
        full = RandomResizedCrop(cell * self.grid, scale=(0.6, 1.0))(images, uniform(index, 30, *keys, 0))
        dev = full.device
        full = HorizontalFlip(self.flip)(full, uniform(index, 1, *keys, 1).to(dev))
        B, G = len(full), self.grid * self.grid
        u = uniform(index, 3 * G, *keys, 2).to(dev)
        offs = (u[:, :2 * G] * (cell - patch + 1)).floor().long().view(B, G, 2)
        ar = torch.arange(patch, device=dev)
        patches = []
        for g in range(G):
            r, c = divmod(g, self.grid)
            ys = r * cell + offs[:, g, 0, None] + ar  # (B, patch)
            xs = c * cell + offs[:, g, 1, None] + ar
            patches.append(full[torch.arange(B, device=dev)[:, None, None, None], torch.arange(3, device=dev)[None, :, None, None],
                                ys[:, None, :, None], xs[:, None, None, :]])
        x = torch.stack(patches, 1).flatten(0, 1)  # (B*9, 3, p, p), sample-major
        index = torch.as_tensor(index)
        patch_index = (index.reshape(-1, 1) * G + torch.arange(G, device=index.device)).flatten()
        for k, stage in enumerate(self.stages, start=3):
            x = stage(x, uniform(patch_index, stage.n, *keys, k).to(dev))
        x = x.view(B, G, 3, patch, patch)
        order = u[:, 2 * G:].argsort(1)  # a random patch order per image
        x = x.gather(1, order.view(B, G, 1, 1, 1).expand_as(x))
        mean, std = _stats(self.mean, self.std, dev)
        return (x - mean[:, None]) / std[:, None]


# ---------------------------------------------------------------------------------------------------------
# Presets (methods.md §1.5). Each returns the photometric stages of view `v` after the crop and flip.

def _instdisc(v):  # InstDisc / MoCo v1: Gray(0.2) then ColorJitter(0.4, 0.4, 0.4, 0.4) always applied
    return [Grayscale(0.2), ColorJitter(0.4, 0.4, 0.4, 0.4, p=1.0)]


def _cmc(v):  # CMC train_CMC.py: crop + flip only; colour is what the views split
    return []


def _pycontrast_cmc(v):  # PyContrast aug "C" (CMC, CMCPIRL): ColorJitter(0.4, 0.4, 0.4, 0.1) always, no grayscale
    return [ColorJitter(0.4, 0.4, 0.4, 0.1, p=1.0)]


def _mocov2(v):  # MoCo v2 "aug+"
    return [ColorJitter(0.4, 0.4, 0.4, 0.1, p=0.8), Grayscale(0.2), GaussianBlur(0.5)]


def _simclr(v, s=1.0):  # SimCLR, colour strength s
    return [ColorJitter(0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s, p=0.8), Grayscale(0.2), GaussianBlur(0.5)]


def _byol(v):  # BYOL asymmetric: view 0 blur 1.0 / solarize 0; view 1 blur 0.1 / solarize 0.2
    blur, sol = (1.0, 0.0) if v % 2 == 0 else (0.1, 0.2)
    return [ColorJitter(0.4, 0.4, 0.2, 0.1, p=0.8), Grayscale(0.2), GaussianBlur(blur), Solarize(sol)]


def _dino(v):  # DINO DataAugmentationDINO: global 1 blur 1.0; global 2 blur 0.1 + solarize 0.2; locals blur 0.5
    blur, sol = (1.0, 0.0) if v == 0 else (0.1, 0.2) if v == 1 else (0.5, 0.0)
    return [ColorJitter(0.4, 0.4, 0.2, 0.1, p=0.8), Grayscale(0.2), GaussianBlur(blur), Solarize(sol)]


def _pirl(v):  # PIRL / VISSL pirl_jigsaw_4node_resnet50.yaml: CJ(0.4, 0.4, 0.4, 0.2), ImgPilRandomPhotometric, Gray(0.2)
    return [ColorJitter(0.4, 0.4, 0.4, 0.2, p=1.0), RandomPhotometric(0.66), Grayscale(0.2)]


def _infomin(v):  # InfoMin "D": CJ(0.8, 0.8, 0.8, 0.2) p .8, blur .5, RandAugment n2 m10 mstd .5, Gray .2
    return [ColorJitter(0.8, 0.8, 0.8, 0.2, p=0.8), GaussianBlur(0.5), RandAugment(2, 10, 0.5), Grayscale(0.2)]


NEGATIVE_VIEW = 1000  # the view key of the background hard negative's draws

PRESETS = {
    "instdisc": (_instdisc, (0.2, 1.0)),
    "cmc": (_cmc, (0.2, 1.0)),
    "pycontrast_cmc": (_pycontrast_cmc, (0.2, 1.0)),
    "mocov2": (_mocov2, (0.2, 1.0)),
    "simclr": (_simclr, (0.08, 1.0)),
    "byol": (_byol, (0.08, 1.0)),
    "dino": (_dino, (0.4, 1.0)),
    "pirl": (_pirl, (0.08, 1.0)),
    "infomin": (_infomin, (0.2, 1.0)),
}


@dataclass
class ViewMaker:
    """Makes every view of a batch: `views` (global crops, then local crops) and an optional jigsaw."""
    views: list
    seed: int = 0
    jigsaw: Jigsaw | None = None
    sizes: list = field(default_factory=list)
    background: Background | None = None

    def __call__(self, images, index, epoch: int) -> dict:
        index = torch.as_tensor(index, dtype=torch.long)

        def source(v):  # what view v crops: the image, or with a background stage its composite
            if self.background is not None:
                return self.background(images, index, v, self.seed, epoch)
            return images[:, :3] if torch.is_tensor(images) else [im[:3] for im in images]

        out = {"views": [view(source(v), index, self.seed, epoch, v) for v, view in enumerate(self.views)],
               "index": index}
        if self.jigsaw is not None:
            out["jigsaw"] = self.jigsaw(source(len(self.views)), index, self.seed, epoch, len(self.views))
        if self.background is not None and self.background.negative:  # BG_Swaps: with view 1's recipe
            negative = (hard_negative(images) if torch.is_tensor(images)
                        else [hard_negative(im[None])[0] for im in images])
            out["bg_negative"] = self.views[1](negative, index, self.seed, epoch, NEGATIVE_VIEW)
        return out


def build_views(preset: str, image_size: int, seed: int = 0, num_views: int = 2, scale=None,
                flip: float = 0.5, local_views: int = 0, local_size: int = 96, local_scale=(0.05, 0.4),
                jigsaw: str | None = None, blur: float | None = None, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                strength: float = 1.0, background: str | None = None, background_p: float = 0.2,
                background_fill=None, background_negative: bool = False) -> ViewMaker:
    """Views for a method. `scale` overrides the preset's crop scale; `blur` overrides its blur
    probability (0 disables it, as the SimCLR CIFAR recipe does); `local_*` adds multi-crop views;
    `strength` is SimCLR's colour strength s; `jigsaw` adds 3x3 patches, "plain" (InfoMin) or "color"
    (PIRL: the preset's colour jitter, photometric op and grayscale per patch); `background` ("remove",
    "random", "swap") a background stage with probability `background_p` before each view's crop
    (data/background.py; the images then carry masks), `background_fill` the removed background's RGB (0-255),
    `background_negative` (with swap) BG_Swaps' hard negative as the batch's `bg_negative` view."""
    if preset not in PRESETS:
        raise ValueError(f"unknown augmentation preset {preset!r}; choose from {sorted(PRESETS)}")
    stages_of, default_scale = PRESETS[preset]
    scale = tuple(scale) if scale is not None else default_scale

    def stages(v):
        st = stages_of(v, strength) if preset == "simclr" else stages_of(v)
        if blur is not None:
            st = [GaussianBlur(blur, s.sigma) if isinstance(s, GaussianBlur) else s for s in st]
        return [HorizontalFlip(flip)] + st

    views = [View(RandomResizedCrop(image_size, scale), stages(v), mean, std) for v in range(num_views)]
    views += [View(RandomResizedCrop(local_size, tuple(local_scale)), stages(num_views + v), mean, std)
              for v in range(local_views)]
    if jigsaw not in (None, "plain", "color"):
        raise ValueError(f"jigsaw must be None, 'plain' (InfoMin / PyContrast) or 'color' (PIRL), got {jigsaw!r}")
    patch_stages = ([s for s in stages(0)[1:] if isinstance(s, (ColorJitter, RandomPhotometric, Grayscale))]
                    if jigsaw == "color" else [])
    jig = Jigsaw(image_size, patch_stages, mean, std, flip=flip) if jigsaw else None
    bg = None
    if background is not None:
        bg = Background(background, background_p, tuple(background_fill) if background_fill is not None else GREY,
                        negative=background_negative)
    elif background_negative:
        raise ValueError("aug.background_negative needs aug.background swap")
    if background_negative and num_views < 2:
        raise ValueError("aug.background_negative is made with view 1's recipe: it needs aug.num_views >= 2")
    return ViewMaker(views, seed, jig, background=bg)
