"""BYOL (Grill et al., NeurIPS 2020): online network predicts an EMA target's projection.

The released parameters are dill pickles of JAX/Haiku trees (format byol_haiku, read without jax,
haiku or dill). Haiku pads every strided conv and the max-pool 'SAME' (asymmetric on even inputs),
so these archs use TF-SAME padding there; parameter names are unchanged. Inputs: [0, 1] then
ImageNet mean/std (byol dataset.normalize_images), bicubic, centre crop 224/(224+32). Outputs equal
the official Haiku code's (tests/test_convert_byol.py).
"""
from timm.models import register_model

from .._registry import register_cfgs
from ._archs import build_resnet
from ._common import linear, paper_fields, resnet_cfg

_RECIPE = ("LARS, lr {lr} x batch/256, wd {wd}, 10 warmup epochs, cosine; target EMA {tau}->1 (cosine); "
           "projector/predictor 4096-256; BYOL asymmetric augmentation; batch 4096, cross-replica BN")
_URL = "https://storage.googleapis.com/deepmind-byol/checkpoints/"


def _cfg(filename, backbone, top1, lr, wd, tau, notes=""):
    return resnet_cfg(_URL + filename, license="apache-2.0", notes=notes, backbone=backbone,
                      weights_format="byol_haiku", epochs=1000, batch_size=4096,
                      recipe=_RECIPE.format(lr=lr, wd=wd, tau=tau), interpolation="bicubic",
                      metrics=(linear(top1, "byol"),), **paper_fields("byol"))


default_cfgs = register_cfgs({
    "byol_resnet50.in1k": _cfg("pretrain_res50x1.pkl", "ResNet-50", 74.4, 0.2, 1.5e-6, 0.996,
                               "570 MB dill pickle; the online network is converted (target network and "
                               "projector/predictor: clzoo.load_pretraining_checkpoint)"),
    "byol_resnet200w2.in1k": _cfg("pretrain_res200x2.pkl", "ResNet-200 x2", 79.6, 0.2, 1.5e-6, 0.996,
                                  "4.6 GB dill pickle, loaded whole into memory; its 128-channel stem follows "
                                  "byol networks.py after the 2020-08-17 fix (not checked against the file)"),
})


@register_model
def byol_resnet50(pretrained=False, **kwargs):
    """BYOL ResNet-50, 1000 epochs: ~74.4% ImageNet-1k linear."""
    return build_resnet("byol_resnet50", pretrained, same_padding="all", **kwargs)


@register_model
def byol_resnet200w2(pretrained=False, **kwargs):
    """BYOL ResNet-200 x2 (every stage 2x wide, stem included): ~79.6% ImageNet-1k linear."""
    return build_resnet("byol_resnet200w2", pretrained, depth=200, width=2, same_padding="all", **kwargs)
