"""Self-attention maps of ViT encoders, as DINO's `visualize_attention.py` shows them.

    maps = clzoo.attention_maps(model, x)        # (B, heads, H/p, W/p): last block, [CLS] query, per head
    masks = clzoo.attention_masks(maps, 0.6)     # the top patches that hold 60 % of each map's mass
    roll = clzoo.attention_rollout(model, x)     # (B, H/p, W/p): attention rollout over all blocks

timm's fused attention (`F.scaled_dot_product_attention`) never materialises the softmax, so hooks on
`attn.softmax`/`attn_drop` see nothing. The weights are computed here from the blocks' own layers instead:
a forward pre-hook records each block's input tokens during one ordinary forward, then the block's
`norm1`, `attn.qkv`, `q_norm`/`k_norm` and `scale` give softmax(q kᵀ · scale) — the same numbers the
unfused path computes. Nothing global is switched (`fused_attn` flags, timm config, grad mode outside the
call); module train/eval modes are restored; the hooks are removed even on error.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence, Union

import torch
import torch.nn as nn

from ._io import atomic_write

__all__ = ["attention_maps", "attention_rollout", "attention_masks", "save_attention_figure"]


def _check_vit(model: nn.Module) -> None:
    blocks = getattr(model, "blocks", None)
    if not (blocks is not None and len(blocks) and hasattr(model, "patch_embed")
            and hasattr(blocks[-1], "norm1") and hasattr(getattr(blocks[-1], "attn", None), "qkv")):
        raise TypeError(f"attention maps need a timm VisionTransformer (blocks with norm1 and attn.qkv); got "
                        f"{type(model).__name__}. A features_only model wraps a pruned ViT: pass a plain one.")


def _block_inputs(model: nn.Module, x: torch.Tensor, blocks: Sequence[nn.Module]) -> List[torch.Tensor]:
    """The input tokens (B, N, C) of each of `blocks` during one forward of `model` (eval mode, no grad)."""
    seen = {}
    handles = [blk.register_forward_pre_hook(lambda mod, args, i=i: seen.__setitem__(i, args[0]))
               for i, blk in enumerate(blocks)]
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with torch.no_grad():
            model.forward_features(x)
    finally:
        for h in handles:
            h.remove()
        for m, mode in modes.items():
            m.training = mode
    return [seen[i] for i in range(len(blocks))]


def _softmax_attention(block: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """softmax(q kᵀ · scale) of `block` on its input tokens: (B, heads, N, N)."""
    attn = block.attn
    B, N, _ = tokens.shape
    heads = attn.num_heads
    with torch.no_grad():
        qkv = attn.qkv(block.norm1(tokens))
        head_dim = qkv.shape[-1] // (3 * heads)
        q, k, _ = qkv.reshape(B, N, 3, heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        q, k = attn.q_norm(q), attn.k_norm(k)
        return ((q * attn.scale) @ k.transpose(-2, -1)).softmax(dim=-1)


def _grid(model: nn.Module, x: torch.Tensor, num_patches: int):
    pe = model.patch_embed
    h, w = pe.dynamic_feat_size(tuple(x.shape[-2:])) if hasattr(pe, "dynamic_feat_size") else pe.grid_size
    if h * w != num_patches:
        raise ValueError(f"{num_patches} patch tokens do not form the {h}x{w} grid of a {tuple(x.shape[-2:])} "
                         "input")
    return h, w


def attention_maps(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The last block's attention of the [CLS] query over the patches, per head: (B, heads, H/p, W/p).

    Each head's map sums to 1 minus the attention [CLS] pays to the prefix tokens ([CLS], registers).
    `x` is a preprocessed batch at a size the model accepts (built `img_size`, or any multiple of the
    patch size with `dynamic_img_size=True`).
    """
    _check_vit(model)
    last = model.blocks[-1]
    attn = _softmax_attention(last, _block_inputs(model, x, [last])[0])
    prefix = getattr(model, "num_prefix_tokens", 1)
    cls = attn[:, :, 0, prefix:]
    h, w = _grid(model, x, cls.shape[-1])
    return cls.reshape(*cls.shape[:2], h, w)


