"""InstDisc (Wu et al., CVPR 2018): non-parametric instance discrimination with a memory bank.

lemniscate.pytorch files: `{'epoch','arch','state_dict','lemniscate','best_prec1','optimizer'}`;
`lemniscate` is the pickled NCEAverage module (the 1.28M x 128 memory bank), loaded as an inert stub.
"""
from timm.models import register_model

from .._registry import register_cfgs
from ._archs import build_resnet
from ._common import PYCONTRAST_RECIPE, knn, linear, paper_fields, pycontrast_cfg, resnet_cfg

_URL = "https://frontiers.blob.core.windows.net/pretraining/checkpoints/pil_pretrained_models/lemniscate/"
_NCE = ("SGD lr 0.03, wd 1e-4, batch 256, lr x0.1 at 120/160; 128-d memory bank, momentum 0.5; "
        "NCE with 4096 noise samples, tau 0.07")
_SOFTMAX = "as the original recipe but softmax cross-entropy over 65536 bank negatives"


def _cfg(filename, backbone, recipe, metric, notes=""):
    return resnet_cfg(_URL + filename, license="unknown", backbone=backbone, weights_format="lemniscate",
                      epochs=200, batch_size=256, recipe=recipe, metrics=(metric,), notes=notes,
                      **paper_fields("instdisc"))


_LICENSE_NOTE = "the official repository publishes no licence file"
default_cfgs = register_cfgs({
    "instdisc_resnet50.softmax65k": _cfg("lemniscate_resnet50_update.pth", "ResNet-50", _SOFTMAX,
                                         linear(58.5, "instdisc"), _LICENSE_NOTE),
    "instdisc_resnet50.nce4k": _cfg("lemniscate_resnet50.pth", "ResNet-50", _NCE, knn(46.8, "instdisc"),
                                    _LICENSE_NOTE),
    "instdisc_resnet50.pycontrast": pycontrast_cfg(
        "instdisc", "InsDis.pth", "ResNet-50", PYCONTRAST_RECIPE + "memory bank (m 0.5), linear head, tau 0.07",
        59.5, notes="PyContrast re-implementation"),
    "instdisc_resnet18.nce4k": _cfg("lemniscate_resnet18.pth", "ResNet-18", _NCE, knn(41.0, "instdisc"),
                                    _LICENSE_NOTE),
})


@register_model
def instdisc_resnet50(pretrained=False, **kwargs):
    """InstDisc ResNet-50: 58.5% ImageNet-1k linear (softmax, 65536 negatives); 46.8% kNN (NCE, 4096)."""
    return build_resnet("instdisc_resnet50", pretrained, **kwargs)


@register_model
def instdisc_resnet18(pretrained=False, **kwargs):
    """InstDisc ResNet-18 (NCE, 4096 negatives): 41.0% ImageNet-1k kNN."""
    return build_resnet("instdisc_resnet18", pretrained, depth=18, **kwargs)
