"""Architectures of the official SSL encoders, built from timm's own model classes.

Every encoder is a `timm.models.ResNet` or `timm.models.VisionTransformer` (CMC, two ResNets on
Lab colour channels, is the one exception, and still speaks timm's model API). What differs from
stock timm archs is only what the official checkpoints need to compute the same function:

* SSL wide ResNets (SwAV/SimCLR/PIRL/BYOL "R50-w2/w4/w5") widen *every* stage including the stem
  (64*w channels). timm hard-codes a 64-channel stem unless the stem is "deep", so the four
  modules that touch the stem are swapped after construction (checkpoints.md §1.4: loads SwAV
  w2/w4 strictly and reproduces SwAV's forward bit-exactly).
* TensorFlow/Haiku 'SAME' padding (checkpoints.md §1.7): SimCLR's TF1 ResNet pads convs
  symmetrically (as PyTorch does) but max-pools with 'SAME'; BYOL's Haiku ResNet uses 'SAME' for
  every strided conv and the max-pool. Parameter names do not change.
* MoCo v3 ViTs: ViT-S uses 12 heads (timm/DeiT use 6); from scratch the position embedding is the
  fixed 2-D sin-cos table of moco-v3 `vits.py`.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import create_conv2d, create_pool2d
from timm.layers.selective_kernel import SelectiveKernelAttn
from timm.models import ResNet, VisionTransformer
from timm.models._features import feature_take_indices
from timm.models.resnet import BasicBlock, Bottleneck
from timm.models.sknet import SelectiveKernelBottleneck
from timm.models.vision_transformer import checkpoint_filter_fn as vit_checkpoint_filter_fn

from .._builder import build_encoder

__all__ = [
    "build_resnet", "build_sk_resnet", "build_vit", "build_mocov3_vit", "build_cmc",
    "CMCResNet", "rgb_to_lab", "rgb_to_ydbdr", "mocov3_sincos_pos_embed", "TFSameAvgPool2x2", "TFPaddedAvgPool2x2",
]

RESNET_LAYERS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3),
                 152: (3, 8, 36, 3), 200: (3, 24, 36, 3)}


def _widen_stem(model: ResNet, stem_chs: int, in_chans: int) -> None:
    """Give a (non-deep-stem) timm ResNet a `stem_chs`-wide stem, as the SSL wide ResNets have."""
    ref = model.conv1.weight
    dd = dict(device=ref.device, dtype=ref.dtype)
    block = model.layer1[0]
    model.conv1 = nn.Conv2d(in_chans, stem_chs, 7, stride=2, padding=3, bias=False, **dd)
    model.bn1 = type(model.bn1)(stem_chs, **dd)
    block.conv1 = nn.Conv2d(stem_chs, block.conv1.out_channels, 1, bias=False, **dd)
    if block.downsample is not None:
        old = block.downsample[0]
        block.downsample[0] = nn.Conv2d(stem_chs, old.out_channels, 1, stride=old.stride, bias=False, **dd)
    for conv in (model.conv1, block.conv1, block.downsample[0] if block.downsample is not None else None):
        if conv is not None and conv.weight.device.type != "meta":
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    model.feature_info[0]["num_chs"] = stem_chs


def _same_conv(conv: nn.Conv2d) -> nn.Module:
    """The same conv with TF 'SAME' (possibly asymmetric) padding; the weight is kept."""
    new = create_conv2d(conv.in_channels, conv.out_channels, conv.kernel_size[0], stride=conv.stride[0],
                        padding="same", bias=conv.bias is not None,
                        device=conv.weight.device, dtype=conv.weight.dtype)
    new.weight = conv.weight
    return new


def _tf_same_padding(model: ResNet, mode: str) -> None:
    """'maxpool': only the stem max-pool is 'SAME' (SimCLR TF1). 'all': every strided conv too (Haiku)."""
    if mode not in ("maxpool", "all"):
        raise ValueError(f"unknown same-padding mode {mode!r}")
    model.maxpool = create_pool2d("max", kernel_size=3, stride=2, padding="same")
    if mode == "all":
        model.conv1 = _same_conv(model.conv1)
        for name in ("layer2", "layer3", "layer4"):
            block = getattr(model, name)[0]
            block.conv2 = _same_conv(block.conv2)


class TFSameAvgPool2x2(nn.Module):
    """`tf.layers.average_pooling2d(pool_size=2, strides=1, padding='SAME')`.

    TF 'SAME' pads one row/column *after* the input and, for average pooling, leaves the padded
    positions out of the mean. SimCLR v2's ResNet-D shortcut applies it in the first block of the first
    group, where timm's `avg_down` has no pooling at all.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = F.avg_pool2d(F.pad(x, (0, 1, 0, 1)), 2, 1)
        valid = F.avg_pool2d(F.pad(torch.ones_like(x[:1, :1]), (0, 1, 0, 1)), 2, 1)
        return total / valid


