"""DINO (Caron et al., ICCV 2021): self-distillation with no labels; ViT and ResNet-50 teachers.

The released `*_pretrain.pth` files are bare teacher backbones with timm key names; the
`*_full_checkpoint.pth` files hold student, teacher (with the DINO head), optimizer and args.
"""
from timm.models import register_model

from .._registry import register_alias, register_cfgs
from ._archs import build_resnet, build_vit
from ._common import knn, linear, paper_fields, resnet_cfg, vit_cfg

_URL = "https://dl.fbaipublicfiles.com/dino/"
_RECIPE_VIT = ("AdamW, lr 5e-4 x batch/256 after 10 warmup epochs, cosine; wd 0.04->0.4; teacher momentum "
               "0.996->1; multi-crop 2x224 + local 96-px crops; student temperature 0.1, teacher 0.04->0.07")
_RECIPE_RN50 = "SGD lr 0.03, wd 1e-4; multi-crop; batch 4080 on 80 GPUs (dino#133)"


def _cfg(dirname, backbone, linear_top1, knn_top1, full=False, builder=vit_cfg, **kwargs):
    filename = f"{dirname}/{dirname}{'_full_checkpoint' if full else ''}.pth"
    return builder(
        _URL + filename, license="apache-2.0", backbone=backbone,
        weights_format="dino_full" if full else "state_dict",
        metrics=(linear(linear_top1, "dino"), knn(knn_top1, "dino")),
        recipe=_RECIPE_VIT if builder is vit_cfg else _RECIPE_RN50,
        notes="the full checkpoint carries the DINO head (65536 prototypes) and optimizer state" if full else "",
        **paper_fields("dino"), **kwargs)


default_cfgs = register_cfgs({
    "dino_vits16.in1k": _cfg("dino_deitsmall16_pretrain", "ViT-S/16", 77.0, 74.5,
                             hf_hub_id="timm/vit_small_patch16_224.dino"),
    "dino_vits16.in1k_full": _cfg("dino_deitsmall16_pretrain", "ViT-S/16", 77.0, 74.5, full=True),
    "dino_vits8.in1k": _cfg("dino_deitsmall8_pretrain", "ViT-S/8", 79.7, 78.3,
                            hf_hub_id="timm/vit_small_patch8_224.dino"),
    "dino_vits8.in1k_full": _cfg("dino_deitsmall8_pretrain", "ViT-S/8", 79.7, 78.3, full=True),
    "dino_vitb16.in1k": _cfg("dino_vitbase16_pretrain", "ViT-B/16", 78.2, 76.1,
                             hf_hub_id="timm/vit_base_patch16_224.dino"),
    "dino_vitb16.in1k_full": _cfg("dino_vitbase16_pretrain", "ViT-B/16", 78.2, 76.1, full=True),
    "dino_vitb8.in1k": _cfg("dino_vitbase8_pretrain", "ViT-B/8", 80.1, 77.4,
                            hf_hub_id="timm/vit_base_patch8_224.dino"),
    "dino_vitb8.in1k_full": _cfg("dino_vitbase8_pretrain", "ViT-B/8", 80.1, 77.4, full=True),
    "dino_resnet50.in1k": _cfg("dino_resnet50_pretrain", "ResNet-50", 75.3, 67.5, builder=resnet_cfg,
                               interpolation="bicubic"),
    "dino_resnet50.in1k_full": _cfg("dino_resnet50_pretrain", "ResNet-50", 75.3, 67.5, full=True,
                                    builder=resnet_cfg, interpolation="bicubic"),
})

for _timm_name, _ours in [("vit_small_patch16_224.dino", "dino_vits16.in1k"),
                          ("vit_small_patch8_224.dino", "dino_vits8.in1k"),
                          ("vit_base_patch16_224.dino", "dino_vitb16.in1k"),
                          ("vit_base_patch8_224.dino", "dino_vitb8.in1k"),
                          ("resnet50.dino", "dino_resnet50.in1k")]:
    register_alias(_timm_name, _ours)


@register_model
def dino_vits16(pretrained=False, **kwargs):
    """DINO ViT-S/16: 77.0% linear, 74.5% 20-NN on ImageNet-1k."""
    args = dict(patch_size=16, embed_dim=384, depth=12, num_heads=6)
    return build_vit("dino_vits16", pretrained, **dict(args, **kwargs))


@register_model
def dino_vits8(pretrained=False, **kwargs):
    """DINO ViT-S/8: 79.7% linear, 78.3% 20-NN on ImageNet-1k."""
    args = dict(patch_size=8, embed_dim=384, depth=12, num_heads=6)
    return build_vit("dino_vits8", pretrained, **dict(args, **kwargs))


@register_model
def dino_vitb16(pretrained=False, **kwargs):
    """DINO ViT-B/16: 78.2% linear, 76.1% 20-NN on ImageNet-1k."""
    args = dict(patch_size=16, embed_dim=768, depth=12, num_heads=12)
    return build_vit("dino_vitb16", pretrained, **dict(args, **kwargs))


@register_model
def dino_vitb8(pretrained=False, **kwargs):
    """DINO ViT-B/8: 80.1% linear, 77.4% 20-NN on ImageNet-1k."""
    args = dict(patch_size=8, embed_dim=768, depth=12, num_heads=12)
    return build_vit("dino_vitb8", pretrained, **dict(args, **kwargs))


@register_model
def dino_resnet50(pretrained=False, **kwargs):
    """DINO ResNet-50: 75.3% linear, 67.5% 20-NN on ImageNet-1k."""
    return build_resnet("dino_resnet50", pretrained, **kwargs)
