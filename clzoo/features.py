"""Downstream use of the encoders: loading one for inference, pooled embeddings of images (resumable on
large folders, file names kept with the rows), and ViTDet's simple feature pyramid for FPN-style necks.

    model = clzoo.load_encoder("dino_vits16")                      # or a run dir, or NAME + weights file
    emb = clzoo.extract_features(model, "photos/", batch_size=64)  # Embeddings(features, labels, names)
    emb = clzoo.extract_features(model, "photos/", out="feats.safetensors")  # resumable; clzoo.load_features
    pyr = clzoo.create_model("dino_vits16", features_only=True, feature_cls="pyramid")  # strides 4/8/16/32

Images get the model's own evaluation preprocessing (`timm.data.resolve_input_data_config`: the
release's resize, centre crop, interpolation and mean/std, at the input size the model was built for).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import torch
import torch.nn as nn

from ._io import atomic_write

__all__ = ["load_encoder", "data_config", "eval_transform", "list_images", "pooled_embedding",
           "extract_features", "load_features", "Embeddings", "SimpleFeaturePyramid"]

IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


# ---------------------------------------------------------------------------------------------
# Models and their preprocessing

def load_encoder(source: str, weights: Optional[Union[str, Path]] = None, pretrained: bool = True,
                 img_size: Optional[int] = None, **kwargs: Any) -> nn.Module:
    """An encoder in eval mode, from what a user names on a command line.

    Args:
        source: a clzoo or timm name (its pretrained weights), a training run directory
            (`model.safetensors` + timm `config.json`, loaded as `local-dir:`), or `local-dir:`/`hf-hub:`.
        weights: a checkpoint file for the architecture `source` names: timm-layout safetensors, or the
            entry's official format (converted as `pretrained_cfg_overlay=dict(file=...)` does).
        pretrained: False builds `source`'s architecture with random weights.
        img_size: input size; ViTs are built for it (position embedding resampled), and every model's
            preprocessing is set to it.
        **kwargs: more `clzoo.create_model` kwargs; `num_classes` defaults to 0 (pooled embedding).
    """
    from ._factory import create_model

    kwargs.setdefault("num_classes", 0)
    if weights is not None:
        if not os.path.isfile(weights):
            raise FileNotFoundError(f"weights file {str(weights)!r} does not exist")
        if os.path.isdir(source):
            raise ValueError(f"{source!r} is a run directory, which carries its own weights; pass --weights "
                             "only with an architecture name")
        kwargs["pretrained_cfg_overlay"] = dict(kwargs.get("pretrained_cfg_overlay") or {}, file=str(weights))
        pretrained = True
    elif os.path.isdir(source):
        source = "local-dir:" + source
    elif os.path.isfile(source):
        raise ValueError(f"{source!r} is a file: pass it as weights (--weights FILE) together with the "
                         "architecture it belongs to (--model ARCH)")
    if img_size is not None:
        try:
            model = create_model(source, pretrained=pretrained, img_size=img_size, **kwargs)
        except TypeError as e:  # architectures without an input size (ResNets) refuse the kwarg
            if "img_size" not in str(e):
                raise
            model = create_model(source, pretrained=pretrained, **kwargs)
        model.pretrained_cfg = dict(model.pretrained_cfg, input_size=(3, img_size, img_size))
    else:
        model = create_model(source, pretrained=pretrained, **kwargs)
    model.clzoo_weights = str(weights) if weights is not None else ("pretrained" if pretrained else "random init")
    return model.eval()


def data_config(model: nn.Module) -> Dict[str, Any]:
    """The model's evaluation preprocessing: `resolve_model_data_config`, at the size the model was built for."""
    try:
        from timm.data import resolve_input_data_config
    except ImportError:  # timm < 1.0.31
        from timm.data import resolve_model_data_config as resolve_input_data_config
    return resolve_input_data_config(model)


class _AnyImage:
    """Applies a PIL transform to PIL images and to uint8 (C, H, W) tensors alike."""

    def __init__(self, transform: Callable):
        self.transform = transform

    def __call__(self, img):
        if isinstance(img, torch.Tensor):
            from torchvision.transforms.functional import to_pil_image
            img = to_pil_image(img)
        if img.mode != "RGB":
            img = img.convert("RGB")
        return self.transform(img)

    def __repr__(self):
        return repr(self.transform)


def eval_transform(model_or_config: Union[nn.Module, Dict[str, Any]]) -> Callable:
    """timm's eval transform for the model's data config (resize, centre crop, to tensor, normalise);
    accepts PIL images and uint8 (C, H, W) tensors."""
    from timm.data import create_transform
    cfg = model_or_config if isinstance(model_or_config, dict) else data_config(model_or_config)
    return _AnyImage(create_transform(**cfg, is_training=False))