class TFPaddedAvgPool2x2(nn.Module):
    """SimCLR's `fixed_padding(x, 2)` + 2x2/2 'VALID' average pool: one zero row/column after, counted.

    Equals timm's `AvgPool2d(2, 2, ceil_mode=True, count_include_pad=False)` on even sizes only.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(F.pad(x, (0, 1, 0, 1)), 2, 2)


def _tf_sk_blocks(model: ResNet, sk_ratio: float, min_dim: int = 32) -> None:
    """SimCLR v2 SK details: attention width max(int(C * sk_ratio), 32) per block (timm's make_divisible
    rounds 4..16 up to the divisor instead), and the TF pooling in the ResNet-D shortcuts."""
    for stage in (model.layer1, model.layer2, model.layer3, model.layer4):
        for block in stage:
            attn, channels = block.conv2.attn, block.conv2.paths[0].conv.out_channels
            ref = attn.fc_reduce.weight
            block.conv2.attn = SelectiveKernelAttn(channels, 2, max(int(channels * sk_ratio), min_dim),
                                                   device=ref.device, dtype=ref.dtype)
            if block.downsample is not None:
                pool = block.downsample[0]
                block.downsample[0] = TFSameAvgPool2x2() if isinstance(pool, nn.Identity) else TFPaddedAvgPool2x2()


def _make_resnet(*, width: int = 1, same_padding: Optional[str] = None, sk_ratio: Optional[float] = None,
                 **kwargs) -> ResNet:
    kwargs.setdefault("channels", tuple(c * width for c in (64, 128, 256, 512)))
    stem_chs = 64 * width
    if "deep" not in kwargs.get("stem_type", "") and "stem_width" in kwargs:
        stem_chs = kwargs.pop("stem_width")  # timm's plain 7x7 stem ignores stem_width: it is always 64 wide
    model = ResNet(**kwargs)
    if stem_chs != 64:
        _widen_stem(model, stem_chs, kwargs.get("in_chans", 3))
    if same_padding:
        _tf_same_padding(model, same_padding)
    if sk_ratio:
        _tf_sk_blocks(model, sk_ratio)
    return model


def build_resnet(variant: str, pretrained: bool = False, *, depth: int = 50, width: int = 1,
                 same_padding: Optional[str] = None, **kwargs) -> ResNet:
    """A torchvision-layout ResNet (stride on the 3x3 conv), widened as the SSL papers widen it."""
    model_args = dict(block=Bottleneck if depth >= 50 else BasicBlock, layers=RESNET_LAYERS[depth])
    model_cls = partial(_make_resnet, width=width, same_padding=same_padding)
    return build_encoder(model_cls, variant, pretrained, **dict(model_args, **kwargs))


def build_sk_resnet(variant: str, pretrained: bool = False, *, depth: int = 50, width: int = 1,
                    **kwargs) -> ResNet:
    """SimCLR v2 'sk1' ResNet (google-research/simclr resnet.py with sk_ratio 0.0625).

    ResNet-D: a deep stem of three 3x3 convs (32w, 32w, 64w) and average-pooled projection shortcuts,
    TF 'SAME' stem max-pool; Selective-Kernel 3x3 convs computed as one conv with 2x outputs (no input
    split, both paths 3x3 without dilation) and an attention of width max(int(filters / 16), 32).
    """
    sk_kwargs = dict(kernel_size=[3, 3], split_input=False)
    model_args = dict(
        block=SelectiveKernelBottleneck, layers=RESNET_LAYERS[depth], stem_width=32 * width,
        stem_type="deep", avg_down=True, channels=tuple(c * width for c in (64, 128, 256, 512)),
        block_args=dict(sk_kwargs=sk_kwargs), zero_init_last=False)
    model_cls = partial(_make_resnet, width=1, same_padding="maxpool", sk_ratio=0.0625)
    return build_encoder(model_cls, variant, pretrained, **dict(model_args, **kwargs))


def build_vit(variant: str, pretrained: bool = False, **kwargs) -> VisionTransformer:
    """A timm VisionTransformer; checkpoints are resampled to the requested img_size/patch grid."""
    out_indices = kwargs.pop("out_indices", 3)
    return build_encoder(
        VisionTransformer, variant, pretrained,
        filter_fn=vit_checkpoint_filter_fn,
        feature_cfg=dict(out_indices=out_indices, feature_cls="getter"),
        **kwargs)


def mocov3_sincos_pos_embed(grid_size: Tuple[int, int], dim: int, temperature: float = 10000.0,
                            num_prefix_tokens: int = 1) -> torch.Tensor:
    """moco-v3 `build_2d_sincos_position_embedding`: (1, prefix + h*w, dim), zeros at the prefix.

    Kept exactly as in moco-v3 (meshgrid 'ij' of (w, h), so the first half of the channels
    follows the slow index of the flattened grid).
    """
    h, w = grid_size
    if dim % 4:
        raise ValueError("embed_dim must be divisible by 4 for the 2-D sin-cos position embedding")
    grid_w, grid_h = torch.meshgrid(torch.arange(w, dtype=torch.float32),
                                    torch.arange(h, dtype=torch.float32), indexing="ij")
    pos_dim = dim // 4
    omega = 1.0 / (temperature ** (torch.arange(pos_dim, dtype=torch.float32) / pos_dim))
    out_w = torch.einsum("m,d->md", grid_w.flatten(), omega)
    out_h = torch.einsum("m,d->md", grid_h.flatten(), omega)
    pos = torch.cat([out_w.sin(), out_w.cos(), out_h.sin(), out_h.cos()], dim=1)[None]
    return torch.cat([torch.zeros(1, num_prefix_tokens, dim), pos], dim=1)


def build_mocov3_vit(variant: str, pretrained: bool = False, **kwargs) -> VisionTransformer:
    """MoCo v3 ViT: moco weight init and a fixed (non-trainable) 2-D sin-cos position embedding."""
    kwargs.setdefault("weight_init", "moco")
    model = build_vit(variant, pretrained, **kwargs)
    vit = getattr(model, "model", model)  # features_only wraps the model
    if not pretrained and isinstance(vit, VisionTransformer) and vit.pos_embed is not None:
        if vit.pos_embed.device.type != "meta":
            grid = vit.patch_embed.grid_size
            with torch.no_grad():
                vit.pos_embed.copy_(mocov3_sincos_pos_embed(grid, vit.embed_dim, num_prefix_tokens=vit.num_prefix_tokens))
        vit.pos_embed.requires_grad_(False)
    return model


# ---------------------------------------------------------------------------------------------
# CMC: two ResNets, one on L and one on ab of the Lab colour space (Tian et al., official repo).

# float64, cast to the input's dtype: float32 constants would be off by 1e-8 relative in a float64 conversion
# (5e-6 in a, b; the CMC step-parity test against skimage's conversion found it)
_XYZ_FROM_RGB = torch.tensor([[0.412453, 0.357580, 0.180423],
                              [0.212671, 0.715160, 0.072169],
                              [0.019334, 0.119193, 0.950227]], dtype=torch.float64)
_D65_WHITE = torch.tensor([0.95047, 1.0, 1.08883], dtype=torch.float64)
# CMC normalises L, a, b to about [-1, 1]: midpoints and half-ranges of L in [0, 100],
# a in [-86.183, 98.233], b in [-107.857, 94.478] (HobbitLong/CMC LinearProbing.py).
CMC_LAB_MEAN = (50.0, 6.025, -6.6895)
CMC_LAB_STD = (50.0, 92.208, 101.1675)
# PyContrast's CMC uses YDbDr (skimage.color.rgb2ydbdr) normalised with these (datasets/util.py).
_YDBDR_FROM_RGB = torch.tensor([[0.299, 0.587, 0.114], [-0.45, -0.883, 1.333], [-1.333, 1.116, 0.217]],
                               dtype=torch.float64)
CMC_YDBDR_MEAN = (0.457, -0.082, -0.052)
CMC_YDBDR_STD = (0.500, 1.331, 1.333)


def _compute_dtype(x: torch.Tensor) -> torch.Tensor:
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB in [0, 1], (B, 3, H, W) -> CIE Lab (D65), as skimage.color.rgb2lab computes it."""
    rgb = _compute_dtype(rgb)
    linear = torch.where(rgb > 0.04045, ((rgb + 0.055) / 1.055).pow(2.4), rgb / 12.92)
    xyz = torch.einsum("ij,bjhw->bihw", _XYZ_FROM_RGB.to(rgb), linear)
    xyz = xyz / _D65_WHITE.to(rgb).view(1, 3, 1, 1)
    f = torch.where(xyz > 0.008856, xyz.clamp_min(1e-12).pow(1 / 3), 7.787 * xyz + 16 / 116)
    fx, fy, fz = f.unbind(1)
    return torch.stack([116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)], dim=1)


