"""PIRL (Misra & van der Maaten, CVPR 2020): pretext-invariant representations (jigsaw + memory bank).

The authors' weights are released in VISSL's model zoo: `classy_state_dict.base_model.model.trunk`
with `_feature_blocks.*` torchvision names. The w2 trunk widens every stage including the stem.
"""
from timm.models import register_model

from .._registry import register_cfgs
from ._archs import build_resnet
from ._common import PYCONTRAST_RECIPE, linear, paper_fields, pycontrast_cfg, resnet_cfg

_URL = "https://dl.fbaipublicfiles.com/vissl/model_zoo/"
_RECIPE = ("SGD lr 0.12, wd 1e-4 (no wd on BN/bias), cosine, batch 1024; memory bank 32000 negatives, "
           "tau 0.07, lambda 0.5; jigsaw head 9x128 -> 128{head}")


def _cfg(path, backbone, top1, epochs, mlp=False):
    head = "; MLP projection heads, Gaussian blur" if mlp else ""
    return resnet_cfg(_URL + path, license="mit", backbone=backbone, weights_format="vissl", epochs=epochs,
                      batch_size=1024, recipe=_RECIPE.format(head=head),
                      metrics=(linear(top1, "vissl"),), **paper_fields("pirl"))


default_cfgs = register_cfgs({
    "pirl_resnet50.800ep_mlp_gblur": _cfg("pirl/r50_800ep_mlphead_gblur/model_final_checkpoint_phase799.torch",
                                          "ResNet-50", 69.9, 800, mlp=True),
    "pirl_resnet50.800ep": _cfg("pirl_jigsaw_4node_pirl_jigsaw_4node_resnet_22_07_20.34377f59/"
                                "model_final_checkpoint_phase799.torch", "ResNet-50", 64.29, 800),
    "pirl_resnet50.200ep_mlp_gblur": _cfg("pirl/r50_200ep_mlp_gblur/model_final_checkpoint_phase199.torch",
                                          "ResNet-50", 65.8, 200, mlp=True),
    "pirl_resnet50.200ep": _cfg("pirl/r50_200ep/model_final_checkpoint_phase199.torch", "ResNet-50", 62.9, 200),
    "pirl_resnet50.pycontrast": pycontrast_cfg(
        "pirl", "PIRL.pth", "ResNet-50", PYCONTRAST_RECIPE + "memory bank (m 0.5) + jigsaw branch, linear head, tau 0.07",
        61.7, notes="PyContrast re-implementation, not the authors' (VISSL) weights"),
    "pirl_resnet50w2.400ep_mlp_gblur": _cfg("pirl/r50w2_400ep_mlphead_gblur/model_final_checkpoint_phase399.torch",
                                            "ResNet-50 x2", 70.9, 400, mlp=True),
    "pirl_resnet50w2.400ep": _cfg("pirl/w2_400ep/model_final_checkpoint_phase399.torch", "ResNet-50 x2", 69.3, 400),
})


@register_model
def pirl_resnet50(pretrained=False, **kwargs):
    """PIRL ResNet-50 (VISSL): 69.9% ImageNet-1k linear (800 ep, MLP head, blur)."""
    return build_resnet("pirl_resnet50", pretrained, **kwargs)


@register_model
def pirl_resnet50w2(pretrained=False, **kwargs):
    """PIRL ResNet-50 x2 (VISSL, every stage 2x wide): 70.9% ImageNet-1k linear (400 ep, MLP head)."""
    return build_resnet("pirl_resnet50w2", pretrained, width=2, **kwargs)
