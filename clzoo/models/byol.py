"""BYOL (Grill et al., NeurIPS 2020): online network predicts an EMA target's projection.

The released parameters are dill pickles of JAX/Haiku trees. Haiku pads every strided conv and the
max-pool 'SAME' (asymmetric on even inputs), so these archs use TF-SAME padding there; parameter
names are unchanged. Inputs: ImageNet mean/std, bicubic, centre crop 224/256.
"""
from timm.models import register_model

from .._registry import register_cfgs
from ._archs import build_resnet
from ._common import linear, paper_fields, resnet_cfg

_RECIPE = ("LARS, lr {lr} x batch/256, wd {wd}, 10 warmup epochs, cosine; target EMA {tau}->1 (cosine); "
           "projector/predictor 4096-256; BYOL asymmetric augmentation; batch 4096, cross-replica BN")


def _cfg(backbone, top1, lr, wd, tau):
    return resnet_cfg(None, license="apache-2.0", backbone=backbone, weights_format="byol_haiku", epochs=1000,
                      batch_size=4096, recipe=_RECIPE.format(lr=lr, wd=wd, tau=tau), interpolation="bicubic",
                      metrics=(linear(top1, "byol"),), **paper_fields("byol"))


default_cfgs = register_cfgs({
    "byol_resnet50.in1k": _cfg("ResNet-50", 74.4, 0.2, 1.5e-6, 0.996),
    "byol_resnet200w2.in1k": _cfg("ResNet-200 x2", 79.6, 0.2, 1.5e-6, 0.996),
})


@register_model
def byol_resnet50(pretrained=False, **kwargs):
    """BYOL ResNet-50, 1000 epochs: ~74.4% ImageNet-1k linear."""
    return build_resnet("byol_resnet50", pretrained, same_padding="all", **kwargs)


@register_model
def byol_resnet200w2(pretrained=False, **kwargs):
    """BYOL ResNet-200 x2 (every stage 2x wide, stem included): ~79.6% ImageNet-1k linear."""
    return build_resnet("byol_resnet200w2", pretrained, depth=200, width=2, same_padding="all", **kwargs)
