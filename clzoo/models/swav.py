"""SwAV (Caron et al., NeurIPS 2020) and the DeepCluster-v2 / SeLa-v2 weights released beside it.

Official files are flat `module.*` state dicts with `projection_head` and `prototypes` heads.
The wide ResNets (w2/w4/w5) widen every stage including the 7x7 stem. Weights are CC-BY-NC 4.0.
"""
from timm.models import register_model

from .._registry import register_alias, register_cfgs
from ._archs import build_resnet
from ._common import linear, paper_fields, resnet_cfg

_URL = "https://dl.fbaipublicfiles.com/deepcluster/"
_RECIPE = ("LARC, lr {lr} ({warm}), cosine to {final}, wd 1e-6, batch {batch}; tau 0.1, eps 0.05, 3 Sinkhorn "
           "iterations, 3000 prototypes; multi-crop {crops}")


def _cfg(method, filename, backbone, top1, epochs, batch=4096, crops="2x224 + 6x96"):
    recipe = (_RECIPE.format(lr=4.8, warm="10 warmup epochs", final=0.0048, batch=batch, crops=crops) if batch == 4096
              else _RECIPE.format(lr=0.6, warm="no warmup", final=0.0006, batch=batch, crops=crops)
              + "; queue 3840 from epoch 15")
    if method == "deepclusterv2":
        recipe = "k-means on 3 x 3000 prototypes (DeepCluster-v2), " + recipe.split("; ", 1)[0] + "; " + crops
    if method == "selav2":
        recipe = "Sinkhorn pseudo-labels (SeLa-v2), " + recipe.split("; ", 1)[0] + "; " + crops
    return resnet_cfg(_URL + filename, license="cc-by-nc-4.0", backbone=backbone, weights_format="swav",
                      epochs=epochs, batch_size=batch, recipe=recipe, metrics=(linear(top1, "swav"),),
                      **paper_fields(method))


default_cfgs = register_cfgs({
    "swav_resnet50.800ep": _cfg("swav", "swav_800ep_pretrain.pth.tar", "ResNet-50", 75.3, 800),
    "swav_resnet50.400ep": _cfg("swav", "swav_400ep_pretrain.pth.tar", "ResNet-50", 74.6, 400),
    "swav_resnet50.200ep": _cfg("swav", "swav_200ep_pretrain.pth.tar", "ResNet-50", 73.9, 200),
    "swav_resnet50.100ep": _cfg("swav", "swav_100ep_pretrain.pth.tar", "ResNet-50", 72.1, 100),
    "swav_resnet50.400ep_bs256": _cfg("swav", "swav_400ep_bs256_pretrain.pth.tar", "ResNet-50", 74.3, 400, 256),
    "swav_resnet50.200ep_bs256": _cfg("swav", "swav_200ep_bs256_pretrain.pth.tar", "ResNet-50", 72.7, 200, 256),
    "swav_resnet50.400ep_2x224": _cfg("swav", "swav_400ep_2x224_pretrain.pth.tar", "ResNet-50", 70.1, 400,
                                      crops="2x224 only"),
    "swav_resnet50w2.400ep": _cfg("swav", "swav_RN50w2_400ep_pretrain.pth.tar", "ResNet-50 x2", 77.3, 400),
    "swav_resnet50w4.400ep": _cfg("swav", "swav_RN50w4_400ep_pretrain.pth.tar", "ResNet-50 x4", 77.9, 400),
    "swav_resnet50w5.400ep": _cfg("swav", "swav_RN50w5_400ep_pretrain.pth.tar", "ResNet-50 x5", 78.5, 400),
    "deepclusterv2_resnet50.800ep": _cfg("deepclusterv2", "deepclusterv2_800ep_pretrain.pth.tar", "ResNet-50",
                                         75.2, 800),
    "deepclusterv2_resnet50.400ep": _cfg("deepclusterv2", "deepclusterv2_400ep_pretrain.pth.tar", "ResNet-50",
                                         74.3, 400),
    "deepclusterv2_resnet50.400ep_2x224": _cfg("deepclusterv2", "deepclusterv2_400ep_2x224_pretrain.pth.tar",
                                               "ResNet-50", 70.2, 400, crops="2x224 only"),
    "selav2_resnet50.400ep": _cfg("selav2", "selav2_400ep_pretrain.pth.tar", "ResNet-50", 71.8, 400),
    "selav2_resnet50.400ep_2x224": _cfg("selav2", "selav2_400ep_2x224_pretrain.pth.tar", "ResNet-50", 67.2, 400,
                                        crops="2x224 only"),
})
register_alias("resnet50.swav", "swav_resnet50.800ep")


@register_model
def swav_resnet50(pretrained=False, **kwargs):
    """SwAV ResNet-50: 75.3% ImageNet-1k linear (800 ep, multi-crop 2x224 + 6x96)."""
    return build_resnet("swav_resnet50", pretrained, **kwargs)


@register_model
def swav_resnet50w2(pretrained=False, **kwargs):
    """SwAV ResNet-50 x2 (every stage 2x wide, stem included): 77.3% ImageNet-1k linear."""
    return build_resnet("swav_resnet50w2", pretrained, width=2, **kwargs)


@register_model
def swav_resnet50w4(pretrained=False, **kwargs):
    """SwAV ResNet-50 x4 (every stage 4x wide, stem included): 77.9% ImageNet-1k linear."""
    return build_resnet("swav_resnet50w4", pretrained, width=4, **kwargs)


@register_model
def swav_resnet50w5(pretrained=False, **kwargs):
    """SwAV ResNet-50 x5 (every stage 5x wide, stem included): 78.5% ImageNet-1k linear."""
    return build_resnet("swav_resnet50w5", pretrained, width=5, **kwargs)


@register_model
def deepclusterv2_resnet50(pretrained=False, **kwargs):
    """DeepCluster-v2 ResNet-50 (SwAV repository): 75.2% ImageNet-1k linear (800 ep)."""
    return build_resnet("deepclusterv2_resnet50", pretrained, **kwargs)


@register_model
def selav2_resnet50(pretrained=False, **kwargs):
    """SeLa-v2 ResNet-50 (SwAV repository): 71.8% ImageNet-1k linear (400 ep)."""
    return build_resnet("selav2_resnet50", pretrained, **kwargs)
