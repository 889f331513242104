"""SimSiam (Chen & He, CVPR 2021): siamese networks with stop-gradient and a predictor.

Official files: `{'epoch','arch','state_dict','optimizer'}` with `module.encoder.*` (projector in
encoder.fc) and `module.predictor.*`. Weights are CC-BY-NC 4.0.
"""
from timm.models import register_model

from .._registry import register_alias, register_cfgs
from ._archs import build_resnet
from ._common import linear, paper_fields, resnet_cfg

_URL = "https://dl.fbaipublicfiles.com/simsiam/models/"
_RECIPE = "SGD lr 0.05 x batch/256, wd 1e-4, cosine, fixed predictor lr; MoCo v2 augmentation; SyncBN"


def _cfg(path, top1, batch):
    return resnet_cfg(_URL + path, license="cc-by-nc-4.0", backbone="ResNet-50", weights_format="simsiam",
                      epochs=100, batch_size=batch, recipe=_RECIPE + f"; batch {batch}",
                      metrics=(linear(top1, "simsiam"),), **paper_fields("simsiam"))


default_cfgs = register_cfgs({
    "simsiam_resnet50.100ep_bs256": _cfg("100ep-256bs/pretrain/checkpoint_0099.pth.tar", 68.3, 256),
    "simsiam_resnet50.100ep_bs512": _cfg("100ep/pretrain/checkpoint_0099.pth.tar", 68.1, 512),
})
register_alias("resnet50.simsiam", "simsiam_resnet50.100ep_bs256")


@register_model
def simsiam_resnet50(pretrained=False, **kwargs):
    """SimSiam ResNet-50, 100 epochs: 68.3% (batch 256) / 68.1% (batch 512) ImageNet-1k linear."""
    return build_resnet("simsiam_resnet50", pretrained, **kwargs)
