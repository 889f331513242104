"""Parity with the official code, one case per PyTorch file format (checkpoints.md §2-§16).

Each case builds the network the way the official repository defines it, independently of clzoo:
torchvision's resnet50 for the ResNet-50 families (the official repos use its module names), the
functional references of tests/helpers.py for ViTs and the CMC branches, and the official head modules
written out as the official code writes them. Weights are random, BN running statistics included.
The file is saved in the official layout (nesting, DDP prefixes, momentum encoders, queues,
optimizer, epoch, argparse.Namespace, pickled memory banks; the keys are checked against the key lists
of tests/data/official_keys), loaded through `clzoo.create_model(..., pretrained_cfg_overlay=dict(file=))`
and compared: max |diff| <= 1e-5 in float32. Heads come back through `clzoo.load_pretraining_checkpoint`
and must compute what the official heads compute.

Sizes are reduced where the layout allows it (ViTs of depth 2 at 32 px, narrow SSL heads, 64 px
inputs); key names and nesting are those of the released files.
"""
import argparse
import functools
import re
import shutil
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

import clzoo
from clzoo import CheckpointMismatchError, ConversionError, ManualDownloadError, get_pretrained_cfg
from tests.helpers import (random_resnet_state_dict, randomize_bn_stats, read_official_keys, resnet_reference,
                           save_with_nce_average, vit_reference)

TOL = 1e-5
VIT = dict(depth=2, img_size=32)  # same key layout as the released ViTs, two blocks, a 2x2 patch grid


def rgb(size=32, seed=1):  # ResNets reach a 1x1 map in layer4: every layer still runs
    return torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(seed))


def max_diff(a, b):
    return (a - b).abs().max().item()


# ---------------------------------------------------------------------------------------------
# the official networks, independent of clzoo

@functools.lru_cache(maxsize=None)
def torchvision_resnet50():
    """torchvision's resnet50 (the official repos' backbone) with random weights and BN statistics."""
    with torch.device("meta"):
        net = torchvision.models.resnet50()
    net.fc = nn.Identity()  # the official linear-eval feature: the 2048-d average-pooled output
    net.load_state_dict(random_resnet_state_dict(seed=0), strict=True, assign=True)
    return net.eval()


def other_resnet50(seed):
    """Another network in the same file (momentum encoder, student, EMA model). It shares most tensors with
    the backbone, so the file stays small (torch.save writes a storage once), and differs in the stem and
    the last block, so a converter that picks the wrong network gives other features."""
    sd = dict(torchvision_resnet50().state_dict())
    fresh = random_resnet_state_dict(layers=(1, 1, 1, 3), seed=seed)
    for key in fresh:
        if key.startswith(("conv1.", "bn1.", "layer4.2.")):
            sd[key] = fresh[key]
    return sd


