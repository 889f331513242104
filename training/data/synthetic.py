"""`synthetic`: a procedural shapes dataset that needs no download.

Each image shows one of ten shapes (the label) under a random colour, scale (40-90 % of the side),
rotation and position, on a textured background: a random colour and a perturbation of it (up to
+-0.15 per channel) blended by smooth noise of a random grain, plus fine noise. The texture is kept
low-contrast and isotropic on purpose: a strong or oriented texture (an early version used sinusoidal
gratings) survives crops and colour jitter, and contrastive methods then discriminate images by their
background instead of learning the shapes. Image `i` of a split is a pure function of (seed, split, i): it is rendered on the fly, at
any resolution, in batches (2x supersampled, so edges are anti-aliased). Labels are for evaluation only.

Raw pixels carry almost no class information (colour, pose and background vary independently of the
shape), so a linear probe on pixels stays near chance while an encoder that learned shape does well:
see README "Training" for the measured numbers.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .rng import generator, uniform

CLASSES = ("circle", "ring", "square", "triangle", "star", "cross", "crescent", "arrow", "ell", "heart")
SPLITS = {"train": 0, "test": 1}
DEFAULT_SIZES = {"train": 10_000, "test": 2_000}


def _polygon(u, v, pts):
    """Even-odd rule point-in-polygon for every (u, v)."""
    inside = torch.zeros_like(u, dtype=torch.bool)
    for (x1, y1), (x2, y2) in zip(pts, pts[1:] + pts[:1]):
        if y1 == y2:
            continue
        crosses = ((y1 > v) != (y2 > v)) & (u < (x2 - x1) * (v - y1) / (y2 - y1) + x1)
        inside ^= crosses
    return inside


_STAR = [(0.95 * math.sin(a), -0.95 * math.cos(a)) if k % 2 == 0 else (0.4 * math.sin(a), -0.4 * math.cos(a))
         for k, a in enumerate(math.pi * k / 5 for k in range(10))]
_ARROW = [(-0.9, -0.2), (0.2, -0.2), (0.2, -0.6), (0.9, 0.0), (0.2, 0.6), (0.2, 0.2), (-0.9, 0.2)]


def _shape_mask(cls: int, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Inside-test of shape `cls` in its own frame, where it spans about the unit disk."""
    r2 = u * u + v * v
    name = CLASSES[cls]
    if name == "circle":
        return r2 < 0.85 ** 2
    if name == "ring":
        return (r2 < 0.9 ** 2) & (r2 > 0.5 ** 2)
    if name == "square":
        return torch.maximum(u.abs(), v.abs()) < 0.65
    if name == "triangle":
        return _polygon(u, v, [(0.0, -0.9), (0.8, 0.5), (-0.8, 0.5)])
    if name == "star":
        return _polygon(u, v, _STAR)
    if name == "cross":
        return ((u.abs() < 0.28) & (v.abs() < 0.9)) | ((v.abs() < 0.28) & (u.abs() < 0.9))
    if name == "crescent":
        return (r2 < 0.85 ** 2) & ((u - 0.4) ** 2 + v * v > 0.65 ** 2)
    if name == "arrow":
        return _polygon(u, v, _ARROW)
    if name == "ell":
        return ((u > -0.7) & (u < -0.2) & (v.abs() < 0.85)) | ((u > -0.7) & (u < 0.7) & (v > 0.35) & (v < 0.85))
    if name == "heart":
        x, y = u * 1.25, -v * 1.25 + 0.25
        return (x * x + y * y - 1) ** 3 - x * x * y ** 3 < 0
    raise AssertionError(name)


def _params(index, seed: int, split: int, num_classes: int, texture: float = 1.0) -> dict:
    u = uniform(index, 16, seed, split)
    scale = 0.4 + 0.5 * u[:, 1]
    return dict(
        label=(u[:, 0] * num_classes).long().clamp_max(num_classes - 1),
        scale=scale,
        angle=2 * math.pi * u[:, 2],
        centre=(1 - scale)[:, None] * (2 * u[:, 3:5] - 1),  # keeps the shape inside the frame
        fg=u[:, 5:8], bg1=u[:, 8:11], bg2=(u[:, 8:11] + 0.3 * texture * (u[:, 11:14] - 0.5)).clamp(0, 1),
        freq=1 + 4 * u[:, 14],  # background texture grain
    )


