"""Every entry builds, runs, and has the official architecture's parameter count.

References are independent of timm: the key/shape lists of the official checkpoints
(tests/data/official_keys, from the official code), torchvision's ResNets, and an analytic count
of bottleneck ResNets for the widths whose official code widens every stage.
"""
import gzip
import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchvision
from timm.models import ResNet, VisionTransformer

import clzoo
from clzoo.models._archs import CMCResNet, mocov3_sincos_pos_embed, rgb_to_lab
from tests.helpers import read_official_keys

BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def official_params(keys_file, prefix="", drop=()):
    """Parameter count of the backbone in an official key list (buffers excluded)."""
    total = 0
    for key, (shape, _) in read_official_keys(keys_file).items():
        if not key.startswith(prefix) or key.endswith(BUFFERS):
            continue
        if any(key[len(prefix):].startswith(d) for d in drop):
            continue
        total += math.prod(shape)
    return total


def bottleneck_resnet_params(layers, width=1, groups=1, width_per_group=64, in_chans=3):
    """Analytic count of a torchvision-layout bottleneck ResNet with every stage (stem too) x width."""
    stem = 64 * width
    total = in_chans * stem * 49 + 2 * stem
    inplanes = stem
    for n, planes in zip(layers, (64, 128, 256, 512)):
        planes *= width
        w = int(planes * width_per_group / 64) * groups
        out = planes * 4
        for b in range(n):
            total += inplanes * w + 2 * w + (w // groups) * w * 9 + 2 * w + w * out + 2 * out
            if b == 0:
                total += inplanes * out + 2 * out
            inplanes = out
    return total


def tv(fn, **kw):
    model = fn(**kw)
    return n_params(model) - n_params(model.fc)


R50 = tv(torchvision.models.resnet50)
EXPECTED = {
    # official key lists
    "dino_vits16": official_params("dino_vit_small16_backbone_pth.txt"),
    "dino_vits8": official_params("dino_vit_small8_backbone_pth.txt"),
    "dino_vitb16": official_params("dino_vit_base16_backbone_pth.txt"),
    "dino_vitb8": official_params("dino_vit_base8_backbone_pth.txt"),
    "dino_resnet50": official_params("dino_resnet50_backbone_pth.txt"),
    "mocov1_resnet50": official_params("moco_v1_full_training_state_dict.txt", "module.encoder_q.", ("fc.",)),
    "mocov2_resnet50": official_params("moco_v2_full_training_state_dict.txt", "module.encoder_q.", ("fc.",)),
    "mocov3_resnet50": official_params("mocov3_r50_state_dict.txt", "module.base_encoder.", ("fc.",)),
    "mocov3_vits16": official_params("mocov3_vit_small_state_dict.txt", "module.base_encoder.", ("head.",)),
    "mocov3_vitb16": official_params("mocov3_vit_base_state_dict.txt", "module.base_encoder.", ("head.",)),
    "swav_resnet50": official_params("swav_rn50_pth_tar.txt", "module.", ("projection_head.", "prototypes.")),
    "swav_resnet50w2": official_params("swav_rn50w2_pth_tar.txt", "module.", ("projection_head.", "prototypes.")),
    "deepclusterv2_resnet50": official_params("deepclusterv2_rn50_pth_tar.txt", "module.",
                                              ("projection_head.", "prototypes.")),
    "simsiam_resnet50": official_params("simsiam_state_dict.txt", "module.encoder.", ("fc.",)),
    "barlowtwins_resnet50": official_params("barlowtwins_resnet50_pth.txt"),
    "instdisc_resnet50": official_params("lemniscate_resnet50_state_dict.txt", "module.", ("fc.",)),
    "infomin_resnet50": official_params("pycontrast_infomin_model.txt", "module.encoder."),
    "cmc_resnet50half": official_params("cmc_resnet50v1_model.txt", "encoder.module.", ("l_to_ab.fc", "ab_to_l.fc")),
    "cmc_resnet50": official_params("cmc_resnet50v2_model.txt", "encoder.module.", ("l_to_ab.fc", "ab_to_l.fc")),
    "cmc_resnet50w2": official_params("cmc_resnet50v3_model.txt", "encoder.module.", ("l_to_ab.fc", "ab_to_l.fc")),
    # torchvision
    "instdisc_resnet18": tv(torchvision.models.resnet18),
    "infomin_resnet101": tv(torchvision.models.resnet101),
    "infomin_resnet152": tv(torchvision.models.resnet152),
    "infomin_resnext101_32x4d": tv(torchvision.models.resnet.ResNet, block=torchvision.models.resnet.Bottleneck,
                                   layers=[3, 4, 23, 3], groups=32, width_per_group=4),
    # PyContrast resnext{101,152}v{2,3} / v{1,2} (analytic, checked against torchvision's 32x4d below)
    **{f"infomin_resnext{d}_{g}x{w}d": bottleneck_resnet_params((3, 4, 23, 3) if d == 101 else (3, 8, 36, 3),
                                                                groups=g, width_per_group=w)
       for d, g, w in [(101, 32, 8), (101, 64, 4), (152, 32, 4), (152, 32, 8)]},
    # analytic, every stage widened (SwAV resnet50.py, SimCLR resnet.py, VISSL, BYOL)
    "swav_resnet50w4": bottleneck_resnet_params((3, 4, 6, 3), 4),
    "swav_resnet50w5": bottleneck_resnet_params((3, 4, 6, 3), 5),
    "simclr_resnet50w2": bottleneck_resnet_params((3, 4, 6, 3), 2),
    "simclr_resnet50w4": bottleneck_resnet_params((3, 4, 6, 3), 4),
    "simclrv2_resnet50w2": bottleneck_resnet_params((3, 4, 6, 3), 2),
    "simclrv2_resnet101": bottleneck_resnet_params((3, 4, 23, 3)),
    "simclrv2_resnet101w2": bottleneck_resnet_params((3, 4, 23, 3), 2),
    "simclrv2_resnet152": bottleneck_resnet_params((3, 8, 36, 3)),
    "simclrv2_resnet152w2": bottleneck_resnet_params((3, 8, 36, 3), 2),
    "pirl_resnet50w2": bottleneck_resnet_params((3, 4, 6, 3), 2),
    "byol_resnet200w2": bottleneck_resnet_params((3, 24, 36, 3), 2),
}
for _n in ("mocov1_resnet50", "simclr_resnet50", "simclrv2_resnet50", "byol_resnet50", "selav2_resnet50",
           "pirl_resnet50"):
    EXPECTED.setdefault(_n, R50)
# SimCLR v2 selective-kernel models: the exact count of the TF graph the official resnet.py builds
# (tests/data/golden/simclr_layouts.json.gz, base_model trainables); the published totals agree when rounded.
_TF_LAYOUTS = json.load(gzip.open(Path(__file__).parent / "data" / "golden" / "simclr_layouts.json.gz", "rt"))
for _tf, _name in [("r50_1x_sk1", "simclrv2_skresnet50"), ("r50_2x_sk1", "simclrv2_skresnet50w2"),
                   ("r101_1x_sk1", "simclrv2_skresnet101"), ("r101_2x_sk1", "simclrv2_skresnet101w2"),
                   ("r152_1x_sk1", "simclrv2_skresnet152"), ("r152_2x_sk1", "simclrv2_skresnet152w2"),
                   ("r152_3x_sk1", "simclrv2_skresnet152w3")]:
    EXPECTED[_name] = sum(math.prod(s) for n, s in _TF_LAYOUTS[_tf]
                          if n.startswith("base_model/") and "moving_" not in n)
PUBLISHED_M = {"simclrv2_skresnet50": 35, "simclrv2_skresnet50w2": 140, "simclrv2_skresnet152w3": 795}


def test_reference_counts_agree_with_each_other():
    # the analytic formula reproduces torchvision and the official SwAV w2 layout
    assert bottleneck_resnet_params((3, 4, 6, 3)) == R50
    assert bottleneck_resnet_params((3, 8, 36, 3)) == tv(torchvision.models.resnet152)
    assert bottleneck_resnet_params((3, 4, 6, 3), 2) == EXPECTED["swav_resnet50w2"]
    assert official_params("dino_resnet50_backbone_pth.txt") == R50
    assert bottleneck_resnet_params((3, 4, 23, 3), groups=32, width_per_group=4) == EXPECTED["infomin_resnext101_32x4d"]
    # PyContrast README: InfoMin ResNeXt-101 87M and ResNeXt-152 120M parameters (the 32x8d models)
    assert [round(EXPECTED[f"infomin_resnext{d}_32x8d"] / 1e6) for d in (101, 152)] == [87, 120]
    for name, millions in PUBLISHED_M.items():  # SimCLR v2 README / paper totals
        assert round(EXPECTED[name] / 1e6) == millions


def test_every_entry_has_a_reference():
    assert set(EXPECTED) >= set(clzoo.list_models())


@pytest.mark.parametrize("name", clzoo.list_models())
def test_param_count_matches_official_architecture(name):
    with torch.device("meta"):
        model = clzoo.create_model(name)
    assert n_params(model) == EXPECTED[name]


@pytest.mark.parametrize("name", clzoo.list_models())
def test_every_entry_builds_and_runs(name):
    torch.manual_seed(0)
    is_vit = "vit" in name
    model = clzoo.create_model(name, **(dict(img_size=32) if is_vit else {})).eval()
    assert isinstance(model, CMCResNet if name.startswith("cmc_") else VisionTransformer if is_vit else ResNet)
    with torch.no_grad():
        out = model(torch.rand(2, 3, 32, 32))
    assert out.shape == (2, model.num_features)
    assert torch.isfinite(out).all()


def test_mocov3_vit_small_has_12_heads_and_computes_12_head_attention():
    model = clzoo.create_model("mocov3_vits16", img_size=32).eval()
    attn = model.blocks[0].attn
    assert attn.num_heads == 12 and clzoo.create_model("dino_vits16", img_size=32).blocks[0].attn.num_heads == 6
    x = torch.randn(2, 5, 384)

    def reference(x, heads):  # plain multi-head attention from the qkv/proj weights
        B, N, C = x.shape
        q, k, v = (x @ attn.qkv.weight.T + attn.qkv.bias).reshape(B, N, 3, heads, C // heads).permute(2, 0, 3, 1, 4)
        a = ((q @ k.transpose(-2, -1)) * (C // heads) ** -0.5).softmax(-1)
        return (a @ v).transpose(1, 2).reshape(B, N, C) @ attn.proj.weight.T + attn.proj.bias

    with torch.no_grad():
        out = attn(x)
    torch.testing.assert_close(out, reference(x, 12), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(out, reference(x, 6), atol=1e-3)


def test_mocov3_vit_from_scratch_has_fixed_sincos_pos_embed():
    model = clzoo.create_model("mocov3_vits16", img_size=64)
    assert not model.pos_embed.requires_grad
    torch.testing.assert_close(model.pos_embed.data, mocov3_sincos_pos_embed((4, 4), 384))
    pe = mocov3_sincos_pos_embed((2, 3), 8)
    assert pe.shape == (1, 7, 8) and torch.equal(pe[0, 0], torch.zeros(8))
    # moco-v3: meshgrid(w, h) 'ij' -> token k has w-coordinate k // h, h-coordinate k % h; omega_0 = 1
    assert torch.allclose(pe[0, 1:, 0], torch.tensor([0.0, 0, 1, 1, 2, 2]).sin())
    assert torch.allclose(pe[0, 1:, 4], torch.tensor([0.0, 1, 0, 1, 0, 1]).sin())


def test_wide_resnet_widens_the_stem_too():
    model = clzoo.create_model("swav_resnet50w2")
    assert model.conv1.out_channels == 128 and model.bn1.num_features == 128
    assert model.layer1[0].conv1.in_channels == 128 and model.layer1[0].downsample[0].in_channels == 128
    assert model.num_features == 4096 and model.feature_info[0]["num_chs"] == 128
    expected = read_official_keys("swav_rn50w2_pth_tar.txt")
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    for key, (shape, _) in expected.items():
        k = key.removeprefix("module.")
        if not k.startswith(("projection_head", "prototypes")):
            assert shapes[k] == shape, k


def test_simclr_maxpool_is_tf_same():
    model = clzoo.create_model("simclr_resnet50")
    x = torch.randn(1, 4, 8, 8)
    # TF 'SAME' for k3/s2 on an even input pads 0 before and 1 after, with -inf
    ref = F.max_pool2d(F.pad(x, (0, 1, 0, 1), value=float("-inf")), 3, 2)
    torch.testing.assert_close(model.maxpool(x), ref)
    assert not torch.equal(torch.nn.MaxPool2d(3, 2, 1)(x), ref)


def test_byol_strided_convs_are_tf_same():
    model = clzoo.create_model("byol_resnet50").eval()
    x = torch.randn(1, 3, 32, 32)
    conv = model.conv1  # 7x7/2 on 32 px: SAME pads 2 before, 3 after
    ref = F.conv2d(F.pad(x, (2, 3, 2, 3)), conv.weight, None, 2)
    torch.testing.assert_close(conv(x), ref)
    block = model.layer2[0].conv2  # 3x3/2: pads 0 before, 1 after
    y = torch.randn(1, block.in_channels, 8, 8)
    torch.testing.assert_close(block(y), F.conv2d(F.pad(y, (0, 1, 0, 1)), block.weight, None, 2))
    assert {k for k in model.state_dict()} == {k for k in clzoo.create_model("mocov2_resnet50").state_dict()}


def test_rgb_to_lab_matches_reference_values():
    # sRGB primaries and white in CIE Lab (D65), e.g. as skimage.color.rgb2lab gives them
    rgb = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    lab = rgb_to_lab(rgb.T.reshape(1, 3, 5, 1))[0, :, :, 0].T
    expected = torch.tensor([[100.0, 0.0, 0.0], [53.2408, 80.0925, 67.2032], [87.7347, -86.1827, 83.1793],
                             [32.2970, 79.1875, -107.8602], [0.0, 0.0, 0.0]])
    torch.testing.assert_close(lab, expected, atol=2e-2, rtol=0)


def test_cmc_splits_l_and_ab_into_two_resnets():
    model = clzoo.create_model("cmc_resnet50half").eval()
    assert model.l_to_ab.conv1.in_channels == 1 and model.ab_to_l.conv1.in_channels == 2
    x = torch.rand(2, 3, 32, 32)
    lab = (rgb_to_lab(x) - model.lab_mean.to(x)) / model.lab_std.to(x)  # float64 constants, cast like split_views
    with torch.no_grad():
        expected = torch.cat([model.l_to_ab(lab[:, :1]), model.ab_to_l(lab[:, 1:])], 1).mean((2, 3))
        torch.testing.assert_close(model(x), expected)
        fmodel = clzoo.create_model("cmc_resnet50half", features_only=True)
        feats = fmodel(x)
    # each half-width branch: 64-channel stem, stages (32..256) x 4; the two branches are concatenated
    assert [f.shape[1] for f in feats] == [2 * 64, 2 * 128, 2 * 256, 2 * 512, 2 * 1024]
    assert fmodel.feature_info.channels() == [f.shape[1] for f in feats]


@pytest.mark.parametrize("name,kwargs,channels,reductions", [
    ("mocov2_resnet50", {}, [64, 256, 512, 1024, 2048], [2, 4, 8, 16, 32]),
    ("swav_resnet50w2", dict(out_indices=(1, 2, 3, 4)), [512, 1024, 2048, 4096], [4, 8, 16, 32]),
    ("dino_vits16", dict(img_size=64, out_indices=(-2, -1)), [384, 384], [16, 16]),
])
def test_features_only(name, kwargs, channels, reductions):
    model = clzoo.create_model(name, features_only=True, **kwargs).eval()
    assert model.feature_info.channels() == channels and model.feature_info.reduction() == reductions
    size = kwargs.get("img_size", 64)
    with torch.no_grad():
        feats = model(torch.rand(1, 3, size, size))
    assert [f.shape[1] for f in feats] == channels
    assert [size // f.shape[-1] for f in feats] == reductions