def attention_rollout(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Attention rollout (Abnar & Zuidema, ACL 2020): the product over blocks of the head-averaged attention
    mixed half-and-half with the identity (the residual path); the [CLS] row over patches, (B, H/p, W/p)."""
    _check_vit(model)
    blocks = list(model.blocks)
    inputs = _block_inputs(model, x, blocks)
    rollout = None
    for blk, tokens in zip(blocks, inputs):
        a = _softmax_attention(blk, tokens).mean(dim=1)
        a = 0.5 * a + 0.5 * torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
        rollout = a if rollout is None else a @ rollout
    prefix = getattr(model, "num_prefix_tokens", 1)
    cls = rollout[:, 0, prefix:]
    h, w = _grid(model, x, cls.shape[-1])
    return cls.reshape(cls.shape[0], h, w)


def attention_masks(maps: torch.Tensor, mass: float = 0.6) -> torch.Tensor:
    """Boolean masks of the fewest highest-attention patches whose attention adds up to at least `mass` of
    each map's total (DINO's `--threshold`). `maps` is (..., h, w); each (h, w) map is treated alone."""
    if not 0.0 < mass <= 1.0:
        raise ValueError(f"mass must be in (0, 1], got {mass}")
    flat = maps.flatten(-2).float()
    values, order = flat.sort(dim=-1)
    cumulative = (values / values.sum(dim=-1, keepdim=True)).cumsum(dim=-1)
    keep_sorted = cumulative > 1.0 - mass
    mask = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
    return mask.reshape(maps.shape)


def save_attention_figure(path: Union[str, Path], image: torch.Tensor, maps: torch.Tensor, mass: float = 0.6,
                          rollout: Optional[torch.Tensor] = None, title: str = "") -> Path:
    """A PNG grid: the image, each head's map, their mean, and the mean map's mask keeping `mass` of the
    attention overlaid on the image (and the rollout, if given).

    Args:
        image: (3, H, W) in [0, 1], as the model saw it (before normalisation).
        maps: (heads, h, w) from `attention_maps`; shown upsampled (nearest) to the image, as DINO does.
    """
    import torch.nn.functional as F
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    H, W = image.shape[-2:]
    up = lambda m: F.interpolate(m[None, None].float(), size=(H, W), mode="nearest")[0, 0]  # noqa: E731
    img = image.permute(1, 2, 0).clamp(0, 1).cpu().numpy()
    mean = maps.mean(dim=0)
    mask = up(attention_masks(mean, mass).float()).cpu().numpy()
    overlay = img * (0.35 + 0.65 * mask[..., None])
    overlay[..., 0] = overlay[..., 0] * (1 - 0.4 * mask) + 0.4 * mask  # tint the kept region red

    panels = [("image", img, None)]
    panels += [(f"head {i}", up(m).cpu().numpy(), "viridis") for i, m in enumerate(maps)]
    panels += [("mean of heads", up(mean).cpu().numpy(), "viridis"),
               (f"mask: {mass:.0%} of mass", overlay, None)]
    if rollout is not None:
        panels.append(("rollout", up(rollout).cpu().numpy(), "viridis"))
    cols = min(len(panels), 6)
    rows = -(-len(panels) // cols)
    fig = Figure(figsize=(2.2 * cols, 2.35 * rows + (0.3 if title else 0)), dpi=100)
    FigureCanvasAgg(fig)
    for i, (name, data, cmap) in enumerate(panels):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.imshow(data, cmap=cmap, interpolation="nearest")
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    # matplotlib reads the format from the name, which the temp file does not carry
    atomic_write(path, lambda f: fig.savefig(f, format=path.suffix.lstrip(".").lower() or None))
    return path
