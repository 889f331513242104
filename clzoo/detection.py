"""The last step to a detector or segmenter: a clzoo encoder in the detection frameworks' layouts, and as a
torchvision detection backbone.

    clzoo export mocov2_resnet50 --to detectron2 --output mocov2_r50.pkl     # (CLI: clzoo/cli.py)
    export_backbone(model, "mmdet", "r50.pth");  export_backbone(model, "torchvision", "r50_tv.pth")
    FasterRCNN(clzoo.detection_backbone("mocov2_resnet50"), num_classes=91)

Formats (ResNets; timm's ResNet keys are torchvision's):
* detectron2: the `.pkl` of MoCo's detection/convert-pretrain-to-detectron2.py: {"model": {name: numpy array},
  "__author__", "matching_heuristics": True}, with stem / res2-res5 / convK.norm / shortcut names (detectron2
  matches them by suffix under backbone.bottom_up.). Pickled numpy arrays only: no torch class is imported
  when it loads.
* mmdet / mmseg: {"state_dict": {"backbone." + torchvision key: tensor}, "meta": {...}}, for
  `init_cfg=dict(type="Pretrained", checkpoint=FILE)` (mmdet's ResNet keeps torchvision's names); a timm ViT
  gets mmseg's `VisionTransformer` names (build it with `patch_bias=True, final_norm=True`).
* torchvision: the state dict of torchvision.models.resnet{18,34,50,101,152} without `fc` (load with
  strict=False: the missing keys are fc.weight and fc.bias).
"""

from __future__ import annotations

import pickle
from collections import OrderedDict
from typing import Dict, Sequence

import torch
import torch.nn as nn

TARGETS = ("detectron2", "mmdet", "torchvision")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # torchvision detectors' defaults


def _check_resnet(model: nn.Module) -> None:
    from timm.models.resnet import ResNet
    if not isinstance(model, ResNet):
        raise TypeError(f"detection export takes a ResNet (timm's ResNet, torchvision's keys); got "
                        f"{type(model).__name__}. ViTs: use clzoo.create_model(name, features_only=True, "
                        f"feature_cls='pyramid') or detection_backbone(name)")
    if isinstance(model.conv1, nn.Sequential):  # timm's deep stem (resnet50d etc.)
        raise TypeError("a deep-stem ResNet (resnet50d etc.) has no torchvision / detectron2 counterpart")


def _resnet_state(model: nn.Module) -> Dict[str, torch.Tensor]:
    _check_resnet(model)
    return {k: v.detach().cpu() for k, v in model.state_dict().items() if not k.startswith("fc.")}


