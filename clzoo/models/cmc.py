"""CMC (Tian, Krishnan, Isola, ECCV 2020): contrastive multiview coding on L and ab of Lab.

An encoder is two ResNets (`l_to_ab` on L, `ab_to_l` on ab) whose features are concatenated; it
takes RGB in [0, 1] and converts to normalised Lab inside. Official files (a Dropbox folder without
per-file links): `{'opt','model','contrast','optimizer','epoch'}` with `encoder.module.{l_to_ab,ab_to_l}.*`.
PyContrast's CMC.pth (`.pycontrast`) splits YDbDr into Y and DbDr instead (`colour="ydbdr"`).
"""
from timm.models import register_model

from .._registry import register_cfgs
from ._archs import build_cmc
from ._common import PYCONTRAST_RECIPE, linear, paper_fields, pycontrast_cfg, resnet_cfg, with_training_only_cfg

_RECIPE = ("SGD lr 0.03, wd 1e-4, batch 128 (R50: 4 GPUs), 240 ep, x0.1 at 120/160/200; NCE, 2 memory banks, "
           "4096 negatives, tau 0.07, momentum 0.5; mixed precision (amp); crop + flip (colour is the view split)")
_FOLDER = "https://www.dropbox.com/sh/5k4t77mt4011gyr/AABkBvKm2bGNNut0m6bLMK84a?dl=0"
_FAA = "trained with FastAutoAugment, which the CMC README says adds 0.8-1% downstream"


def _cfg(backbone, filename, metrics=(), notes=""):
    notes = "; ".join(n for n in (f"{filename} in the CMC Dropbox folder {_FOLDER}", notes,
                                  "the official repository publishes no licence file") if n)
    return resnet_cfg(_FOLDER, license="unknown", backbone=backbone, weights_format="cmc", folder_file=filename,
                      epochs=240, batch_size=128, recipe=_RECIPE, notes=notes, metrics=metrics,
                      mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), first_conv=None, **paper_fields("cmc"))


# The README names CMC_resnet50v2.pth and CMC_resnet50v3.pth; the half-width file's name follows the
# same pattern and is not confirmed.
default_cfgs = register_cfgs({
    "cmc_resnet50half.in1k": _cfg("2 x ResNet-50 at half width (L and ab)", "CMC_resnet50v1.pth",
                                  notes="file name inferred from the v2/v3 names (not confirmed)"),
    "cmc_resnet50half.pycontrast": pycontrast_cfg(
        "cmc", "CMC.pth", "2 x ResNet-50 at half width (Y and DbDr)",
        PYCONTRAST_RECIPE + "Y / DbDr views, memory bank (m 0.5), linear heads, tau 0.07",
        58.6, weights_format="pycontrast_cmc", model_args=dict(colour="ydbdr"),
        notes="PyContrast re-implementation: YDbDr views, no RandAugment", mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0), first_conv=None),
    "cmc_resnet50.in1k": _cfg("2 x ResNet-50 (L and ab)", "CMC_resnet50v2.pth",
                              (linear(64.1, "CMC paper, linear probe on concatenated features", "paper"),), _FAA),
    "cmc_resnet50w2.in1k": _cfg("2 x ResNet-50 x2 (L and ab)", "CMC_resnet50v3.pth",
                                (linear(68.4, "CMC README, linear probe on concatenated features"),), _FAA),
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


def _untrained_cfg(kwargs):  # RGB in [0, 1], as CMCResNet's default input_mean / input_std
    return with_training_only_cfg(kwargs, first_conv=None, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


# Architectures without released weights: the official code's resnet18v1-v3 (and a ResNet-34), for training
# (`pretrain.py --method cmc --model resnet18` builds cmc_resnet18).
@register_model
def cmc_resnet18(pretrained=False, **kwargs):
    """CMC with two ResNet-18s (official code's 'resnet18v2'; width 0.5 / 2 are 'v1' / 'v3'); no released weights."""
    return build_cmc("cmc_resnet18", pretrained, **dict(dict(width=1.0, depth=18), **_untrained_cfg(kwargs)))


@register_model
def cmc_resnet34(pretrained=False, **kwargs):
    """CMC with two ResNet-34s; no released weights."""
    return build_cmc("cmc_resnet34", pretrained, **dict(dict(width=1.0, depth=34), **_untrained_cfg(kwargs)))
