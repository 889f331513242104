"""`clzoo.create_model`: clzoo names and aliases, plain timm names, and timm's hf-hub:/local-dir: sources."""

from __future__ import annotations

import difflib
from typing import Any

import timm
import torch.nn as nn
from timm.models import parse_model_name

from ._registry import UnknownModelError, _all_names, is_clzoo_model, resolve_name

__all__ = ["create_model"]


def create_model(model_name: str, pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """Create an encoder; returns a timm model.

    Args:
        model_name: a clzoo name `{method}_{backbone}[.{tag}]` (e.g. "mocov2_resnet50.800ep"), an alias
            timm users know (e.g. "vit_small_patch16_224.dino"), any timm architecture (e.g. "resnet18"),
            or a timm source: "hf-hub:ORG/NAME", "local-dir:PATH" (e.g. a training run directory).
        pretrained: load weights: an explicit file (pretrained_cfg_overlay=dict(file=...)), else the entry's
            Hugging Face Hub id, else its official URL (or $CLZOO_MIRROR), converted and cached once.
        **kwargs: timm kwargs (num_classes, global_pool, features_only, out_indices, img_size, in_chans,
            drop_path_rate, pretrained_cfg_overlay, cache_dir, ...). `num_classes` defaults to 0 so the
            model returns its pooled embedding. `features_only=True, feature_cls="pyramid"` gives a ViT's
            simple feature pyramid (`clzoo.features.SimpleFeaturePyramid`).
    """
    if kwargs.get("feature_cls") == "pyramid":  # ViTDet's simple feature pyramid, strides 4/8/16/32
        from .features import SimpleFeaturePyramid
        kwargs["feature_cls"] = SimpleFeaturePyramid
        kwargs.setdefault("out_indices", (0, 1, 2, 3))
    source, _ = parse_model_name(model_name)
    if source is None:
        if is_clzoo_model(model_name):
            model_name = resolve_name(model_name)
        elif timm.is_model(model_name.split(".", 1)[0]):
            kwargs.setdefault("num_classes", 0)
        else:
            candidates = _all_names() + timm.list_models()
            close = difflib.get_close_matches(model_name, candidates, n=6, cutoff=0.6)
            msg = f"Unknown model {model_name!r}: neither a clzoo entry nor a timm architecture."
            if close:
                msg += " Did you mean: " + ", ".join(close) + "?"
            msg += " `clzoo list` shows clzoo's entries."
            raise UnknownModelError(msg)
    return timm.create_model(model_name, pretrained=pretrained, **kwargs)
