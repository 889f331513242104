"""Datasets for pre-training and evaluation.

    build_dataset(spec, split="train", image_size=224, seed=0, *, num_samples=None, transform=None,
                  **synthetic_args) -> torch.utils.data.Dataset of (image, label)

* `spec="synthetic"`: the embedded procedural shapes set (data/synthetic.py); images are uint8
  `(3, image_size, image_size)` tensors rendered from (seed, split, index); splits "train" / "test";
  `synthetic_args`: `num_classes` (2-10, the first shapes), `texture` (background texture scale) and
  `target` (the label: "shape", or the nuisance "fg_colour" / "bg_colour", a colour octant).
* `masks`: foreground masks as a 4th uint8 channel of each image (255: foreground), for the background
  augmentations (data/background.py): `True` for the synthetic set (it renders them); for an ImageFolder the
  mask folder, `MASKS/CLASS/NAME.png` for each `ROOT/CLASS/NAME.*` (`MASKS/train/...` when ROOT has splits).
* `spec=PATH`: an ImageFolder tree. `PATH/train` + `PATH/val` (or `PATH/test`) when present, else `PATH`
  itself is the train split. Images are decoded to uint8 `(3, H, W)` tensors with the shorter side
  resized to `image_size * 256 / 224` (aspect kept; crops happen in the augmentation); `decode` "pil" or
  "torchvision" (`torchvision.io.decode_image`, faster: benchmarks/run.py decode_imagefolder). An unreadable
  file raises; the trainer's `SkipUnreadable` wrapper substitutes and counts it.
* `spec="hf:NAME"`: `datasets.load_dataset(NAME)` (needs `pip install datasets`); split "test" maps to
  the first of validation / test / val that exists; image column `image` or `img`, label `label`/`labels`.

`transform`, if given, is applied to each image as it was decoded, as torchvision's datasets do: the PIL
original for files and hf datasets (not the resized tensor), the uint8 tensor for synthetic images; the
evaluation's is `clzoo.features.eval_transform(data_config)`, which takes both. `with_transform(ds, t)`
gives an existing dataset a transform (sharing the synthetic render cache).
"""

from __future__ import annotations

import copy
import os

import numpy as np
import torch
import torch.nn.functional as F

from .synthetic import SyntheticShapes

__all__ = ["build_dataset", "with_transform", "ImageFolderDataset", "SkipUnreadable", "SyntheticShapes"]

