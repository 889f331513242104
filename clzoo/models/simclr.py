"""SimCLR v1 (Chen et al., ICML 2020) and SimCLR v2 (Chen et al., NeurIPS 2020), google-research/simclr.

The released weights are TF1 checkpoints, read without TensorFlow (clzoo.convert.tf_checkpoint):
v1 as the README's zips (`ResNet50_{1,2,4}x/model.ckpt-225206.*` inside), v2 as
`gs://simclr-checkpoints/simclrv2/pretrained/<name>/model.ckpt-250228.{index,data-00000-of-00001}`.
The TF ResNet pads convs symmetrically (as PyTorch) but max-pools with 'SAME', so these archs use a
SAME max-pool; inputs are RGB in [0, 1] without mean/std (data_util.py), bicubic resize, crop 0.875.
Width multipliers widen every stage including the stem. SimCLR v2 'sk1' models are ResNet-D with
Selective-Kernel convs (models/_archs.py `build_sk_resnet`). Outputs equal the official TF code's
(tests/test_convert_tf.py, float64 max |diff| ~1e-12).
"""
from timm.models import register_model

from .._registry import register_cfgs
from ._archs import build_resnet, build_sk_resnet
from ._common import linear, paper_fields, tf_resnet_cfg

_V1 = "LARS, lr 0.3 x batch/256, wd 1e-6, 10 warmup epochs, cosine; tau 0.1; 2048-2048-128 head; batch 4096"
_V2 = ("LARS, lr 0.1 x sqrt(batch), wd 1e-4, 5% warmup, cosine; tau 0.1; 3-layer head; batch 4096; "
       "MoCo-style memory of momentum-encoder negatives")


# The README links storage.cloud.google.com/simclr-gcs/checkpoints/ResNet50_1x.zip (the console form,
# which asks a browser to sign in); storage.googleapis.com serves the same public object directly.
_V1_URL = "https://storage.googleapis.com/simclr-gcs/checkpoints/ResNet50_{}.zip"
_V2_URL = "https://storage.googleapis.com/simclr-checkpoints/simclrv2/pretrained/{}/model.ckpt-250228.index"
_V2_NOTE = ("TF1 checkpoint: the .index file and its .data-00000-of-00001 shard (both fetched); the linear head "
            "trained during pretraining (head_supervised) and the 3-layer projection head (head_contrastive, "
            "see clzoo.load_pretraining_checkpoint) are in the file; format simclr_tf1_ema converts the "
            "ema_model/ weights where a checkpoint carries them")


def _v1(width, backbone, top1):
    return tf_resnet_cfg(_V1_URL.format(width), license="apache-2.0", backbone=backbone, weights_format="simclr_tf1",
                         epochs=1000, batch_size=4096, recipe=_V1, metrics=(linear(top1, "simclr"),),
                         notes="TF1 checkpoint in a zip (model.ckpt-225206); the v1 projection head was not released",
                         **paper_fields("simclr"))


def _v2(name, backbone, top1):
    return tf_resnet_cfg(_V2_URL.format(name), license="apache-2.0", backbone=backbone,
                         weights_format="simclr_tf1", epochs=800, batch_size=4096, recipe=_V2,
                         metrics=(linear(top1, "simclrv2"),), notes=_V2_NOTE, **paper_fields("simclrv2"))


default_cfgs = register_cfgs({
    "simclr_resnet50.in1k": _v1("1x", "ResNet-50", 69.1),
    "simclr_resnet50w2.in1k": _v1("2x", "ResNet-50 x2", 74.2),
    "simclr_resnet50w4.in1k": _v1("4x", "ResNet-50 x4", 76.6),
    "simclrv2_resnet50.in1k": _v2("r50_1x_sk0", "ResNet-50 (sk0)", 71.7),
    "simclrv2_resnet50w2.in1k": _v2("r50_2x_sk0", "ResNet-50 x2 (sk0)", 75.6),
    "simclrv2_resnet101.in1k": _v2("r101_1x_sk0", "ResNet-101 (sk0)", 73.6),
    "simclrv2_resnet101w2.in1k": _v2("r101_2x_sk0", "ResNet-101 x2 (sk0)", 77.0),
    "simclrv2_resnet152.in1k": _v2("r152_1x_sk0", "ResNet-152 (sk0)", 74.5),
    "simclrv2_resnet152w2.in1k": _v2("r152_2x_sk0", "ResNet-152 x2 (sk0)", 77.4),
    "simclrv2_skresnet50.in1k": _v2("r50_1x_sk1", "SK-ResNet-50 (sk1)", 74.6),
    "simclrv2_skresnet50w2.in1k": _v2("r50_2x_sk1", "SK-ResNet-50 x2 (sk1)", 77.7),
    "simclrv2_skresnet101.in1k": _v2("r101_1x_sk1", "SK-ResNet-101 (sk1)", 76.3),
    "simclrv2_skresnet101w2.in1k": _v2("r101_2x_sk1", "SK-ResNet-101 x2 (sk1)", 79.0),
    "simclrv2_skresnet152.in1k": _v2("r152_1x_sk1", "SK-ResNet-152 (sk1)", 77.2),
    "simclrv2_skresnet152w2.in1k": _v2("r152_2x_sk1", "SK-ResNet-152 x2 (sk1)", 79.4),
    "simclrv2_skresnet152w3.in1k": _v2("r152_3x_sk1", "SK-ResNet-152 x3 (sk1)", 79.8),
})