# The nuisance factors as labels, to ask what an encoder represents besides the shape: the octant of RGB
# space (each channel above or below 1/2) of the shape's colour or of the background's base colour.
OCTANTS = ("black", "blue", "green", "cyan", "red", "magenta", "yellow", "white")
TARGETS = {"shape": CLASSES, "fg_colour": OCTANTS, "bg_colour": OCTANTS}


def labels(index, seed: int = 0, split: str = "train", num_classes: int = len(CLASSES),
           target: str = "shape") -> torch.Tensor:
    """Labels of images `index` without rendering them: the shape, or with `target` a nuisance factor."""
    if target not in TARGETS:
        raise ValueError(f"synthetic target must be one of {sorted(TARGETS)}, got {target!r}")
    p = _params(torch.as_tensor(index, dtype=torch.long).reshape(-1), seed, SPLITS[split], num_classes)
    if target == "shape":
        return p["label"]
    rgb = p["fg" if target == "fg_colour" else "bg1"] > 0.5
    return rgb[:, 0].long() * 4 + rgb[:, 1].long() * 2 + rgb[:, 2].long()


def render(index, image_size: int, seed: int = 0, split: str = "train",
           num_classes: int = len(CLASSES), texture: float = 1.0, with_mask: bool = False) -> torch.Tensor:
    """(len(index), 3, image_size, image_size) uint8 images. `texture` scales the background's blotches and
    fine noise (0: a flat background, an easier variant for short tests). `with_mask` appends the shape's
    coverage as a 4th channel (255 inside, 0 outside, fractional on the anti-aliased edge): the foreground
    mask that the background augmentations and the dense probe use."""
    split_id = SPLITS[split]
    index = torch.as_tensor(index, dtype=torch.long).reshape(-1)
    p = _params(index, seed, split_id, num_classes, texture)
    B, ss = len(index), 2

    def grid(size):
        g = (torch.arange(size, dtype=torch.float32) + 0.5) / size * 2 - 1
        y, x = torch.meshgrid(g, g, indexing="ij")  # (size, size) in [-1, 1]
        return x, y

    # Background, at the output resolution: two colours blended by a blotchy texture (smooth noise of a
    # random grain) plus fine noise. It is isotropic, so no orientation survives a crop for a
    # contrastive method to latch on to instead of the shape.
    g = [generator(seed, split_id, 7, int(i)) for i in index]
    grain = (2 + (p["freq"] - 1)).long()  # 2-6 blobs across the image
    blend = torch.stack([F.interpolate(torch.rand(1, 1, int(n), int(n), generator=gi), size=(image_size, image_size),
                                       mode="bicubic", align_corners=False)[0] for n, gi in zip(grain, g)]).clamp(0, 1)
    bg = p["bg1"][:, :, None, None] * (1 - blend) + p["bg2"][:, :, None, None] * blend
    low = max(image_size // 2, 1)
    noise = torch.stack([torch.randn(3, low, low, generator=gi) for gi in g])
    bg = bg + 0.05 * texture * F.interpolate(noise, size=(image_size, image_size), mode="bilinear", align_corners=False)

    # Shape coverage, 2x supersampled: map pixels into the shape's frame (translate, rotate, scale) and
    # test inside.
    x, y = grid(image_size * ss)
    dx, dy = x - p["centre"][:, 0, None, None], y - p["centre"][:, 1, None, None]
    c, s = p["angle"].cos()[:, None, None], p["angle"].sin()[:, None, None]
    r = p["scale"][:, None, None]
    u, v = (c * dx + s * dy) / r, (-s * dx + c * dy) / r
    mask = torch.zeros(u.shape, dtype=torch.bool)
    for k in range(num_classes):
        sel = (p["label"] == k).nonzero().squeeze(1)
        if len(sel):
            mask[sel] = _shape_mask(k, u[sel], v[sel])
    cover = F.avg_pool2d(mask[:, None].float(), ss)
    # A shape colour too close to its background is pushed to the opposite colour.
    fg = p["fg"]
    close = (fg - (p["bg1"] + p["bg2"]) / 2).abs().sum(1) < 0.6
    fg = torch.where(close[:, None], 1 - fg, fg)
    img = bg * (1 - cover) + fg[:, :, None, None] * cover
    if with_mask:
        img = torch.cat([img, cover], 1)
    return (img.clamp(0, 1) * 255).round().to(torch.uint8)


class SyntheticShapes(torch.utils.data.Dataset):
    """Items are (uint8 CHW tensor, label). `__getitems__` renders a whole batch at once; rendered images
    are cached while the split fits in `cache_bytes`. `target` picks the label: the shape, or the colour
    octant of the shape or of the background (`TARGETS`). `with_masks`: images carry the foreground mask as
    a 4th channel (`render(with_mask=True)`); `masks(index)` gives the masks alone."""

    def __init__(self, split: str = "train", image_size: int = 32, seed: int = 0, num_samples: int | None = None,
                 num_classes: int = len(CLASSES), texture: float = 1.0, target: str = "shape",
                 cache_bytes: int = 1 << 30, with_masks: bool = False):
        if split not in SPLITS:
            raise ValueError(f"synthetic split must be one of {sorted(SPLITS)}, got {split!r}")
        if not 2 <= num_classes <= len(CLASSES):
            raise ValueError(f"synthetic num_classes must be in [2, {len(CLASSES)}], got {num_classes}")
        self.split, self.image_size, self.seed, self.num_classes = split, image_size, seed, num_classes
        self.texture, self.with_masks = float(texture), bool(with_masks)
        self.num_samples = DEFAULT_SIZES[split] if num_samples is None else int(num_samples)
        self.targets = labels(torch.arange(self.num_samples), seed, split, num_classes, target)  # checks target
        self.classes = list(CLASSES[:num_classes] if target == "shape" else TARGETS[target])
        channels = 4 if self.with_masks else 3
        cacheable = self.num_samples * channels * image_size ** 2 <= cache_bytes
        self._cache = (torch.zeros(self.num_samples, channels, image_size, image_size, dtype=torch.uint8)
                       if cacheable else None)
        self._cached = torch.zeros(self.num_samples, dtype=torch.bool)

    def __len__(self):
        return self.num_samples

    def _images(self, index: torch.Tensor) -> torch.Tensor:
        if self._cache is None:
            return self._render(index)
        todo = index[~self._cached[index]].unique()
        for start in range(0, len(todo), 256):
            chunk = todo[start:start + 256]
            self._cache[chunk] = self._render(chunk)
            self._cached[chunk] = True
        return self._cache[index]

    def _render(self, index: torch.Tensor) -> torch.Tensor:
        return render(index, self.image_size, self.seed, self.split, self.num_classes, self.texture, self.with_masks)

    def masks(self, index) -> torch.Tensor:
        """(len(index), 1, H, W) uint8 foreground masks of images `index` (255: the shape)."""
        index = torch.as_tensor(index, dtype=torch.long).reshape(-1)
        if self.with_masks:
            return self._images(index)[:, 3:]
        return render(index, self.image_size, self.seed, self.split, self.num_classes, self.texture, True)[:, 3:]

    def __getitem__(self, i):
        return self.__getitems__([i])[0]

    def __getitems__(self, indices):
        index = torch.as_tensor(indices, dtype=torch.long)
        if len(index) and (index.min() < 0 or index.max() >= self.num_samples):
            raise IndexError(f"index out of range for {self.num_samples} samples")
        images = self._images(index)
        return list(zip(images, self.targets[index].tolist()))
