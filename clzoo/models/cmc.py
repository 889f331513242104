"""CMC (Tian, Krishnan, Isola, ECCV 2020): contrastive multiview coding on L and ab of Lab.

An encoder is two ResNets (`l_to_ab` on L, `ab_to_l` on ab) whose features are concatenated; it
takes RGB in [0, 1] and converts to normalised Lab inside. Official files (Dropbox):
`{'opt','model','contrast','optimizer','epoch'}` with `encoder.module.{l_to_ab,ab_to_l}.*`.
"""
from timm.models import register_model

from .._registry import register_cfgs
from ._archs import build_cmc
from ._common import linear, paper_fields, resnet_cfg

_RECIPE = ("SGD lr 0.03, wd 1e-4, batch 128 (R50: 4 GPUs), 240 ep, x0.1 at 120/160/200; NCE, 2 memory banks, "
           "tau 0.07, momentum 0.5; crop + flip only (colour is the view split)")
_NOTE = ("weights in the CMC Dropbox folder https://www.dropbox.com/sh/5k4t77mt4011gyr/"
         "AABkBvKm2bGNNut0m6bLMK84a; the official repository publishes no licence file")


def _cfg(backbone, metrics=()):
    return resnet_cfg(None, license="unknown", backbone=backbone, weights_format="cmc", epochs=240,
                      batch_size=128, recipe=_RECIPE, notes=_NOTE, metrics=metrics,
                      mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), first_conv=None,
                      **paper_fields("cmc"))


default_cfgs = register_cfgs({
    "cmc_resnet50half.in1k": _cfg("2 x ResNet-50 at half width (L and ab)"),
    "cmc_resnet50.in1k": _cfg("2 x ResNet-50 (L and ab)",
                              (linear(64.1, "CMC paper, linear probe on concatenated features", "paper"),)),
    "cmc_resnet50w2.in1k": _cfg("2 x ResNet-50 x2 (L and ab)",
                                (linear(68.4, "CMC README, linear probe on concatenated features"),)),
})


@register_model
def cmc_resnet50half(pretrained=False, **kwargs):
    """CMC with two half-width ResNet-50s (official 'resnet50v1')."""
    return build_cmc("cmc_resnet50half", pretrained, **dict(dict(width=0.5), **kwargs))


@register_model
def cmc_resnet50(pretrained=False, **kwargs):
    """CMC with two ResNet-50s (official 'resnet50v2'): 64.1% ImageNet-1k linear (paper)."""
    return build_cmc("cmc_resnet50", pretrained, **dict(dict(width=1.0), **kwargs))


@register_model
def cmc_resnet50w2(pretrained=False, **kwargs):
    """CMC with two 2x-wide ResNet-50s (official 'resnet50v3'): 68.4% ImageNet-1k linear."""
    return build_cmc("cmc_resnet50w2", pretrained, **dict(dict(width=2.0), **kwargs))