def pooled_embedding(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The model's pooled embedding (its own global pool, before any classifier): what `model(x)` returns
    with num_classes=0."""
    if hasattr(model, "forward_features") and hasattr(model, "forward_head"):
        return model.forward_head(model.forward_features(x), pre_logits=True)
    return model(x)


# ---------------------------------------------------------------------------------------------
# Inputs

def list_images(root: Union[str, Path]) -> List[str]:
    """Image files under `root` (recursive, links followed), as sorted paths relative to `root`."""
    root = str(root)
    if not os.path.isdir(root):
        raise FileNotFoundError(f"{root!r} is not a directory")
    found = []
    for dirpath, dirnames, files in os.walk(root, followlinks=True):
        dirnames.sort()
        found += [os.path.relpath(os.path.join(dirpath, f), root) for f in files
                  if f.lower().endswith(IMG_EXTENSIONS)]
    if not found:
        raise FileNotFoundError(f"no images with extensions {IMG_EXTENSIONS} under {root!r}")
    return sorted(found)


class _Items(torch.utils.data.Dataset):
    """Uniform items (model-ready tensor, label or -1) over every input `extract_features` takes."""

    def __init__(self, data, transform: Callable, root: Optional[str] = None):
        self.data, self.transform, self.root = data, transform, root

    def __len__(self):
        return len(self.data)

    def _prepare(self, img):
        if isinstance(img, torch.Tensor) and img.is_floating_point():
            return img  # already preprocessed
        return self.transform(img)

    def __getitem__(self, i):
        item = self.data[i]
        if isinstance(item, (str, Path)):
            from PIL import Image
            path = os.path.join(self.root, item) if self.root else str(item)
            try:
                with Image.open(path) as img:
                    return self.transform(img.convert("RGB")), -1
            except OSError as e:
                raise OSError(f"cannot read image {path!r}: {e}") from e
        if isinstance(item, (tuple, list)):
            return self._prepare(item[0]), int(item[1]) if len(item) > 1 else -1
        return self._prepare(item), -1


def _as_items(data, transform: Callable):
    """(dataset of items, names or None, whether labels come with the data)."""
    if isinstance(data, (str, Path)):
        names = list_images(data)
        return _Items(names, transform, root=str(data)), names, False
    if isinstance(data, torch.Tensor):
        if data.ndim != 4:
            raise ValueError(f"a tensor of images must be (N, C, H, W), got shape {tuple(data.shape)}")
        return _Items(data, transform), None, False
    if isinstance(data, (list, tuple)) and data and isinstance(data[0], (str, Path)):
        return _Items([str(p) for p in data], transform), [str(p) for p in data], False
    if isinstance(data, torch.utils.data.Dataset) or isinstance(data, (list, tuple)):
        if len(data) == 0:
            raise ValueError("no images to extract")
        first = data[0]
        labelled = isinstance(first, (tuple, list)) and len(first) > 1
        names = None
        samples = getattr(data, "samples", None)  # torchvision ImageFolder: (path, label) rows
        if isinstance(samples, list) and len(samples) == len(data) and isinstance(samples[0], (tuple, list)):
            root = str(getattr(data, "root", ""))
            names = [os.path.relpath(s[0], root) if root else s[0] for s in samples]
        return _Items(data, transform), names, labelled
    raise TypeError(f"cannot extract features from {type(data).__name__}: pass a folder, a list of image "
                    "paths, a (N, C, H, W) tensor, or a Dataset of images or (image, label) pairs")


# ---------------------------------------------------------------------------------------------
# Embeddings and their files

@dataclass
class Embeddings:
    """Rows of `features` (N, D) go with `labels` (N,) and `names` (N file names) where known."""
    features: torch.Tensor
    labels: Optional[torch.Tensor] = None
    names: Optional[List[str]] = None
    metadata: Dict[str, str] = field(default_factory=dict)

    def __len__(self):
        return self.features.shape[0]

    def save(self, path: Union[str, Path]) -> Path:
        """A safetensors file: `features`, `labels`, `names` (UTF-8 bytes, one name a line) + metadata."""
        from safetensors.torch import save_file
        tensors = {"features": self.features.contiguous()}
        if self.labels is not None:
            tensors["labels"] = self.labels.contiguous()
        if self.names is not None:
            if any("\n" in n for n in self.names):
                raise ValueError("file names with a line break cannot be stored")
            tensors["names"] = torch.frombuffer(bytearray("\n".join(self.names).encode()), dtype=torch.uint8)
        path = Path(path)
        with atomic_write(path) as tmp:
            save_file(tensors, str(tmp), metadata={k: str(v) for k, v in self.metadata.items()})
        return path


def load_features(path: Union[str, Path]) -> Embeddings:
    """Read a file written by `extract_features(..., out=...)` / `clzoo extract` / `Embeddings.save`."""
    from safetensors import safe_open
    with safe_open(str(path), framework="pt") as f:
        keys = set(f.keys())
        names = None
        if "names" in keys:
            raw = bytes(f.get_tensor("names").numpy())
            names = raw.decode().split("\n") if raw else [""]
        return Embeddings(f.get_tensor("features"), f.get_tensor("labels") if "labels" in keys else None,
                          names, dict(f.metadata() or {}))


def _fingerprint(model: nn.Module) -> str:
    """Cheap identity of a model's weights, so a resumed extraction never mixes two models."""
    total = torch.zeros((), dtype=torch.float64)
    for i, t in enumerate(model.state_dict().values()):
        if t.is_floating_point():
            total += t.detach().double().sum().cpu() * (1 + (i % 7))
    return f"{type(model).__name__}:{sum(p.numel() for p in model.parameters())}:{total.item():.12e}"


# ---------------------------------------------------------------------------------------------
# Extraction

@torch.no_grad()
def _embed_range(model, items, indices, batch_size, num_workers, forward_fn, device, bar):
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(items, indices), batch_size=batch_size,
                                         num_workers=num_workers, shuffle=False)
    feats, labels = [], []
    for x, y in loader:
        out = forward_fn(model, x.to(device))
        feats.append(out.float().cpu())
        labels.append(y)
        bar.update(x.shape[0])
    return torch.cat(feats), torch.cat(labels)