def detectron2_names(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """torchvision ResNet names -> detectron2's, as MoCo's convert-pretrain-to-detectron2.py renames them."""
    out = {}
    for k, v in state.items():
        if "layer" not in k:
            k = "stem." + k
        for t in (1, 2, 3, 4):
            k = k.replace(f"layer{t}", f"res{t + 1}")
        for t in (1, 2, 3):
            k = k.replace(f"bn{t}", f"conv{t}.norm")
        out[k.replace("downsample.0", "shortcut").replace("downsample.1", "shortcut.norm")] = v
    return out


def mmseg_vit_names(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """timm ViT names -> mmseg VisionTransformer's (patch_bias=True, final_norm=True: the final norm is `ln1`)."""
    rules = [("patch_embed.proj.", "patch_embed.projection."), ("blocks.", "layers."), (".norm1.", ".ln1."),
             (".norm2.", ".ln2."), (".attn.qkv.weight", ".attn.attn.in_proj_weight"),
             (".attn.qkv.bias", ".attn.attn.in_proj_bias"), (".attn.proj.", ".attn.attn.out_proj."),
             (".mlp.fc1.", ".ffn.layers.0.0."), (".mlp.fc2.", ".ffn.layers.1.")]
    out = {}
    for k, v in state.items():
        if k.startswith("head") or k.startswith("fc_norm"):
            continue
        if k.startswith("norm."):
            k = "ln1." + k[len("norm."):]
        for a, b in rules:
            k = k.replace(a, b)
        out[k] = v
    return out


def _vit_state(model: nn.Module) -> Dict[str, torch.Tensor]:
    from timm.models.vision_transformer import VisionTransformer
    sd = model.state_dict()
    extra = [k for k in sd if ".ls1." in k or "q_norm" in k or k == "reg_token"]
    if not isinstance(model, VisionTransformer) or extra or "cls_token" not in sd:
        raise TypeError(f"mmseg export takes a plain timm ViT with a [CLS] token (no register tokens, layer scale "
                        f"or qk-norm: {extra[:3]}); got {type(model).__name__}")
    return {k: v.detach().cpu() for k, v in sd.items()}


def export_backbone(model: nn.Module, target: str, output: str, author: str = "clzoo") -> str:
    """Write `model`'s backbone to `output` in `target`'s layout (module docstring): a ResNet for every target,
    a ViT for `mmdet` (mmseg's VisionTransformer keys)."""
    if target not in TARGETS:
        raise ValueError(f"--to must be one of {TARGETS}, got {target!r}")
    from timm.models.vision_transformer import VisionTransformer
    from ._io import atomic_write
    if isinstance(model, VisionTransformer) and target == "mmdet":
        payload = {"state_dict": OrderedDict(("backbone." + k, v) for k, v in mmseg_vit_names(_vit_state(model)).items()),
                   "meta": {"author": author, "source": "clzoo", "mmseg": "VisionTransformer(patch_bias=True, final_norm=True)"}}
        atomic_write(output, lambda f: torch.save(payload, f))
        return output
    state = _resnet_state(model)
    if target == "detectron2":
        payload = {"model": {k: v.numpy() for k, v in detectron2_names(state).items()}, "__author__": author,
                   "matching_heuristics": True}
        atomic_write(output, lambda f: pickle.dump(payload, f))
    elif target == "mmdet":
        payload = {"state_dict": OrderedDict(("backbone." + k, v) for k, v in state.items()),
                   "meta": {"author": author, "source": "clzoo"}}
        atomic_write(output, lambda f: torch.save(payload, f))
    else:
        atomic_write(output, lambda f: torch.save(OrderedDict(state), f))
    return output


class _Renormalize(nn.Module):
    """torchvision detectors normalise with ImageNet's mean / std; an encoder trained on other statistics
    gets its own: x' = (x * std_in + mean_in - mean) / std."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        scale = torch.tensor(IMAGENET_STD) / torch.tensor(std)
        shift = (torch.tensor(IMAGENET_MEAN) - torch.tensor(mean)) / torch.tensor(std)
        self.register_buffer("scale", scale.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("shift", shift.view(1, 3, 1, 1), persistent=False)

    def forward(self, x):
        return x * self.scale + self.shift


class _PyramidBackbone(nn.Module):
    """A list-of-maps feature model as torchvision's detection backbone: an OrderedDict '0'..'3' + 'pool' (a
    stride-2 max-pool of the last, as torchvision's LastLevelMaxPool adds) and `out_channels`."""

    def __init__(self, features: nn.Module, out_channels: int):
        super().__init__()
        self.body, self.out_channels = features, out_channels

    def forward(self, x):
        maps = self.body(x)
        out = OrderedDict((str(i), m) for i, m in enumerate(maps))
        out["pool"] = nn.functional.max_pool2d(maps[-1], 1, 2, 0)
        return out


class _Prenormalized(nn.Module):
    """`backbone` after `_Renormalize`, with its `out_channels`."""

    def __init__(self, pre: nn.Module, backbone: nn.Module):
        super().__init__()
        self.pre, self.backbone, self.out_channels = pre, backbone, backbone.out_channels

    def forward(self, x):
        return self.backbone(self.pre(x))


def detection_backbone(name: str, pretrained: bool = True, fpn: bool = True, trainable_layers: int = 3,
                       out_channels: int = 256, **kwargs) -> nn.Module:
    """A torchvision detection backbone from a clzoo entry (or timm name), with `out_channels` set:
    `torchvision.models.detection.FasterRCNN(detection_backbone("mocov2_resnet50"), num_classes=91)`.

    ResNets: torchvision's `BackboneWithFPN` on layer1-layer4 (FPN to `out_channels` + a max-pooled level), the
    BatchNorms frozen and all but the last `trainable_layers` stages frozen, as torchvision's
    `resnet_fpn_backbone` does (`fpn=False`: layer4 alone, `out_channels` 2048). ViTs: ViTDet's simple feature
    pyramid (strides 4-32, `out_channels`) + the max-pooled level. An entry whose `pretrained_cfg` mean / std are
    not ImageNet's gets a first layer that turns the detector's ImageNet-normalised input into its own."""
    import clzoo

    model = clzoo.create_model(name, pretrained=pretrained, num_classes=0, **kwargs)
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    mean, std = tuple(cfg.get("mean", IMAGENET_MEAN)), tuple(cfg.get("std", IMAGENET_STD))
    same = all(abs(a - b) < 1e-6 for a, b in zip(mean + std, IMAGENET_MEAN + IMAGENET_STD))
    backbone = _backbone(model, fpn, trainable_layers, out_channels)
    return backbone if same else _Prenormalized(_Renormalize(mean, std), backbone)


def _backbone(model: nn.Module, fpn: bool, trainable_layers: int, out_channels: int) -> nn.Module:
    import clzoo
    from timm.layers import freeze_batch_norm_2d
    from torchvision.models.detection.backbone_utils import BackboneWithFPN
    from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

    if hasattr(model, "blocks") and hasattr(model, "patch_embed"):
        return _PyramidBackbone(clzoo.SimpleFeaturePyramid(model, out_channels=out_channels), out_channels)
    _check_resnet(model)
    if not 0 <= trainable_layers <= 5:
        raise ValueError(f"trainable_layers must be in [0, 5], got {trainable_layers}")
    model = freeze_batch_norm_2d(model)
    trainable = ["layer4", "layer3", "layer2", "layer1", "conv1"][:trainable_layers]
    for n, p in model.named_parameters():
        if not any(n.startswith(t) for t in trainable):
            p.requires_grad_(False)
    if not fpn:
        body = nn.Sequential(OrderedDict((k, getattr(model, k)) for k in
                                         ("conv1", "bn1", "act1", "maxpool", "layer1", "layer2", "layer3", "layer4")))
        body.out_channels = model.num_features
        return body
    widths = [info["num_chs"] for info in model.feature_info[1:5]]
    return BackboneWithFPN(model, {f"layer{i}": str(i - 1) for i in range(1, 5)}, widths, out_channels,
                           extra_blocks=LastLevelMaxPool())