DECODERS = ("pil", "torchvision")
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def _resize_short(img: torch.Tensor, short: int) -> torch.Tensor:
    h, w = img.shape[-2:]
    if min(h, w) == short:
        return img
    nh, nw = (short, max(1, round(w * short / h))) if h <= w else (max(1, round(h * short / w)), short)
    out = F.interpolate(img[None].float(), size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
    return out[0].round().clamp(0, 255).to(torch.uint8)


def _to_tensor(pil_image) -> torch.Tensor:
    arr = np.asarray(pil_image.convert("RGB"))
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


class ImageFolderDataset(torch.utils.data.Dataset):
    """torchvision's ImageFolder layout (root/class/xxx.jpg); items (uint8 tensor, label)."""

    def __init__(self, root: str, image_size: int, transform=None, decode: str = "pil", masks: str | None = None):
        if decode not in DECODERS:
            raise ValueError(f"decode must be one of {DECODERS}, got {decode!r}")
        if masks is not None and transform is not None:
            raise ValueError("an ImageFolder with masks returns uint8 RGB + mask tensors; it takes no transform")
        if masks is not None and not os.path.isdir(masks):
            raise FileNotFoundError(f"mask folder {masks!r} does not exist (expected MASKS/CLASS/NAME.png for "
                                    f"each ROOT/CLASS/NAME image)")
        self.decode, self.masks = decode, masks
        classes = sorted(d.name for d in os.scandir(root) if d.is_dir())
        if not classes:
            raise FileNotFoundError(f"no class folders in {root!r} (expected ROOT/CLASS/IMAGE files)")
        self.root, self.classes, self.transform = root, classes, transform
        self.samples = []
        for label, c in enumerate(classes):
            for dirpath, _, files in sorted(os.walk(os.path.join(root, c), followlinks=True)):
                self.samples += [(os.path.join(dirpath, f), label) for f in sorted(files)
                                 if f.lower().endswith(IMG_EXTENSIONS)]
        if not self.samples:
            raise FileNotFoundError(f"no images with extensions {IMG_EXTENSIONS} under {root!r}")
        self.targets = torch.tensor([s[1] for s in self.samples])
        self.load_size = round(image_size * 256 / 224)

    def __len__(self):
        return len(self.samples)

    def mask_path(self, i: int) -> str:
        rel = os.path.relpath(self.samples[i][0], self.root)
        return os.path.join(self.masks, os.path.splitext(rel)[0] + ".png")

    def __getitem__(self, i):
        if self.masks is None:
            return self._image(i)
        from PIL import Image
        img, label = self._image(i)
        path = self.mask_path(i)
        try:
            with open(path, "rb") as f:
                mask = Image.open(f)
                mask.load()
        except FileNotFoundError:
            raise FileNotFoundError(f"no mask {path!r} for image {self.samples[i][0]!r} (each ROOT/CLASS/NAME "
                                    f"image needs MASKS/CLASS/NAME.png, 255 = foreground)") from None
        mask = torch.from_numpy(np.asarray(mask.convert("L")).copy())[None]
        if mask.shape[-2:] != img.shape[-2:]:
            mask = F.interpolate(mask[None].float(), size=img.shape[-2:], mode="bilinear", antialias=True,
                                 align_corners=False)[0].round().clamp(0, 255).to(torch.uint8)
        return torch.cat([img, mask]), label

    def _image(self, i):
        from PIL import Image
        path, label = self.samples[i]
        if self.decode == "torchvision" and not self.transform:
            # libjpeg-turbo / libpng straight to a uint8 tensor, no PIL image in between (benchmarks/run.py
            # decode_imagefolder); a corrupt file raises RuntimeError, which SkipUnreadable counts
            from torchvision.io import ImageReadMode, decode_image, read_file
            img = decode_image(read_file(path), mode=ImageReadMode.RGB)
            return _resize_short(img, self.load_size), label
        with open(path, "rb") as f:
            img = Image.open(f)
            img.load()  # truncated / corrupt files raise here, not later
            if self.transform:
                return self.transform(img.convert("RGB")), label
            return _resize_short(_to_tensor(img), self.load_size), label


class HFDataset(torch.utils.data.Dataset):
    def __init__(self, name: str, split: str, image_size: int, transform=None):
        try:
            import datasets
        except ImportError as e:
            raise ImportError(f"--data hf:{name} needs the `datasets` package: pip install datasets") from e
        splits = datasets.get_dataset_split_names(name)
        candidates = ["train"] if split == "train" else ["validation", "test", "val", "valid"]
        chosen = next((s for s in candidates if s in splits), None)
        if chosen is None:
            raise FileNotFoundError(f"hf:{name} has splits {splits}; none of {candidates} for {split!r}")
        self.ds = datasets.load_dataset(name, split=chosen)
        cols = self.ds.column_names
        self.image_key = next((c for c in ("image", "img") if c in cols), None)
        self.label_key = next((c for c in ("label", "labels", "fine_label") if c in cols), None)
        if self.image_key is None:
            raise ValueError(f"hf:{name} has columns {cols}; expected an `image` or `img` column")
        self.targets = torch.tensor(self.ds[self.label_key]) if self.label_key else torch.zeros(len(self.ds), dtype=torch.long)
        self.load_size, self.transform = round(image_size * 256 / 224), transform

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        row = self.ds[int(i)]
        label = int(row[self.label_key]) if self.label_key else 0
        if self.transform:
            return self.transform(row[self.image_key].convert("RGB")), label
        return _resize_short(_to_tensor(row[self.image_key]), self.load_size), label


class _Transformed(torch.utils.data.Dataset):
    def __init__(self, ds, transform):
        self.ds, self.transform, self.targets = ds, transform, ds.targets
        self.classes = getattr(ds, "classes", None)

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        x, y = self.ds[i]
        return self.transform(x), y

    def __getitems__(self, indices):  # the synthetic set renders a batch at once
        return [(self.transform(x), y) for x, y in self.ds.__getitems__(indices)]


def with_transform(ds: torch.utils.data.Dataset, transform) -> torch.utils.data.Dataset:
    """`ds` with its images put through `transform` (see the module docstring); `ds` is left as it is."""
    if isinstance(ds, (ImageFolderDataset, HFDataset)):
        out = copy.copy(ds)
        out.transform = transform
        return out
    return _Transformed(ds, transform)


def build_dataset(spec: str, split: str = "train", image_size: int = 224, seed: int = 0, *,
                  num_samples: int | None = None, transform=None, decode: str = "pil", **synthetic_args) -> torch.utils.data.Dataset:
    """See the module docstring. Every dataset has `.targets` (a label tensor) and `len()`."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    masks = synthetic_args.pop("masks", None)
    if spec == "synthetic":
        if masks not in (None, False, True):
            raise ValueError(f"the synthetic dataset renders its own masks: masks must be true or unset, got {masks!r}")
        ds = SyntheticShapes(split, image_size, seed, num_samples, with_masks=bool(masks), **synthetic_args)
        return with_transform(ds, transform) if transform else ds
    if masks is not None and not isinstance(masks, str):
        raise ValueError(f"--data {spec!r}: masks must name the mask folder (MASKS/CLASS/NAME.png), got {masks!r}")
    if masks is not None and spec.startswith("hf:"):
        raise ValueError(f"--data {spec!r}: hf datasets have no foreground masks here (use an ImageFolder and a "
                         f"mask folder, or the synthetic data)")
    if synthetic_args:
        raise ValueError(f"{sorted(synthetic_args)}: options of the synthetic dataset only, not of {spec!r}")
    if spec.startswith("hf:"):
        return HFDataset(spec[3:], split, image_size, transform)
    if not os.path.isdir(spec):
        raise FileNotFoundError(f"--data {spec!r}: not 'synthetic', 'hf:NAME' or an existing folder")
    sub = {"train": ["train"], "test": ["val", "test", "validation"]}[split]
    found = next((os.path.join(spec, s) for s in sub if os.path.isdir(os.path.join(spec, s))), None)
    if found is None:
        has_splits = any(os.path.isdir(os.path.join(spec, s)) for s in ("train", "val", "test"))
        if split == "test" or has_splits:
            raise FileNotFoundError(f"no {split} split under {spec!r} (looked for {sub})")
        found = spec
    if masks is not None:
        sub_masks = os.path.join(masks, os.path.relpath(found, spec)) if found != spec else masks
        masks = sub_masks if os.path.isdir(sub_masks) else masks
    return ImageFolderDataset(found, image_size, transform, decode, masks)


class SkipUnreadable(torch.utils.data.Dataset):
    """Items (image, label, index, skipped). An image that fails to load is replaced by the next
    readable one (index + 1, + 2, ...), `index` names the image actually returned and `skipped` counts
    the failures, so a corrupt file never stops an epoch and batches keep their size."""

    def __init__(self, ds, max_tries: int = 100):
        self.ds, self.max_tries = ds, max_tries
        self.targets = ds.targets

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        return self.__getitems__([i])[0]

    def __getitems__(self, indices):
        if hasattr(self.ds, "__getitems__"):  # batched datasets (synthetic) cannot fail per file
            return [(x, y, i, 0) for (x, y), i in zip(self.ds.__getitems__(indices), indices)]
        out = []
        for i in indices:
            for k in range(self.max_tries):
                j = (int(i) + k) % len(self.ds)
                try:
                    x, y = self.ds[j]
                    out.append((x, y, j, k))
                    break
                except Exception as e:  # noqa: BLE001 - any decoding error; counted, then substituted
                    if not isinstance(e, (OSError, ValueError, SyntaxError, RuntimeError)):
                        raise
            else:
                raise RuntimeError(f"{self.max_tries} consecutive unreadable images from index {i}")
        return out


def collate(items) -> dict:
    """Batch of SkipUnreadable items: images stacked when they share a size, else kept as a list."""
    images = [it[0] for it in items]
    same = all(im.shape == images[0].shape for im in images)
    return {"images": torch.stack(images) if same else images,
            "labels": torch.tensor([it[1] for it in items]),
            "index": torch.tensor([it[2] for it in items]),
            "skipped": sum(it[3] for it in items)}