def extract_features(
        model: nn.Module,
        data,
        batch_size: int = 64,
        *,
        transform: Optional[Callable] = None,
        forward_fn: Callable[[nn.Module, torch.Tensor], torch.Tensor] = pooled_embedding,
        num_workers: int = 0,
        out: Optional[Union[str, Path]] = None,
        chunk_size: int = 10_000,
        progress: bool = True,
) -> Embeddings:
    """Pooled embeddings of images, in order, with the model's own preprocessing.

    Args:
        model: a clzoo/timm encoder; it runs in eval mode on its own device (its mode is restored).
        data: a folder (images found recursively, names = paths relative to it), a list of image paths,
            a (N, C, H, W) tensor, or a Dataset of images or (image, label) pairs. PIL images and uint8
            tensors get `transform`; float tensors are taken as already preprocessed.
        transform: defaults to `eval_transform(model)`.
        forward_fn: (model, batch) -> (B, D); default the pooled embedding. The linear-probe protocols pass
            e.g. DINO's concatenated [CLS] tokens of the last 4 blocks.
        out: also write a safetensors file there (`load_features` reads it). The work is saved in chunks of
            `chunk_size` images under `OUT.parts/`; a rerun with the same images and model resumes
            after the last finished chunk and the parts are removed once `out` is complete.
        progress: a tqdm progress bar.
    """
    from tqdm.auto import tqdm

    transform = transform or eval_transform(model)
    items, names, labelled = _as_items(data, transform)
    n = len(items)
    device = next(model.parameters()).device
    meta = {"num_images": str(n), "model": _describe(model), "preprocessing": repr(transform),
            "forward": getattr(forward_fn, "__name__", repr(forward_fn))}
    modes = {m: m.training for m in model.modules()}
    model.eval()
    bar = tqdm(total=n, desc="extracting", unit="img", disable=not progress)
    try:
        if out is None:
            feats, labels = _embed_range(model, items, list(range(n)), batch_size, num_workers, forward_fn,
                                         device, bar)
        else:
            feats, labels = _extract_resumable(model, items, names, meta, Path(out), batch_size, num_workers,
                                               forward_fn, device, bar, chunk_size)
    finally:
        bar.close()
        for m, mode in modes.items():
            m.training = mode
    emb = Embeddings(feats, labels if labelled else None, names, meta)
    if out is not None:
        emb.save(out)
        parts = Path(str(out) + ".parts")
        for p in parts.glob("*"):
            p.unlink()
        if parts.is_dir():
            parts.rmdir()
    return emb


def _describe(model: nn.Module) -> str:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    name = cfg.get("architecture") or type(model).__name__
    weights = getattr(model, "clzoo_weights", "pretrained")  # set by load_encoder
    if weights == "pretrained":
        return f"{name}.{cfg['tag']}" if cfg.get("tag") else name
    return f"{name} ({weights})"


