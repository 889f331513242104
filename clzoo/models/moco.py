"""MoCo v1 (He et al., CVPR 2020) and MoCo v2 (Chen et al., 2020): momentum contrast with a queue.

Official files: `{'epoch', 'arch', 'state_dict', ('optimizer')}` with the query encoder under
`module.encoder_q.` (v1 head: fc 128; v2 head: fc.0/fc.2 MLP). Weights are CC-BY-NC 4.0.
"""
from timm.models import register_model

from .._registry import register_alias, register_cfgs
from ._archs import build_resnet
from ._common import PYCONTRAST_RECIPE, linear, paper_fields, pycontrast_cfg, resnet_cfg

_URL = "https://dl.fbaipublicfiles.com/moco/moco_checkpoints/"
_V1 = ("SGD lr 0.03, momentum 0.9, wd 1e-4, batch 256, lr x0.1 at 120/160; queue 65536, m 0.999, tau 0.07; "
       "InstDisc augmentation; shuffle-BN")
_V2 = ("SGD lr 0.03, momentum 0.9, wd 1e-4, batch 256, cosine; MLP head; queue 65536, m 0.999, tau 0.2; "
       "aug+ (blur); shuffle-BN")


def _cfg(method, run, top1, md5, epochs, recipe):
    return resnet_cfg(_URL + f"{run}/{run}_pretrain.pth.tar", license="cc-by-nc-4.0", backbone="ResNet-50",
                      weights_format="moco", epochs=epochs, batch_size=256, recipe=recipe, md5_prefix=md5,
                      metrics=(linear(top1, "moco"),), **paper_fields(method))


default_cfgs = register_cfgs({
    "mocov1_resnet50.200ep": _cfg("mocov1", "moco_v1_200ep", 60.6, "b251726a", 200, _V1),
    "mocov2_resnet50.800ep": _cfg("mocov2", "moco_v2_800ep", 71.1, "a04e12f8", 800, _V2),
    "mocov2_resnet50.200ep": _cfg("mocov2", "moco_v2_200ep", 67.7, "59fd9945", 200, _V2),
    "mocov1_resnet50.pycontrast": pycontrast_cfg(
        "mocov1", "MoCo.pth", "ResNet-50", PYCONTRAST_RECIPE + "MoCo queue (m 0.999), linear head, tau 0.07", 60.8,
        notes="PyContrast re-implementation"),
    "mocov2_resnet50.pycontrast": pycontrast_cfg(
        "mocov2", "MoCov2.pth", "ResNet-50", PYCONTRAST_RECIPE + "MoCo queue (m 0.999), MLP head, tau 0.2, blur",
        67.5, notes="PyContrast re-implementation"),
})
register_alias("resnet50.mocov1", "mocov1_resnet50.200ep")
register_alias("resnet50.mocov2", "mocov2_resnet50.800ep")


@register_model
def mocov1_resnet50(pretrained=False, **kwargs):
    """MoCo v1 ResNet-50, 200 epochs: 60.6% ImageNet-1k linear."""
    return build_resnet("mocov1_resnet50", pretrained, **kwargs)


@register_model
def mocov2_resnet50(pretrained=False, **kwargs):
    """MoCo v2 ResNet-50: 71.1% (800 ep) / 67.7% (200 ep) ImageNet-1k linear."""
    return build_resnet("mocov2_resnet50", pretrained, **kwargs)
