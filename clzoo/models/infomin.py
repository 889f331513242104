"""InfoMin (Tian et al., NeurIPS 2020): MoCo v2 + jigsaw branch + InfoMin augmentation (PyContrast).

PyContrast files: `{'model','contrast','optimizer','epoch',('model_ema')}`, backbone under
`module.encoder.*`. The ResNet-50 files have per-file Dropbox links; the larger backbones are only
named inside their Dropbox folder, so they are passed with `pretrained_cfg_overlay=dict(file=...)`.
ResNeXt-101 / -152 with 74.5 / 75.2 % are the 32x8d models (87M / 120M parameters in the README table).
"""
from timm.models import register_model

from .._registry import register_cfgs
from ._archs import build_resnet
from ._common import PYCONTRAST_ARCH_FOLDER, PYCONTRAST_RECIPE, pycontrast_cfg

_RECIPE = PYCONTRAST_RECIPE.replace("lr x0.1 at 120/160", "cosine") + (
    "MoCo queue, m 0.999, tau 0.15; MLP head; jigsaw branch; InfoMin augmentation (RandAugment)")


def _cfg(filename, backbone, top1, epochs, batch_size=256, **kwargs):
    return pycontrast_cfg("infomin", filename, backbone, _RECIPE.replace("batch 256", f"batch {batch_size}"),
                          top1, epochs, batch_size, **kwargs)


def _arch_cfg(filename, backbone, top1, epochs, batch_size=256, **kwargs):
    return _cfg(filename, backbone, top1, epochs, batch_size, folder=PYCONTRAST_ARCH_FOLDER, **kwargs)


default_cfgs = register_cfgs({
    "infomin_resnet50.800ep": _cfg("InfoMin_800.pth", "ResNet-50", 73.0, 800),
    "infomin_resnet50.800ep_run2": _cfg("InfoMin_800_run2.pth", "ResNet-50", None, 800,
                                        notes="a second run: slightly better COCO transfer, slightly lower "
                                              "ImageNet linear accuracy than InfoMin_800.pth (MODEL_ZOO.md)"),
    "infomin_resnet50.200ep": _cfg("InfoMin_200.pth", "ResNet-50", 70.1, 200),
    "infomin_resnet101.300ep": _arch_cfg("InfoMin_resnet101_e300.pth", "ResNet-101", 73.4, 300),
    "infomin_resnet152.200ep": _arch_cfg("InfoMin_resnet152_e200.pth", "ResNet-152", 73.4, 200),
    "infomin_resnext101_32x4d.200ep": _arch_cfg("InfoMin_resnext101v1_e200.pth", "ResNeXt-101 32x4d", None, 200, 512),
    "infomin_resnext101_32x8d.200ep": _arch_cfg("InfoMin_resnext101v2_e200.pth", "ResNeXt-101 32x8d", 74.5, 200, 512),
    "infomin_resnext101_64x4d.200ep": _arch_cfg("InfoMin_resnext101v3_e200.pth", "ResNeXt-101 64x4d", None, 200, 512),
    "infomin_resnext152_32x4d.200ep": _arch_cfg("InfoMin_resnext152v1_e200.pth", "ResNeXt-152 32x4d", None, 200, 512),
    "infomin_resnext152_32x8d.200ep": _arch_cfg("InfoMin_resnext152v2_e200.pth", "ResNeXt-152 32x8d", 75.2, 200, 512),
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


def _register_resnext(depth, cardinality, base_width, pycontrast_name, top1=None):
    """One timm entrypoint per PyContrast ResNeXt (they differ only in depth, cardinality and width)."""
    variant = f"infomin_resnext{depth}_{cardinality}x{base_width}d"

    def entrypoint(pretrained=False, **kwargs):
        args = dict(depth=depth, cardinality=cardinality, base_width=base_width)
        return build_resnet(variant, pretrained, **dict(args, **kwargs))

    result = f": {top1}% ImageNet-1k linear" if top1 else ""
    entrypoint.__name__ = entrypoint.__qualname__ = variant
    entrypoint.__doc__ = (f"InfoMin ResNeXt-{depth} {cardinality}x{base_width}d (PyContrast '{pycontrast_name}'), "
                          f"200 epochs{result}.")
    return register_model(entrypoint)


infomin_resnext101_32x4d = _register_resnext(101, 32, 4, "resnext101v1")
infomin_resnext101_32x8d = _register_resnext(101, 32, 8, "resnext101v2", 74.5)
infomin_resnext101_64x4d = _register_resnext(101, 64, 4, "resnext101v3")
infomin_resnext152_32x4d = _register_resnext(152, 32, 4, "resnext152v1")
infomin_resnext152_32x8d = _register_resnext(152, 32, 8, "resnext152v2", 75.2)
