"""Building clzoo encoders: timm's `build_model_with_cfg` with clzoo's weight sources and checks.

The only things added to timm's builder are (a) resolving the weight file through
`clzoo._pretrained` (local file, Hub, official URL/mirror, conversion cache) before timm loads it,
and (b) a key/shape check that names what does not fit, instead of a bare strict-load failure.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional

import torch
import torch.nn as nn
from timm.models import build_model_with_cfg
from timm.models._builder import resolve_pretrained_cfg

__all__ = ["build_encoder", "CheckpointMismatchError", "check_state_dict"]


class CheckpointMismatchError(RuntimeError):
    """A checkpoint whose keys or shapes do not fit the model it is loaded into."""


def _fmt_list(items, limit: int = 12) -> str:
    """All items when few; otherwise grouped by their first component ('blocks.* (144)')."""
    items = list(items)
    if len(items) <= limit:
        return ", ".join(items)
    groups: Dict[str, list] = {}
    for item in items:
        groups.setdefault(item.split(".", 1)[0], []).append(item)
    parts = [g[0] if len(g) == 1 else f"{head}.* ({len(g)})" for head, g in groups.items()]
    shown = ", ".join(parts[:limit])
    return shown + (f", ... ({len(parts) - limit} more groups)" if len(parts) > limit else "")


def _input_conv_adaptable(key: str, ckpt_shape, model_shape, first_convs) -> bool:
    """timm adapts the first conv to another in_chans after this check (only the input-channel dim differs)."""
    return (any(key == f"{c}.weight" for c in first_convs) and len(ckpt_shape) == len(model_shape) == 4
            and ckpt_shape[0] == model_shape[0] and ckpt_shape[2:] == model_shape[2:])


def check_state_dict(state_dict: Dict[str, torch.Tensor], model: nn.Module, name: str = "",
                     ignore_missing=(), first_convs=()) -> None:
    """Raise CheckpointMismatchError naming missing/unexpected keys and shape differences."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict and not k.endswith("num_batches_tracked")
               and not any(k.startswith(p) for p in ignore_missing)]
    unexpected = [k for k in state_dict if k not in expected]
    shapes = [f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
              for k, v in expected.items() if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
              and not _input_conv_adaptable(k, tuple(state_dict[k].shape), tuple(v.shape), first_convs)]
    if not (missing or unexpected or shapes):
        return
    model_desc = f"{name} ({type(model).__name__})" if name else type(model).__name__
    lines = [f"The checkpoint does not fit {model_desc}."]
    if missing:
        lines.append(f"Missing keys ({len(missing)}): {_fmt_list(missing)}")
    if unexpected:
        lines.append(f"Unexpected keys ({len(unexpected)}): {_fmt_list(unexpected)}")
    if shapes:
        more = f"; ... ({len(shapes) - 6} more)" if len(shapes) > 6 else ""
        lines.append(f"Shape mismatches ({len(shapes)}): " + "; ".join(shapes[:6]) + more)
    lines.append("Is it a checkpoint of another method or architecture (e.g. another width, depth or patch "
                 "size)? `clzoo info NAME` shows each entry's expected format; `clzoo list` lists entries.")
    raise CheckpointMismatchError("\n".join(lines))


def _names(value: Any) -> tuple:
    return (value,) if isinstance(value, str) else tuple(value or ())


def _checked_filter(filter_fn: Optional[Callable], name: str, classifier: Any, first_conv: Any):
    def fn(state_dict, model):
        if filter_fn is not None:
            state_dict = filter_fn(state_dict, model)
        check_state_dict(state_dict, model, name, ignore_missing=tuple(c + "." for c in _names(classifier)),
                         first_convs=_names(first_conv))
        return state_dict
    return fn


def build_encoder(model_cls: Callable[..., nn.Module], variant: str, pretrained: bool = False, *,
                  filter_fn: Optional[Callable] = None, feature_cfg: Optional[Dict[str, Any]] = None,
                  pretrained_cfg=None, pretrained_cfg_overlay=None, cache_dir=None, **kwargs) -> nn.Module:
    """`timm.models.build_model_with_cfg`, with the weight file resolved by clzoo first."""
    from ._pretrained import resolve_weights
    from ._registry import _weights, weights_format_of

    cfg = resolve_pretrained_cfg(variant, pretrained_cfg=pretrained_cfg,
                                 pretrained_cfg_overlay=pretrained_cfg_overlay)
    name = f"{variant}.{cfg.tag}" if cfg.tag else variant
    if name in _weights:  # the architecture these weights were trained with; explicit kwargs still win
        kwargs = dict(_weights[name].model_args, **kwargs)
    if pretrained:
        cfg = resolve_weights(cfg, weights_format_of(name), name, cache_dir=cache_dir)
    return build_model_with_cfg(
        model_cls, variant, pretrained,
        pretrained_cfg=cfg,
        pretrained_filter_fn=_checked_filter(filter_fn, name, cfg.classifier, cfg.first_conv),
        feature_cfg=feature_cfg,
        cache_dir=cache_dir,
        **kwargs,
    )