def _simclr(name, pretrained, depth=50, width=1, **kwargs):
    return build_resnet(name, pretrained, depth=depth, width=width, same_padding="maxpool", **kwargs)


@register_model
def simclr_resnet50(pretrained=False, **kwargs):
    """SimCLR v1 ResNet-50 (1x): 69.1% ImageNet-1k linear."""
    return _simclr("simclr_resnet50", pretrained, **kwargs)


@register_model
def simclr_resnet50w2(pretrained=False, **kwargs):
    """SimCLR v1 ResNet-50 (2x): 74.2% ImageNet-1k linear."""
    return _simclr("simclr_resnet50w2", pretrained, width=2, **kwargs)


@register_model
def simclr_resnet50w4(pretrained=False, **kwargs):
    """SimCLR v1 ResNet-50 (4x): 76.6% ImageNet-1k linear."""
    return _simclr("simclr_resnet50w4", pretrained, width=4, **kwargs)


@register_model
def simclrv2_resnet50(pretrained=False, **kwargs):
    """SimCLR v2 ResNet-50 (1x, sk0): 71.7% ImageNet-1k linear."""
    return _simclr("simclrv2_resnet50", pretrained, **kwargs)


@register_model
def simclrv2_resnet50w2(pretrained=False, **kwargs):
    """SimCLR v2 ResNet-50 (2x, sk0): 75.6% ImageNet-1k linear."""
    return _simclr("simclrv2_resnet50w2", pretrained, width=2, **kwargs)


@register_model
def simclrv2_resnet101(pretrained=False, **kwargs):
    """SimCLR v2 ResNet-101 (1x, sk0): 73.6% ImageNet-1k linear."""
    return _simclr("simclrv2_resnet101", pretrained, depth=101, **kwargs)


@register_model
def simclrv2_resnet101w2(pretrained=False, **kwargs):
    """SimCLR v2 ResNet-101 (2x, sk0): 77.0% ImageNet-1k linear."""
    return _simclr("simclrv2_resnet101w2", pretrained, depth=101, width=2, **kwargs)


@register_model
def simclrv2_resnet152(pretrained=False, **kwargs):
    """SimCLR v2 ResNet-152 (1x, sk0): 74.5% ImageNet-1k linear."""
    return _simclr("simclrv2_resnet152", pretrained, depth=152, **kwargs)


@register_model
def simclrv2_resnet152w2(pretrained=False, **kwargs):
    """SimCLR v2 ResNet-152 (2x, sk0): 77.4% ImageNet-1k linear."""
    return _simclr("simclrv2_resnet152w2", pretrained, depth=152, width=2, **kwargs)


@register_model
def simclrv2_skresnet50(pretrained=False, **kwargs):
    """SimCLR v2 SK-ResNet-50 (1x, sk1): 74.6% ImageNet-1k linear."""
    return build_sk_resnet("simclrv2_skresnet50", pretrained, **kwargs)


@register_model
def simclrv2_skresnet50w2(pretrained=False, **kwargs):
    """SimCLR v2 SK-ResNet-50 (2x, sk1): 77.7% ImageNet-1k linear."""
    return build_sk_resnet("simclrv2_skresnet50w2", pretrained, width=2, **kwargs)


@register_model
def simclrv2_skresnet101(pretrained=False, **kwargs):
    """SimCLR v2 SK-ResNet-101 (1x, sk1): 76.3% ImageNet-1k linear."""
    return build_sk_resnet("simclrv2_skresnet101", pretrained, depth=101, **kwargs)


@register_model
def simclrv2_skresnet101w2(pretrained=False, **kwargs):
    """SimCLR v2 SK-ResNet-101 (2x, sk1): 79.0% ImageNet-1k linear."""
    return build_sk_resnet("simclrv2_skresnet101w2", pretrained, depth=101, width=2, **kwargs)


@register_model
def simclrv2_skresnet152(pretrained=False, **kwargs):
    """SimCLR v2 SK-ResNet-152 (1x, sk1): 77.2% ImageNet-1k linear."""
    return build_sk_resnet("simclrv2_skresnet152", pretrained, depth=152, **kwargs)


@register_model
def simclrv2_skresnet152w2(pretrained=False, **kwargs):
    """SimCLR v2 SK-ResNet-152 (2x, sk1): 79.4% ImageNet-1k linear."""
    return build_sk_resnet("simclrv2_skresnet152w2", pretrained, depth=152, width=2, **kwargs)


@register_model
def simclrv2_skresnet152w3(pretrained=False, **kwargs):
    """SimCLR v2 SK-ResNet-152 (3x, sk1): 79.8% ImageNet-1k linear."""
    return build_sk_resnet("simclrv2_skresnet152w3", pretrained, depth=152, width=3, **kwargs)
