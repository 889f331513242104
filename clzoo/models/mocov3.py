"""MoCo v3 (Chen, Xie, He, ICCV 2021): symmetric in-batch InfoNCE with a momentum encoder.

ViT-S uses 12 attention heads (timm/DeiT ViT-S has 6). The qkv weights have the same shape either
way, so a 6-head model would load the checkpoint strictly and compute a different function.
Weights are CC-BY-NC 4.0.
"""
from timm.models import register_model

from .._registry import register_alias, register_cfgs
from ._archs import build_mocov3_vit, build_resnet
from ._common import linear, paper_fields, resnet_cfg, vit_cfg

_URL = "https://dl.fbaipublicfiles.com/moco-v3/"
_R50 = "LARS, lr {lr} x batch/256, wd {wd}, 10 warmup epochs, cosine; tau 1.0; m 0.99->1 (cosine); batch 4096"
_VIT = ("AdamW, lr 1.5e-4 x batch/256, wd 0.1, 40 warmup epochs, cosine; tau 0.2; m 0.99->1 (cosine); "
        "frozen random patch embedding; batch 4096")


def _cfg(run, builder, backbone, top1, epochs, recipe):
    return builder(_URL + f"{run}/{run}.pth.tar", license="cc-by-nc-4.0", backbone=backbone,
                   weights_format="mocov3", epochs=epochs, batch_size=4096, recipe=recipe,
                   metrics=(linear(top1, "mocov3"),), **paper_fields("mocov3"))


default_cfgs = register_cfgs({
    "mocov3_resnet50.1000ep": _cfg("r-50-1000ep", resnet_cfg, "ResNet-50", 74.6, 1000,
                                   _R50.format(lr=0.3, wd=1.5e-6).replace("0.99->1", "0.996->1")),
    "mocov3_resnet50.300ep": _cfg("r-50-300ep", resnet_cfg, "ResNet-50", 72.8, 300, _R50.format(lr=0.3, wd=1e-6)),
    "mocov3_resnet50.100ep": _cfg("r-50-100ep", resnet_cfg, "ResNet-50", 68.9, 100, _R50.format(lr=0.6, wd=1e-6)),
    "mocov3_vits16.300ep": _cfg("vit-s-300ep", vit_cfg, "ViT-S/16 (12 heads)", 73.2, 300, _VIT),
    "mocov3_vitb16.300ep": _cfg("vit-b-300ep", vit_cfg, "ViT-B/16", 76.7, 300, _VIT),
})
register_alias("resnet50.mocov3", "mocov3_resnet50.1000ep")
register_alias("vit_base_patch16_224.mocov3", "mocov3_vitb16.300ep")


@register_model
def mocov3_resnet50(pretrained=False, **kwargs):
    """MoCo v3 ResNet-50: 74.6% (1000 ep) / 72.8% (300 ep) / 68.9% (100 ep) ImageNet-1k linear."""
    return build_resnet("mocov3_resnet50", pretrained, **kwargs)


@register_model
def mocov3_vits16(pretrained=False, **kwargs):
    """MoCo v3 ViT-S/16 (12 heads, sin-cos position embedding), 300 epochs: 73.2% ImageNet-1k linear."""
    args = dict(patch_size=16, embed_dim=384, depth=12, num_heads=12)
    return build_mocov3_vit("mocov3_vits16", pretrained, **dict(args, **kwargs))


@register_model
def mocov3_vitb16(pretrained=False, **kwargs):
    """MoCo v3 ViT-B/16 (sin-cos position embedding), 300 epochs: 76.7% ImageNet-1k linear."""
    args = dict(patch_size=16, embed_dim=768, depth=12, num_heads=12)
    return build_mocov3_vit("mocov3_vitb16", pretrained, **dict(args, **kwargs))
