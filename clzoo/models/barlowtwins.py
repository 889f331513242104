"""Barlow Twins (Zbontar et al., ICML 2021): redundancy reduction of the cross-correlation matrix.

`resnet50.pth` is a bare torchvision state dict without fc; `checkpoint.pth` is the full training
state (`module.backbone.*`, `module.projector.*`, `module.bn.*`, optimizer).
"""
from timm.models import register_model

from .._registry import register_alias, register_cfgs
from ._archs import build_resnet
from ._common import linear, paper_fields, resnet_cfg

_URL = "https://dl.fbaipublicfiles.com/barlowtwins/ljng/"
_RECIPE = ("LARS, lr 0.2 (weights) / 0.0048 (biases, BN) x batch/256, wd 1e-6, 10 warmup epochs, cosine; "
           "projector 8192-8192-8192, lambda 0.0051; BYOL augmentation; batch 2048")


def _cfg(filename, fmt, notes=""):
    return resnet_cfg(_URL + filename, license="mit", backbone="ResNet-50", weights_format=fmt, epochs=1000,
                      batch_size=2048, recipe=_RECIPE, notes=notes,
                      metrics=(linear(73.5, "barlowtwins"),), **paper_fields("barlowtwins"))


default_cfgs = register_cfgs({
    "barlowtwins_resnet50.1000ep": _cfg("resnet50.pth", "state_dict"),
    "barlowtwins_resnet50.1000ep_full": _cfg("checkpoint.pth", "barlowtwins_full",
                                             "full training checkpoint: carries the 8192-d projector"),
})
register_alias("resnet50.barlowtwins", "barlowtwins_resnet50.1000ep")


@register_model
def barlowtwins_resnet50(pretrained=False, **kwargs):
    """Barlow Twins ResNet-50, 1000 epochs: 73.5% ImageNet-1k linear."""
    return build_resnet("barlowtwins_resnet50", pretrained, **kwargs)
