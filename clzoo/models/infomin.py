"""InfoMin (Tian et al., NeurIPS 2020): MoCo v2 + jigsaw branch + InfoMin augmentation (PyContrast).

PyContrast files: `{'model','contrast','optimizer','epoch',('model_ema')}`, backbone under
`module.encoder.*`. The weights are shared through Dropbox folders; no per-file URL is registered,
so pass the downloaded file with `pretrained_cfg_overlay=dict(file=...)`.
"""
from timm.models import register_model

from .._registry import register_cfgs
from ._archs import build_resnet
from ._common import linear, paper_fields, resnet_cfg

_RECIPE = ("SGD lr 0.03, wd 1e-4, batch 256, cosine; MoCo queue 65536, m 0.999, tau 0.15; MLP head; "
           "jigsaw branch (beta 0.5); InfoMin augmentation (RandAugment n2 m10)")
_NOTE = ("weights in the PyContrast Dropbox folder https://www.dropbox.com/sh/87d24jqsl6ra7t2/"
         "AABdDXZZBTnMQCBrg1yrQKVCa (R50) / https://www.dropbox.com/sh/fit1szeqf4kiwob/"
         "AADIgPT4EItaMOtGCunBfWXCa (larger backbones)")


def _cfg(backbone, top1, epochs):
    return resnet_cfg(None, license="bsd-3-clause", backbone=backbone, weights_format="pycontrast",
                      epochs=epochs, batch_size=256, recipe=_RECIPE, notes=_NOTE,
                      metrics=(linear(top1, "pycontrast"),), **paper_fields("infomin"))


default_cfgs = register_cfgs({
    "infomin_resnet50.800ep": _cfg("ResNet-50", 73.0, 800),
    "infomin_resnet50.200ep": _cfg("ResNet-50", 70.1, 200),
    "infomin_resnet101.300ep": _cfg("ResNet-101", 73.4, 300),
    "infomin_resnet152.200ep": _cfg("ResNet-152", 73.4, 200),
    "infomin_resnext101_32x4d.200ep": _cfg("ResNeXt-101 32x4d", 74.5, 200),
})


@register_model
def infomin_resnet50(pretrained=False, **kwargs):
    """InfoMin ResNet-50: 73.0% (800 ep) / 70.1% (200 ep) ImageNet-1k linear."""
    return build_resnet("infomin_resnet50", pretrained, **kwargs)


@register_model
def infomin_resnet101(pretrained=False, **kwargs):
    """InfoMin ResNet-101, 300 epochs: 73.4% ImageNet-1k linear."""
    return build_resnet("infomin_resnet101", pretrained, depth=101, **kwargs)


@register_model
def infomin_resnet152(pretrained=False, **kwargs):
    """InfoMin ResNet-152, 200 epochs: 73.4% ImageNet-1k linear."""
    return build_resnet("infomin_resnet152", pretrained, depth=152, **kwargs)


@register_model
def infomin_resnext101_32x4d(pretrained=False, **kwargs):
    """InfoMin ResNeXt-101 32x4d, 200 epochs: 74.5% ImageNet-1k linear (PyContrast 'resnext101v1')."""
    args = dict(cardinality=32, base_width=4)
    return build_resnet("infomin_resnext101_32x4d", pretrained, depth=101, **dict(args, **kwargs))
