"""The per-image PIL baselines of `augment_vs_pil`: each clzoo augmentation preset (training/data/transforms.py)
as the torchvision `transforms` pipeline of the same ops that the official repos and lightly run on one PIL
image at a time in DataLoader workers."""

from __future__ import annotations

import torchvision.transforms as T

from training.data.transforms import IMAGENET_MEAN, IMAGENET_STD, PRESETS


def _blur(size: int, p: float):
    # clzoo's GaussianBlur: kernel 10 % of the side (odd), sigma U(0.1, 2.0) given at 224 px, scaled with the side
    k = 2 * max(1, int(0.1 * size) // 2) + 1
    return T.RandomApply([T.GaussianBlur(k, (0.1 * size / 224, 2.0 * size / 224))], p=p)


def _cj(b, c, s, h, p):
    return T.RandomApply([T.ColorJitter(b, c, s, h)], p=p)


def _photometric(size: int, view: int, preset: str) -> list:
    if preset == "instdisc":
        return [T.RandomGrayscale(0.2), T.ColorJitter(0.4, 0.4, 0.4, 0.4)]
    if preset == "mocov2":
        return [_cj(0.4, 0.4, 0.4, 0.1, 0.8), T.RandomGrayscale(0.2), _blur(size, 0.5)]
    if preset == "simclr":
        return [_cj(0.8, 0.8, 0.8, 0.2, 0.8), T.RandomGrayscale(0.2), _blur(size, 0.5)]
    if preset in ("byol", "dino"):
        if preset == "byol":
            blur, sol = (1.0, 0.0) if view % 2 == 0 else (0.1, 0.2)
        else:
            blur, sol = (1.0, 0.0) if view == 0 else (0.1, 0.2) if view == 1 else (0.5, 0.0)
        return [_cj(0.4, 0.4, 0.2, 0.1, 0.8), T.RandomGrayscale(0.2), _blur(size, blur),
                T.RandomSolarize(128, p=sol)]
    if preset == "pirl":
        photometric = T.RandomApply([T.RandomPosterize(4, p=1.0), T.RandomAdjustSharpness(1.5, p=1.0),
                                     T.RandomSolarize(128, p=1.0), T.RandomAutocontrast(p=1.0)], p=0.66)
        return [T.ColorJitter(0.4, 0.4, 0.4, 0.2), photometric, T.RandomGrayscale(0.2)]
    if preset == "infomin":
        return [_cj(0.8, 0.8, 0.8, 0.2, 0.8), _blur(size, 0.5), T.RandAugment(2, 10), T.RandomGrayscale(0.2)]
    raise KeyError(f"no PIL pipeline for preset {preset!r}")


def pil_views(preset: str, image_size: int, num_views: int = 2, local_views: int = 0, local_size: int = 96,
              local_scale=(0.05, 0.4)) -> list:
    """One torchvision Compose per view (global views, then local crops), PIL image in, normalised tensor out."""
    scale = PRESETS[preset][1]
    tail = [T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    views = [T.Compose([T.RandomResizedCrop(image_size, scale), T.RandomHorizontalFlip(),
                        *_photometric(image_size, v, preset), *tail]) for v in range(num_views)]
    views += [T.Compose([T.RandomResizedCrop(local_size, tuple(local_scale)), T.RandomHorizontalFlip(),
                         *_photometric(local_size, num_views + v, preset), *tail]) for v in range(local_views)]
    return views