def random_vit_sd(dim=384, depth=2, patch=16, tokens=5, seed=0, pos_embed=None):
    """A DINO / MoCo v3 `VisionTransformer` state dict (timm 0.4 names, as both repos save it)."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape, scale=0.02):
        return torch.randn(*shape, generator=g) * scale

    sd = {"cls_token": r(1, 1, dim, scale=1.0), "pos_embed": r(1, tokens, dim, scale=1.0) if pos_embed is None
          else pos_embed, "patch_embed.proj.weight": r(dim, 3, patch, patch, scale=(3 * patch * patch) ** -0.5),
          "patch_embed.proj.bias": r(dim)}
    for i in range(depth):
        q = f"blocks.{i}."
        for norm in ("norm1", "norm2"):
            sd[q + norm + ".weight"] = 1 + r(dim, scale=0.2)
            sd[q + norm + ".bias"] = r(dim, scale=0.1)
        for name, (o, n) in {"attn.qkv": (3 * dim, dim), "attn.proj": (dim, dim), "mlp.fc1": (4 * dim, dim),
                             "mlp.fc2": (dim, 4 * dim)}.items():
            sd[q + name + ".weight"] = r(o, n, scale=n ** -0.5)
            sd[q + name + ".bias"] = r(o, scale=0.1)
    sd["norm.weight"], sd["norm.bias"] = 1 + r(dim, scale=0.2), r(dim, scale=0.1)
    return sd


def mocov3_pos_embed(grid, dim, temperature=10000.0):
    """moco-v3 vits.py `build_2d_sincos_position_embedding`: a zero CLS row, then sin/cos of w and h."""
    ys, xs = np.meshgrid(np.arange(grid), np.arange(grid), indexing="xy")  # moco-v3 meshgrid(w, h), 'ij':
    omega = temperature ** -(np.arange(dim // 4) / (dim // 4))              # w is the slow index of a token
    w, h = np.outer(xs.ravel(), omega), np.outer(ys.ravel(), omega)
    table = np.concatenate([np.sin(w), np.cos(w), np.sin(h), np.cos(h)], axis=1)
    return torch.from_numpy(np.concatenate([np.zeros((1, dim)), table])[None]).float()


def mlp(dims, bias=False, bn=True, last_bn=False, last_bias=False, act=nn.ReLU):
    """The Linear(-BN)-ReLU stacks of the official builders (moco-v3 `_build_mlp`, SimSiam, Barlow Twins)."""
    layers = []
    for i, (n_in, n_out) in enumerate(zip(dims[:-1], dims[1:])):
        last = i == len(dims) - 2
        layers.append(nn.Linear(n_in, n_out, bias=last_bias if last else bias))
        if not last:
            layers += [nn.BatchNorm1d(n_out)] if bn else []
            layers.append(act())
        elif last_bn:
            layers.append(nn.BatchNorm1d(n_out, affine=False))
    return nn.Sequential(*layers)


class DINOHeadRef(nn.Module):
    """facebookresearch/dino vision_transformer.py `DINOHead` (use_bn=False, nlayers=3)."""

    def __init__(self, in_dim, out_dim=96, hidden=48, bottleneck=16):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(),
                                 nn.Linear(hidden, bottleneck))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the deprecated weight_norm is what DINO uses (weight_g/weight_v)
            self.last_layer = nn.utils.weight_norm(nn.Linear(bottleneck, out_dim, bias=False))
        self.last_layer.weight_g.data.uniform_(0.5, 1.5)

    def forward(self, x):
        return self.last_layer(F.normalize(self.mlp(x), dim=-1, p=2))


class MultiPrototypesRef(nn.Module):
    """facebookresearch/swav resnet50.py `MultiPrototypes` (DeepCluster-v2: 3 x 3000 prototypes)."""

    def __init__(self, dim, ks):
        super().__init__()
        for i, k in enumerate(ks):
            self.add_module(f"prototypes{i}", nn.Linear(dim, k, bias=False))

    def forward(self, x):
        return torch.stack([getattr(self, f"prototypes{i}")(x) for i in range(len(self._modules))])


def random_head(module, seed):
    torch.manual_seed(seed)
    for p in module.parameters():
        nn.init.normal_(p, std=p.shape[-1] ** -0.5 if p.dim() > 1 else 0.1)
    return randomize_bn_stats(module, torch.Generator().manual_seed(seed)).eval()


def prefixed(prefix, sd):
    return {prefix + k: v for k, v in sd.items()}


def optimizer_state(n=3):
    return {"state": {i: {"momentum_buffer": torch.randn(4)} for i in range(n)},
            "param_groups": [{"lr": 0.03, "momentum": 0.9, "weight_decay": 1e-4, "params": list(range(n))}]}


# ---------------------------------------------------------------------------------------------
# official file layouts


@dataclass
class Case:
    entry: str  # clzoo entry the released file belongs to
    ckpt: Any  # the object torch.save'd, in the official layout
    reference: Callable[[torch.Tensor], torch.Tensor]  # the official feature for RGB input
    layout: Optional[tuple] = None  # (path to the state dict in ckpt, key list, shrunk head prefixes)
    heads: Dict[str, Callable] = field(default_factory=dict)  # name -> fn(ckpt) -> (loaded, reference, input)
    kwargs: Dict[str, Any] = field(default_factory=dict)
    save: Optional[Callable] = None  # custom writer (pickled foreign classes)


def _head(branch, name, ref, n_in):
    return lambda ck: (getattr(ck, branch).heads[name], ref, n_in)


def dino_backbone_vit():
    sd = random_vit_sd(seed=1)
    return Case("dino_vits16.in1k", sd, lambda x: vit_reference(sd, x, 6), ((), "dino_vit_small16_backbone_pth.txt", ()),
                kwargs=VIT)


def dino_full(arch):
    """main_dino.py save_dict: student (DDP), teacher (ViT: no DDP wrapper, RN50: DDP), args, center."""
    if arch == "vit":
        teacher_bb, student_bb, dim = random_vit_sd(seed=3), random_vit_sd(seed=4), 384
        teacher_prefix, ref, entry, kw = "", (lambda x: vit_reference(teacher_bb, x, 6)), "dino_vits16.in1k_full", VIT
    else:
        net, dim = torchvision_resnet50(), 2048
        teacher_bb, student_bb = net.state_dict(), other_resnet50(4)
        teacher_prefix, ref, entry, kw = "module.", net, "dino_resnet50.in1k_full", {}
    t_head, s_head = random_head(DINOHeadRef(dim), 5), random_head(DINOHeadRef(dim), 6)
    ckpt = {
        "student": prefixed("module.backbone.", student_bb) | prefixed("module.head.", s_head.state_dict()),
        "teacher": prefixed(teacher_prefix + "backbone.", teacher_bb) | prefixed(teacher_prefix + "head.",
                                                                                 t_head.state_dict()),
        "optimizer": optimizer_state(), "epoch": 100, "fp16_scaler": {"scale": 65536.0},
        "args": argparse.Namespace(arch="vit_small" if arch == "vit" else "resnet50", patch_size=16, out_dim=96,
                                   momentum_teacher=0.996, teacher_temp=0.04),
        "dino_loss": {"center": torch.randn(1, 96)},
    }
    layout = (("student",), "dino_vit_small16_full_student.txt", ("module.head.",)) if arch == "vit" else None
    return Case(entry, ckpt, ref, layout, kwargs=kw,
                heads={"teacher head": _head("target", "head", t_head, dim),
                       "student head": _head("online", "head", s_head, dim)})


def moco(version):
    """main_moco.py: {'epoch','arch','state_dict','optimizer'}, query/key encoders, queue (DDP)."""
    q, k = torchvision_resnet50(), other_resnet50(8)
    def fc():  # v1: Linear(2048, 128); v2: the MLP main_moco.py puts in front of it
        return nn.Linear(2048, 128) if version == 1 else nn.Sequential(nn.Linear(2048, 2048), nn.ReLU(),
                                                                        nn.Linear(2048, 128))
    fc_q, fc_k = random_head(fc(), 9), random_head(fc(), 10)
    sd = (prefixed("module.encoder_q.", q.state_dict() | prefixed("fc.", fc_q.state_dict()))
          | prefixed("module.encoder_k.", k | prefixed("fc.", fc_k.state_dict()))
          | {"module.queue": F.normalize(torch.randn(128, 4096), dim=0), "module.queue_ptr": torch.zeros(1, dtype=torch.long)})
    entry = "mocov1_resnet50.200ep" if version == 1 else "mocov2_resnet50.800ep"
    return Case(entry, {"epoch": 200, "arch": "resnet50", "state_dict": sd, "optimizer": optimizer_state()}, q,
                (("state_dict",), f"moco_v{version}_full_training_state_dict.txt", ("module.queue",)),
                heads={"fc": _head("online", "fc", fc_q, 2048)})


def mocov3(arch):
    """moco-v3 builder.py: base/momentum encoders with the projector inside, predictor beside (DDP)."""
    if arch == "vit":
        dim, grid = 384, 2
        pos = mocov3_pos_embed(grid, dim)
        base, mom = random_vit_sd(seed=11, pos_embed=pos), random_vit_sd(seed=12, pos_embed=pos)
        proj = random_head(mlp([dim, 64, 64, 32], last_bn=True), 13)  # _build_mlp(3, dim, mlp_dim, dim)
        pred = random_head(mlp([32, 64, 32], last_bn=True), 14)  # ViT: last_bn=True
        name, ref, kw, keys = "head", (lambda x: vit_reference(base, x, 12)), VIT, "mocov3_vit_small_state_dict.txt"
        entry = "mocov3_vits16.300ep"
    else:
        dim = 2048
        net = torchvision_resnet50()
        base, mom = net.state_dict(), other_resnet50(12)
        proj = random_head(mlp([dim, 64, 32], last_bn=True), 13)  # _build_mlp(2, 2048, mlp_dim, dim)
        pred = random_head(mlp([32, 64, 32], last_bn=False), 14)  # ResNet: last_bn=False
        name, ref, kw, keys = "fc", net, {}, "mocov3_r50_state_dict.txt"
        entry = "mocov3_resnet50.1000ep"
    sd = (prefixed("module.base_encoder.", base | prefixed(name + ".", proj.state_dict()))
          | prefixed("module.momentum_encoder.", mom | prefixed(name + ".", proj.state_dict()))
          | prefixed("module.predictor.", pred.state_dict()))
    heads = ("module.base_encoder.head.", "module.momentum_encoder.head.", "module.base_encoder.fc.",
             "module.momentum_encoder.fc.", "module.predictor.")
    return Case(entry, {"epoch": 300, "arch": "vit_small" if arch == "vit" else "resnet50", "state_dict": sd,
                        "optimizer": optimizer_state(), "scaler": {"scale": 1024.0}},
                ref, (("state_dict",), keys, heads), kwargs=kw,
                heads={"projector": _head("online", name, proj, dim), "predictor": _head("online", "predictor", pred, 32)})


def swav(kind):
    """SwAV / DeepCluster-v2: a flat DDP state dict with projection_head and prototypes (SeLa-v2 files are
    read by the same format; their head keys are not published)."""
    net = torchvision_resnet50()
    proj = random_head(nn.Sequential(nn.Linear(2048, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Linear(64, 16)), 16)
    protos = random_head(MultiPrototypesRef(16, (30, 30, 30)) if kind == "deepclusterv2"
                         else nn.Linear(16, 30, bias=False), 17)
    sd = prefixed("module.", net.state_dict() | prefixed("projection_head.", proj.state_dict())
                  | prefixed("prototypes.", protos.state_dict()))
    entry = {"swav": "swav_resnet50.800ep", "deepclusterv2": "deepclusterv2_resnet50.800ep"}[kind]
    keys = "deepclusterv2_rn50_pth_tar.txt" if kind == "deepclusterv2" else "swav_rn50_pth_tar.txt"
    return Case(entry, sd, net, ((), keys, ("module.projection_head.", "module.prototypes.")),
                heads={"projection_head": _head("online", "projection_head", proj, 2048),
                       "prototypes": _head("online", "prototypes", protos, 16)})


def simsiam():
    """simsiam/builder.py: encoder.fc = 3-layer projector (last BN affine=False), predictor beside."""
    net = torchvision_resnet50()
    proj = random_head(mlp([2048, 64, 64, 32], last_bn=True, last_bias=True), 19)
    pred = random_head(mlp([32, 16, 32], last_bias=True), 20)
    sd = prefixed("module.encoder.", net.state_dict() | prefixed("fc.", proj.state_dict())) | prefixed(
        "module.predictor.", pred.state_dict())
    return Case("simsiam_resnet50.100ep_bs256", {"epoch": 100, "arch": "resnet50", "state_dict": sd,
                                           "optimizer": optimizer_state()}, net,
                (("state_dict",), "simsiam_state_dict.txt", ("module.encoder.fc.", "module.predictor.")),
                heads={"projector": _head("online", "fc", proj, 2048), "predictor": _head("online", "predictor", pred, 32)})


def barlowtwins(full):
    net = torchvision_resnet50()
    if not full:  # resnet50.pth: model.module.backbone.state_dict(), torchvision names, no fc
        return Case("barlowtwins_resnet50.1000ep", net.state_dict(), net, ((), "barlowtwins_resnet50_pth.txt", ()))
    proj = random_head(mlp([2048, 64, 64, 64]), 22)  # main.py: sizes [2048] + '8192-8192-8192', no bias
    bn = random_head(nn.BatchNorm1d(64, affine=False), 23)
    sd = prefixed("module.", prefixed("backbone.", net.state_dict()) | prefixed("projector.", proj.state_dict())
                  | prefixed("bn.", bn.state_dict()))
    return Case("barlowtwins_resnet50.1000ep_full", {"epoch": 1000, "model": sd, "optimizer": optimizer_state()}, net,
                (("model",), "barlowtwins_full_checkpoint_model.txt", ("module.projector.", "module.bn.")),
                heads={"projector": _head("online", "projector", proj, 2048), "bn": _head("online", "bn", bn, 64)})


def lemniscate():
    """lemniscate.pytorch main.py: DataParallel model with a 128-d fc, and the pickled NCEAverage object."""
    net = torchvision_resnet50()
    sd = prefixed("module.", net.state_dict() | {"fc.weight": torch.randn(128, 2048), "fc.bias": torch.randn(128)})

    def save(path):
        save_with_nce_average(lambda bank: {"epoch": 200, "arch": "resnet50", "state_dict": sd, "lemniscate": bank,
                                            "best_prec1": 46.8, "optimizer": optimizer_state()}, path)
    return Case("instdisc_resnet50.softmax65k", {"state_dict": sd}, net,
                (("state_dict",), "lemniscate_resnet50_state_dict.txt", ()), save=save)


def pycontrast_infomin():
    """PyContrast contrast_trainer.save: 'model' (DDP) is read; 'model_ema' (no prefix) is another network."""
    net, ema = torchvision_resnet50(), other_resnet50(26)
    heads = {"head.0.weight": torch.randn(2048, 2048), "head.0.bias": torch.randn(2048),
             "head.2.weight": torch.randn(128, 2048), "head.2.bias": torch.randn(128),
             "head_jig.fc1.0.weight": torch.randn(2048, 2048), "head_jig.fc1.0.bias": torch.randn(2048),
             "head_jig.fc1.2.weight": torch.randn(128, 2048), "head_jig.fc1.2.bias": torch.randn(128),
             "head_jig.fc2.weight": torch.randn(128, 1152), "head_jig.fc2.bias": torch.randn(128)}
    model = prefixed("module.", prefixed("encoder.", net.state_dict()) | heads)
    ckpt = {"model": model, "model_ema": prefixed("encoder.", ema) | heads, "epoch": 800,
            "contrast": {"memory": torch.randn(128, 64), "index": torch.tensor(0)}, "optimizer": optimizer_state()}
    return Case("infomin_resnet50.800ep", ckpt, net, (("model",), "pycontrast_infomin_model.txt", ()))


def lab_reference(x):
    """CMC LinearProbing.py: skimage.color.rgb2lab (sRGB, D65), normalised to about [-1, 1]."""
    a = x.double().permute(0, 2, 3, 1).numpy()
    a = np.where(a > 0.04045, ((a + 0.055) / 1.055) ** 2.4, a / 12.92)
    xyz = a @ np.array([[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169],
                        [0.019334, 0.119193, 0.950227]]).T / np.array([0.95047, 1.0, 1.08883])
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16 / 116)
    lab = np.stack([116 * f[..., 1] - 16, 500 * (f[..., 0] - f[..., 1]), 200 * (f[..., 1] - f[..., 2])], -1)
    lab = (lab - np.array([50.0, 6.025, -6.6895])) / np.array([50.0, 92.208, 101.1675])
    return torch.from_numpy(lab).permute(0, 3, 1, 2).float()


def ydbdr_reference(x):
    """PyContrast datasets/util.py: skimage.color.rgb2ydbdr, normalised with its mean/std."""
    m = torch.tensor([[0.299, 0.587, 0.114], [-0.45, -0.883, 1.333], [-1.333, 1.116, 0.217]])
    y = torch.einsum("ij,bjhw->bihw", m, x)
    return (y - torch.tensor([0.457, -0.082, -0.052]).view(1, 3, 1, 1)) / torch.tensor([0.5, 1.331, 1.333]).view(1, 3, 1, 1)


def _cmc_branches(seed):
    """CMC models/resnet.py ResNetV1 ('resnet50v1'): 64-channel stem, stages of 32..256 planes (is_half)."""
    return (random_resnet_state_dict(seed=seed, in_chans=1, stem=64, base=32),
            random_resnet_state_dict(seed=seed + 1, in_chans=2, stem=64, base=32))


def cmc():
    """train_CMC.py: {'opt','model','contrast','optimizer','epoch','amp'}; model = MyResNetsCMC whose encoder
    is DataParallel(ResNetV1): encoder.module.{l_to_ab,ab_to_l}.*, each with its own 128-d fc."""
    l_sd, ab_sd = _cmc_branches(27)
    fc = {"fc.weight": torch.randn(128, 1024), "fc.bias": torch.randn(128)}
    model = prefixed("encoder.module.l_to_ab.", l_sd | fc) | prefixed("encoder.module.ab_to_l.", ab_sd | fc)

    def reference(x):  # layer 6 of both branches, concatenated (LinearProbing.py)
        lab = lab_reference(x)
        return torch.cat([resnet_reference(l_sd, lab[:, :1]), resnet_reference(ab_sd, lab[:, 1:])], 1)
    ckpt = {"opt": argparse.Namespace(model="resnet50v1", nce_k=4096, amp=True), "model": model, "epoch": 240,
            "contrast": {"memory_l": torch.randn(64, 128), "memory_ab": torch.randn(64, 128),
                         "params": torch.tensor([4096, 0.07, -1, -1, 0.5])},
            "optimizer": optimizer_state(), "amp": {"loss_scaler0": {"loss_scale": 1024.0}}}
    return Case("cmc_resnet50half.in1k", ckpt, reference, (("model",), "cmc_resnet50v1_model.txt", ()))


def pycontrast_cmc():
    """PyContrast CMCSingleHead: module.encoder1 (Y) / module.encoder2 (DbDr), no fc; head1/head2 beside."""
    y_sd, dbdr_sd = _cmc_branches(29)
    heads = {"head1.0.weight": torch.randn(128, 1024), "head2.0.weight": torch.randn(128, 1024)}
    model = prefixed("module.", prefixed("encoder1.", y_sd) | prefixed("encoder2.", dbdr_sd) | heads)

    def reference(x):
        v = ydbdr_reference(x)
        return torch.cat([resnet_reference(y_sd, v[:, :1]), resnet_reference(dbdr_sd, v[:, 1:])], 1)
    return Case("cmc_resnet50half.pycontrast", {"model": model, "contrast": {}, "optimizer": optimizer_state(),
                                                "epoch": 200}, reference)


def vissl_pirl():
    """VISSL checkpoint: classy_state_dict.base_model.model.trunk with `_feature_blocks.` names."""
    net = torchvision_resnet50()
    heads = {"0.clf.0.weight": torch.randn(128, 2048), "1.clf.0.weight": torch.randn(128, 2048 * 9)}
    ckpt = {"phase_idx": 799, "iteration": 1000, "iteration_num": 1000, "train_phase_idx": 799,
            "loss": {"memory_embeddings": torch.randn(64, 128)},
            "classy_state_dict": {"base_model": {"model": {"trunk": prefixed("_feature_blocks.", net.state_dict()),
                                                           "heads": heads}, "meta": {}},
                                  "optimizer": optimizer_state(), "train": True}}
    return Case("pirl_resnet50.800ep_mlp_gblur", ckpt, net)


CASES = {
    "dino_backbone_vit": dino_backbone_vit,
    "dino_full_vit": functools.partial(dino_full, "vit"), "dino_full_resnet50": functools.partial(dino_full, "rn50"),
    "mocov1": functools.partial(moco, 1), "mocov2": functools.partial(moco, 2),
    "mocov3_resnet50": functools.partial(mocov3, "rn50"), "mocov3_vit_small": functools.partial(mocov3, "vit"),
    "swav": functools.partial(swav, "swav"), "deepclusterv2": functools.partial(swav, "deepclusterv2"),
    "simsiam": simsiam,
    "barlowtwins_backbone": functools.partial(barlowtwins, False), "barlowtwins_full": functools.partial(barlowtwins, True),
    "lemniscate": lemniscate, "pycontrast_infomin": pycontrast_infomin, "cmc_lab": cmc,
    "pycontrast_cmc_ydbdr": pycontrast_cmc, "vissl_pirl": vissl_pirl,
}
# measured max |diff| per case, printed at the end of the module (pytest -s) for the record
DIFFS: Dict[str, float] = {}


@pytest.fixture(scope="module", autouse=True)
def report_diffs():
    yield
    if DIFFS:
        print("\nparity max |diff|: " + ", ".join(f"{k} {v:.1e}" for k, v in DIFFS.items()))


@functools.lru_cache(maxsize=None)
def built(case_id):
    return CASES[case_id]()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """case id -> the official file on disk (written once per module)."""
    root, out = tmp_path_factory.mktemp("official"), {}

    def get(case_id):
        if case_id not in out:
            case = built(case_id)
            path = root / f"{case_id}.pth"
            case.save(path) if case.save else torch.save(case.ckpt, path)
            out[case_id] = path
        return out[case_id]
    yield get
    shutil.rmtree(root, ignore_errors=True)  # ~2 GB of ResNet-50 files: not worth keeping after a pass


def _in_reference_layout(key, depth):
    m = re.search(r"blocks\.(\d+)\.", key)
    return m is None or int(m.group(1)) < depth


def assert_official_layout(case):
    """The generated file has the released key names; shapes and dtypes too, except the narrowed heads
    and the position table of the smaller test image."""
    where, keys_file, narrowed = case.layout
    sd = case.ckpt
    for k in where:
        sd = sd[k]
    official = read_official_keys(keys_file)
    depth = case.kwargs.get("depth", 99)
    official = {k: v for k, v in official.items() if _in_reference_layout(k, depth)}
    assert sorted(sd) == sorted(official)
    for key, (shape, dtype) in official.items():
        if not key.startswith(narrowed) and not key.endswith("pos_embed"):
            assert (tuple(sd[key].shape), str(sd[key].dtype).replace("torch.", "")) == (shape, dtype), key


@pytest.mark.parametrize("case_id", list(CASES))
def test_features_equal_the_official_network(case_id, files, clzoo_home):
    case = built(case_id)
    if case.layout is not None:
        assert_official_layout(case)
    model = clzoo.create_model(case.entry, pretrained=True, pretrained_cfg_overlay=dict(file=str(files(case_id))),
                               **case.kwargs).eval()
    x = rgb()
    with torch.no_grad():
        ours, ref = model(x), case.reference(x)
    assert ours.shape == ref.shape and ours.dtype == torch.float32
    DIFFS[case_id] = max_diff(ours, ref)
    assert DIFFS[case_id] <= TOL, f"{case_id}: max |diff| {DIFFS[case_id]:.2e}"
    assert ref.std() > 0.05  # a network whose features are (nearly) constant would prove nothing


HEAD_CASES = [c for c in CASES if built(c).heads]


@pytest.mark.parametrize("case_id", HEAD_CASES)
def test_heads_equal_the_official_heads(case_id, files, clzoo_home):
    case = built(case_id)
    ckpt = clzoo.load_pretraining_checkpoint(case.entry, file=files(case_id), **case.kwargs)
    with torch.no_grad():
        for name, fn in case.heads.items():
            ours, ref, n_in = fn(ckpt)
            z = torch.randn(4, n_in, generator=torch.Generator().manual_seed(7))
            got, want = ours.eval()(z), ref(z)
            got = torch.stack(got) if isinstance(got, (list, tuple)) else got
            assert max_diff(got, want) <= TOL, name
    if case_id.startswith("dino_full"):
        assert torch.equal(ckpt.state["center"], case.ckpt["dino_loss"]["center"])
        assert ckpt.meta["epoch"] == 100 and ckpt.meta["args"]["momentum_teacher"] == 0.996
    if case_id.startswith("mocov"):
        assert ckpt.target is not None and len(ckpt.target.heads)
    if case_id in ("mocov1", "mocov2"):
        assert torch.equal(ckpt.state["queue"], case.ckpt["state_dict"]["module.queue"])


# ---------------------------------------------------------------------------------------------
# files of another method or architecture

WRONG = [
    # (file of case, loaded as entry, kwargs, error type, what the message must name)
    ("simsiam", "mocov2_resnet50.800ep", {}, ConversionError,
     ["not a moco checkpoint", "'module.encoder_q.'", "module.encoder.conv1.weight"]),
    ("mocov2", "simsiam_resnet50.100ep_bs256", {}, ConversionError,
     ["not a simsiam checkpoint", "'module.encoder.'", "module.encoder_q."]),
    ("swav", "barlowtwins_resnet50.1000ep_full", {}, ConversionError,
     ["not a barlowtwins_full checkpoint", "['model']", "module.conv1.weight"]),
    ("dino_backbone_vit", "mocov3_vits16.300ep", VIT, ConversionError,
     ["not a mocov3 checkpoint", "['state_dict']", "'cls_token'"]),
    ("mocov3_vit_small", "mocov3_resnet50.1000ep", {}, CheckpointMismatchError,
     ["mocov3_resnet50", "Missing keys (265)", "Unexpected keys (", "cls_token", "blocks.* ("]),
    ("dino_full_vit", "dino_vitb16.in1k_full", VIT, CheckpointMismatchError,
     ["dino_vitb16", "cls_token: checkpoint (1, 1, 384) vs model (1, 1, 768)"]),
    ("cmc_lab", "cmc_resnet50.in1k", {}, CheckpointMismatchError,
     ["cmc_resnet50", "l_to_ab.layer1.0.conv1.weight: checkpoint (32, 64, 1, 1) vs model (64, 64, 1, 1)"]),
    ("pycontrast_infomin", "infomin_resnet101.300ep", {}, CheckpointMismatchError,
     ["infomin_resnet101", "Missing keys (", "layer3.* ("]),
]


@pytest.mark.parametrize("case_id,entry,kwargs,error,parts", WRONG, ids=[f"{w[0]}-as-{w[1]}" for w in WRONG])
def test_a_file_of_another_method_or_architecture_is_named(case_id, entry, kwargs, error, parts, files, clzoo_home):
    with pytest.raises(error) as e:
        clzoo.create_model(entry, pretrained=True, pretrained_cfg_overlay=dict(file=str(files(case_id))), **kwargs)
    for part in parts:
        assert part in str(e.value), (part, str(e.value))


def test_folder_only_release_names_the_file_and_comes_from_a_mirror(files, mirror, monkeypatch):
    """CMC's files sit in a Dropbox folder without per-file links: the error names the file and the way in;
    a mirror serving <folder path>/<file> is used as for any other release."""
    folder = get_pretrained_cfg("cmc_resnet50half.in1k").url
    monkeypatch.delenv("CLZOO_MIRROR")
    with pytest.raises(ManualDownloadError) as e:
        clzoo.create_model("cmc_resnet50half.in1k", pretrained=True)
    msg = str(e.value)
    assert "CMC_resnet50v1.pth" in msg and folder in msg and "pretrained_cfg_overlay=dict(file=" in msg
    assert not mirror.requests

    monkeypatch.setenv("CLZOO_MIRROR", mirror.url)
    path = mirror.add(folder.split("?")[0] + "/CMC_resnet50v1.pth", data=files("cmc_lab").read_bytes())
    model = clzoo.create_model("cmc_resnet50half.in1k", pretrained=True).eval()
    assert mirror.requests[path] == 1
    with torch.no_grad():
        assert max_diff(model(rgb()), built("cmc_lab").reference(rgb())) <= TOL


# ---------------------------------------------------------------------------------------------
# full training checkpoints handed in for the backbone file (and the reverse)

FULL_AS_BACKBONE = [  # (file of case, backbone entry, kwargs): the released backbone is the teacher / module.backbone
    ("dino_full_vit", "dino_vits16", VIT),
    ("dino_full_resnet50", "dino_resnet50.in1k", {}),
    ("barlowtwins_full", "barlowtwins_resnet50", {}),
]


@pytest.mark.parametrize("case_id,entry,kwargs", FULL_AS_BACKBONE, ids=[f[0] for f in FULL_AS_BACKBONE])
def test_full_training_checkpoint_loads_its_backbone_into_the_backbone_entry(case_id, entry, kwargs, files,
                                                                             clzoo_home):
    """DINO: "the weights from the backbone only files are from the teacher" (facebookresearch/dino#44);
    Barlow Twins saves resnet50.pth as model.module.backbone. The student (another network in the file)
    would give other features."""
    case = built(case_id)
    model = clzoo.create_model(entry, pretrained=True, pretrained_cfg_overlay=dict(file=str(files(case_id))),
                               **kwargs).eval()
    with torch.no_grad():
        assert max_diff(model(rgb()), case.reference(rgb())) <= TOL


OTHER_LAYOUT = [  # (file of case, loaded as entry, kwargs, the entry the message must name)
    ("dino_full_resnet50", "barlowtwins_resnet50.1000ep", {}, "dino_resnet50.in1k_full"),  # another release
    ("dino_full_resnet50", "swav_resnet50.800ep", {}, "dino_resnet50.in1k_full"),
    ("barlowtwins_full", "dino_resnet50.in1k", {}, "barlowtwins_resnet50.1000ep_full"),
    ("dino_full_vit", "mocov3_vits16.300ep", VIT, "dino_vits16.in1k_full"),
    ("dino_backbone_vit", "dino_vits16.in1k_full", VIT, "dino_vits16.in1k"),  # the reverse: backbone for full
    ("barlowtwins_backbone", "barlowtwins_resnet50.1000ep_full", {}, "barlowtwins_resnet50.1000ep"),
]


@pytest.mark.parametrize("case_id,entry,kwargs,right", OTHER_LAYOUT, ids=[f"{o[0]}-as-{o[1]}" for o in OTHER_LAYOUT])
def test_file_of_a_known_other_layout_names_the_entry_that_reads_it(case_id, entry, kwargs, right, files, clzoo_home):
    with pytest.raises(ConversionError) as e:
        clzoo.create_model(entry, pretrained=True, pretrained_cfg_overlay=dict(file=str(files(case_id))), **kwargs)
    msg = str(e.value)
    assert "\n" not in msg and msg.endswith(f"use `{right}`"), msg
    assert ("full training checkpoint" if "full" in case_id else "a backbone-only file") in msg, msg