def _extract_resumable(model, items, names, meta, out: Path, batch_size, num_workers, forward_fn, device, bar,
                       chunk_size):
    from safetensors.torch import load_file, save_file

    parts = Path(str(out) + ".parts")
    n = len(items)
    identity = dict(meta, weights=_fingerprint(model), chunk_size=chunk_size,
                    names=hashlib.sha256("\n".join(names or []).encode()).hexdigest())
    manifest = parts / "manifest.json"
    if parts.is_dir():
        try:
            same = json.loads(manifest.read_text()) == identity
        except (OSError, ValueError):
            same = False
        if not same:
            print(f"{parts}: left by an extraction of other images, model or settings; starting again")
            for p in parts.glob("*"):
                p.unlink()
    parts.mkdir(parents=True, exist_ok=True)
    atomic_write(manifest, lambda f: f.write(json.dumps(identity, indent=1).encode()))

    feats, labels = [], []
    for start in range(0, n, chunk_size):
        stop = min(start + chunk_size, n)
        part = parts / f"{start:010d}.safetensors"
        if part.exists():
            saved = load_file(str(part))
            bar.update(stop - start)
        else:
            f, y = _embed_range(model, items, list(range(start, stop)), batch_size, num_workers, forward_fn,
                                device, bar)
            saved = {"features": f.contiguous(), "labels": y.contiguous()}
            with atomic_write(part) as tmp:
                save_file(saved, str(tmp))
        feats.append(saved["features"])
        labels.append(saved["labels"])
    return torch.cat(feats), torch.cat(labels)


# ---------------------------------------------------------------------------------------------
# ViTDet simple feature pyramid

def _upsample_path(dim: int, doublings: int) -> nn.Sequential:
    """`doublings` stride-2 transposed convs, halving the channels each time (LayerNorm + GELU between)."""
    from timm.layers import LayerNorm2d
    layers: List[nn.Module] = []
    for i in range(doublings):
        if i:
            layers += [LayerNorm2d(dim), nn.GELU()]
        layers.append(nn.ConvTranspose2d(dim, dim // 2, kernel_size=2, stride=2))
        dim //= 2
    return nn.Sequential(*layers)


class SimpleFeaturePyramid(nn.Module):
    """ViTDet's simple feature pyramid (Li, Mao, Girshick, He, ECCV 2022, §3 and Fig. 2c) on a timm ViT.

    The last block's patch tokens, as an (N, C, H/p, W/p) map, are rescaled to each stride: stride-2
    transposed convs up (C/2 channels per doubling), max-pooling down, identity at the patch size; each level
    then gets a 1x1 and a 3x3 conv (no bias, LayerNorm after each) to `out_channels`. The pyramid layers
    are new (randomly initialised, for a detector/segmenter to train); the ViT keeps its weights.

    Built by `clzoo.create_model(name, features_only=True, feature_cls="pyramid")` (or with this class as
    `feature_cls`); `out_indices` picks levels of `strides` (timm convention: int n = last n levels).
    """

    def __init__(self, model: nn.Module, out_indices: Union[int, Sequence[int]] = (0, 1, 2, 3),
                 out_channels: int = 256, strides: Sequence[int] = (4, 8, 16, 32), output_fmt: str = "NCHW"):
        super().__init__()
        from timm.layers import LayerNorm2d
        from timm.models._features import FeatureInfo, feature_take_indices

        if not (hasattr(model, "forward_intermediates") and hasattr(model, "patch_embed")
                and hasattr(model, "blocks")):
            raise TypeError(f"the simple feature pyramid is built on a ViT; {type(model).__name__} is not one "
                            "(ResNets give strides 4-32 with features_only=True, out_indices=(1, 2, 3, 4))")
        if output_fmt != "NCHW":
            raise ValueError("the simple feature pyramid returns NCHW maps")
        patch = model.patch_embed.patch_size
        patch = patch[0] if isinstance(patch, (tuple, list)) else patch
        take, _ = feature_take_indices(len(strides), out_indices)
        model.prune_intermediate_layers(1, prune_norm=True, prune_head=True)  # ViTDet uses the raw last block
        self.model = model
        dim = model.embed_dim
        self.levels = nn.ModuleList()
        info = []
        for i in take:
            scale = patch / strides[i]
            doublings = round(math.log2(scale))
            if scale != 2.0 ** doublings:
                raise ValueError(f"stride {strides[i]} is not the patch size {patch} times a power of 2")
            if doublings >= 0:
                resample, chs = _upsample_path(dim, doublings), dim // 2 ** doublings
            else:
                resample, chs = nn.MaxPool2d(2 ** -doublings), dim
            self.levels.append(nn.Sequential(
                resample,
                nn.Conv2d(chs, out_channels, 1, bias=False), LayerNorm2d(out_channels),
                nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False), LayerNorm2d(out_channels)))
            info.append(dict(num_chs=out_channels, reduction=strides[i], module=f"levels.{len(info)}"))
        self.feature_info = FeatureInfo(info, tuple(range(len(info))))
        self.out_indices = tuple(take)

    def forward(self, x: torch.Tensor) -> List[torch.Tensor]:
        last = self.model.forward_intermediates(x, indices=1, output_fmt="NCHW", intermediates_only=True)[-1]
        return [level(last) for level in self.levels]