def rgb_to_ydbdr(rgb: torch.Tensor) -> torch.Tensor:
    """RGB in [0, 1], (B, 3, H, W) -> YDbDr, as skimage.color.rgb2ydbdr computes it."""
    rgb = _compute_dtype(rgb)
    return torch.einsum("ij,bjhw->bihw", _YDBDR_FROM_RGB.to(rgb), rgb)


_COLOUR_SPACES = {"lab": (rgb_to_lab, CMC_LAB_MEAN, CMC_LAB_STD),
                  "ydbdr": (rgb_to_ydbdr, CMC_YDBDR_MEAN, CMC_YDBDR_STD)}


class CMCResNet(nn.Module):
    """CMC encoder: one ResNet per view of the colour space; features are concatenated (views x C).

    The default split is the official release's: `l_to_ab` sees L, `ab_to_l` sees ab. Takes RGB normalised
    with `input_mean` / `input_std` (default 0 / 1: RGB in [0, 1], as the pretrained cfg says, so timm's data
    config and transforms work unchanged) and converts to the normalised colour space inside. `colour="lab"`
    is the official CMC release; `colour="ydbdr"` is PyContrast's CMC, whose first branch (`l_to_ab` here,
    PyContrast's `encoder1`) sees Y and the second DbDr. `split` lists the colour channels of each view:
    ((0,), (1, 2)) is L | ab; ((0,), (1,), (2,)) is L | a | b, three views of the paper's full-graph and
    core-view settings (branches `view0`, `view1`, ...). `depth` 18 / 34 use timm's BasicBlock, as the official
    resnet18v1-v3 do; the stem stays 64 wide at every width, as in the official models/resnet.py. Feature maps
    of the branches are concatenated along channels, so `features_only` gives (B, views x C, H, W) per stage.
    """

    def __init__(self, width: float = 1.0, depth: int = 50, num_classes: int = 0, global_pool: str = "avg",
                 in_chans: int = 3, drop_rate: float = 0.0, colour: str = "lab", split=((0,), (1, 2)),
                 channels: Optional[Sequence[int]] = None, input_mean=(0.0, 0.0, 0.0), input_std=(1.0, 1.0, 1.0),
                 **kwargs):
        super().__init__()
        if in_chans != 3:
            raise ValueError("CMC takes RGB input (in_chans=3); it splits the colour space into views itself")
        if colour not in _COLOUR_SPACES:
            raise ValueError(f"unknown CMC colour space {colour!r}; one of {sorted(_COLOUR_SPACES)}")
        split = tuple(tuple(int(c) for c in group) for group in split)
        if len(split) < 2 or sorted(c for g in split for c in g) != sorted(set(c for g in split for c in g)) \
                or not all(0 <= c < 3 for g in split for c in g) or not all(split):
            raise ValueError(f"split must list >= 2 disjoint, non-empty groups of colour channels 0-2, got {split}")
        self.colour, self.split = colour, split
        self._to_colour, mean, std = _COLOUR_SPACES[colour]
        channels = tuple(int(c) for c in channels) if channels is not None else \
            tuple(int(c * width) for c in (64, 128, 256, 512))
        branch = dict(block=Bottleneck if depth >= 50 else BasicBlock, layers=RESNET_LAYERS[depth],
                      channels=channels, num_classes=0, global_pool="", **kwargs)
        self.branch_names = ["l_to_ab", "ab_to_l"] if split == ((0,), (1, 2)) else [f"view{i}" for i in range(len(split))]
        for name, group in zip(self.branch_names, split):
            setattr(self, name, ResNet(in_chans=len(group), **branch))
        self.register_buffer("lab_mean", torch.tensor(mean, dtype=torch.float64).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("lab_std", torch.tensor(std, dtype=torch.float64).view(1, 3, 1, 1), persistent=False)
        # float64 (cast to the input's dtype in split_views): float32 values of 0.485 etc. move a float64 Lab
        self.register_buffer("input_mean", torch.tensor(input_mean, dtype=torch.float64).view(1, 3, 1, 1),
                             persistent=False)
        self.register_buffer("input_std", torch.tensor(input_std, dtype=torch.float64).view(1, 3, 1, 1),
                             persistent=False)
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        first = self.branches[0]
        self.num_features = self.head_hidden_size = len(split) * first.num_features
        from timm.layers import create_classifier
        self.global_pool, self.fc = create_classifier(self.num_features, num_classes, pool_type=global_pool)
        self.feature_info = [dict(info, num_chs=len(split) * info["num_chs"]) for info in first.feature_info]

    @property
    def branches(self) -> List[ResNet]:
        return [getattr(self, name) for name in self.branch_names]

    def split_views(self, x: torch.Tensor) -> List[torch.Tensor]:
        """The input (RGB, normalised with input_mean / std) as the views' channel groups of the normalised
        colour space."""
        rgb = x * self.input_std.to(x) + self.input_mean.to(x)
        lab = (self._to_colour(rgb) - self.lab_mean.to(rgb)) / self.lab_std.to(rgb)
        return [lab[:, list(group)].to(x.dtype) for group in self.split]

    def forward_branches(self, x) -> List[torch.Tensor]:
        """Each view's pooled (B, C) feature, in split order (what CMC's per-view heads take). `x` is one crop,
        which every view splits, or a sequence of one crop per view: view i then takes its channels from
        crop i (two crops, each with its own colour jitter, as PyContrast's CMC feeds its two encoders)."""
        if isinstance(x, (list, tuple)):
            if len(x) != len(self.split):
                raise ValueError(f"{len(x)} crops for {len(self.split)} views: give one crop, or one per view")
            views = [self.split_views(crop)[i] for i, crop in enumerate(x)]
        else:
            views = self.split_views(x)
        return [b.forward_features(v).mean((2, 3)) for b, v in zip(self.branches, views)]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([b.forward_features(v) for b, v in zip(self.branches, self.split_views(x))], dim=1)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.global_pool(x)
        if self.drop_rate:
            x = F.dropout(x, p=float(self.drop_rate), training=self.training)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(self, x: torch.Tensor, indices: Optional[Union[int, List[int]]] = None,
                              norm: bool = False, stop_early: bool = False, output_fmt: str = "NCHW",
                              intermediates_only: bool = False):
        kw = dict(indices=indices, norm=norm, stop_early=stop_early, output_fmt=output_fmt)
        outs = [b.forward_intermediates(v, **kw) for b, v in zip(self.branches, self.split_views(x))]
        intermediates = [torch.cat(level, dim=1) for level in zip(*(inter for _, inter in outs))]
        if intermediates_only:
            return intermediates
        return torch.cat([out for out, _ in outs], dim=1), intermediates

    def prune_intermediate_layers(self, indices: Union[int, List[int]] = 1, prune_norm: bool = False,
                                  prune_head: bool = True):
        takes = [b.prune_intermediate_layers(indices, prune_norm, prune_head) for b in self.branches]
        if prune_head:
            self.reset_classifier(0, "")
        return takes[0]

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str = "avg") -> None:
        from timm.layers import create_classifier
        self.num_classes = num_classes
        self.global_pool, self.fc = create_classifier(self.num_features, num_classes, pool_type=global_pool)

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        for b in self.branches:
            b.set_grad_checkpointing(enable)


def build_cmc(variant: str, pretrained: bool = False, **kwargs) -> CMCResNet:
    return build_encoder(CMCResNet, variant, pretrained,
                         feature_cfg=dict(feature_cls="getter"), **kwargs)
