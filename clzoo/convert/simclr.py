"""SimCLR v1/v2 TensorFlow checkpoints (google-research/simclr) -> timm ResNet / SK-ResNet.

The TF1 code (`resnet.py`) creates its layers with `tf.layers`, so variables are named by creation
order only: `base_model/conv2d[_N]/kernel` and `base_model/batch_normalization[_N]/{gamma, beta,
moving_mean, moving_variance}`, with separate counters for convs and batch norms. The structure is
therefore recovered from the order in which `resnet.py` creates them:

* stem: one 7x7 conv + BN, or (SimCLR v2 `sk1`, ResNet-D) three 3x3 convs with a BN after each;
* bottleneck block: [projection shortcut conv + BN, first block of a group only, created *first*],
  1x1 conv + BN, the 3x3 conv + BN (or the selective-kernel conv: one 3x3 conv with 2x outputs + BN
  over both streams, the 1x1 attention reduce conv + BN, the 1x1 attention select conv without BN),
  1x1 conv + BN.

Kernels are HWIO (-> OIHW), BN gamma/beta -> weight/bias. The SK conv and its BN are split into
timm's two `paths`. `head_supervised` (the linear head trained during pretraining), `head_contrastive`
(v2 projection head, exposed by `clzoo.load_pretraining_checkpoint`), optimizer slots (`*/Momentum`)
and `global_step` are not part of the backbone. `ema_model/base_model/` holds the EMA weights some v2
checkpoints carry (format `simclr_tf1_ema`).

Inputs are RGB in [0, 1] without mean/std (data_util.py); the architecture differences from stock
timm (TF 'SAME' stem max-pool, SK attention width, ResNet-D shortcut pooling) live in models/_archs.py.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np
import torch

from . import CheckpointFormat, ConversionError, register_format
from .tf_checkpoint import TFCheckpoint

__all__ = ["load_tf_variables", "simclr_tf1_to_timm", "simclr_tf1_order", "simclr_projection_head"]

_LAYERS = {16: (3, 4, 6, 3), 33: (3, 4, 23, 3), 50: (3, 8, 36, 3), 66: (3, 24, 36, 3)}  # blocks -> depth
_BN_LEAVES = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean",
              "moving_variance": "running_var"}


def load_tf_variables(path: Path) -> Mapping[str, np.ndarray]:
    """A lazy {TF variable name: array} mapping: a TF checkpoint (index/data, prefix, dir, .zip) or an
    `.npz` dump of the variables (`np.savez(f, **{v.op.name: value})`, the documented TF-free input)."""
    path = Path(path)
    if path.suffix == ".npz":
        return np.load(path, allow_pickle=False)
    return TFCheckpoint(path)


def _index(layer: str) -> int:
    m = re.fullmatch(r"(?:conv2d|batch_normalization)(?:_(\d+))?", layer)
    return int(m.group(1) or 0)


def simclr_tf1_order(layers: Tuple[int, ...], sk: bool) -> Tuple[List[str], List[str]]:
    """timm module names in the order SimCLR's resnet.py creates convs and batch norms.

    A name containing `{}` is the selective-kernel conv (or its BN): one TF variable whose output
    channels hold timm's two `paths` (first half path 0).
    """
    convs = ["conv1.0", "conv1.3", "conv1.6"] if sk else ["conv1"]
    bns = ["conv1.1", "conv1.4", "bn1"] if sk else ["bn1"]
    for stage, n in enumerate(layers, 1):
        for b in range(n):
            p = f"layer{stage}.{b}."
            if b == 0:  # the projection shortcut is created before the block's main path
                convs.append(p + ("downsample.1" if sk else "downsample.0"))
                bns.append(p + ("downsample.2" if sk else "downsample.1"))
            if sk:
                convs += [p + "conv1.conv", p + "conv2.paths.{}.conv", p + "conv2.attn.fc_reduce",
                          p + "conv2.attn.fc_select", p + "conv3.conv"]
                bns += [p + "conv1.bn", p + "conv2.paths.{}.bn", p + "conv2.attn.bn", p + "conv3.bn"]
            else:
                convs += [p + "conv1", p + "conv2", p + "conv3"]
                bns += [p + "bn1", p + "bn2", p + "bn3"]
    return convs, bns


def simclr_tf1_plan(shapes: Mapping[str, Tuple[int, ...]], prefix: str = "base_model/"
                    ) -> List[Tuple[str, str, str]]:
    """[(timm module, TF variable, kind)] with kind 'conv' or a BN leaf, from variable names and shapes only."""
    convs: Dict[str, str] = {}
    bns: Dict[str, Dict[str, str]] = {}
    pattern = re.compile(re.escape(prefix) + r"(conv2d(?:_\d+)?)/kernel|" + re.escape(prefix)
                         + r"(batch_normalization(?:_\d+)?)/(gamma|beta|moving_mean|moving_variance)")
    for name in shapes:
        m = pattern.fullmatch(name)
        if m and m.group(1):
            convs[m.group(1)] = name
        elif m:
            bns.setdefault(m.group(2), {})[m.group(3)] = name
    if not convs:
        found = sorted({n.split("/")[0] for n in shapes})
        hint = (" It has 'ema_model/' variables: use format simclr_tf1_ema for the EMA weights, or check "
                "the file." if prefix == "base_model/" and "ema_model" in found else "")
        raise ConversionError(f"not a SimCLR TF checkpoint: no '{prefix}conv2d*/kernel' variables "
                              f"(top-level scopes: {', '.join(found[:8]) or 'none'}).{hint}")
    conv_keys = sorted(convs, key=_index)
    if [_index(k) for k in conv_keys] != list(range(len(conv_keys))):
        raise ConversionError(f"SimCLR checkpoint: conv2d variables under {prefix} are not numbered 0..n-1")
    conv_names = [convs[k] for k in conv_keys]
    bn_groups = [bns[k] for k in sorted(bns, key=_index)]
    sk = tuple(shapes[conv_names[0]][:2]) == (3, 3)  # ResNet-D stem: 3x3 convs instead of one 7x7
    n_blocks, rest = divmod(len(conv_names) - (3 + 4 if sk else 1 + 4), 5 if sk else 3)
    if rest or n_blocks not in _LAYERS:
        raise ConversionError(f"SimCLR checkpoint: {len(conv_names)} convs under {prefix} match no "
                              f"ResNet-50/101/152/200 {'with' if sk else 'without'} selective kernels")
    conv_targets, bn_targets = simclr_tf1_order(_LAYERS[n_blocks], sk)
    if len(bn_targets) != len(bn_groups):
        raise ConversionError(f"SimCLR checkpoint: {len(bn_groups)} batch norms for {len(conv_names)} convs; "
                              f"a {'SK-' if sk else ''}ResNet with {n_blocks} blocks has {len(bn_targets)}")
    plan = [(target, name, "conv") for target, name in zip(conv_targets, conv_names)]
    for target, group in zip(bn_targets, bn_groups):
        missing = {"gamma", "moving_mean", "moving_variance"} - set(group)
        if missing:
            raise ConversionError(f"SimCLR checkpoint: batch norm {sorted(group.values())[0]} lacks {sorted(missing)}")
        plan += [(target, group[leaf], leaf) for leaf in _BN_LEAVES if leaf in group]
    return plan


def simclr_tf1_to_timm(variables: Mapping[str, np.ndarray], prefix: str = "base_model/") -> Dict[str, torch.Tensor]:
    """timm state dict of the base network under `prefix` ('base_model/' or 'ema_model/base_model/')."""
    shapes = variables.shapes() if hasattr(variables, "shapes") else {k: variables[k].shape for k in variables.keys()}
    plan = simclr_tf1_plan(shapes, prefix)
    names = [name for _, name, _ in plan]
    arrays = variables.read(names) if hasattr(variables, "read") else {n: variables[n] for n in names}
    out: Dict[str, torch.Tensor] = {}
    for target, name, kind in plan:
        value = torch.from_numpy(np.asarray(arrays[name], dtype=np.float32))
        if kind == "conv":
            value, suffix = value.permute(3, 2, 0, 1), "weight"
        else:
            suffix = _BN_LEAVES[kind]
        parts = value.chunk(2, dim=0) if "{}" in target else (value,)
        for i, part in enumerate(parts):
            out[f"{target.format(i)}.{suffix}"] = part.contiguous()
    for target in {t for t, _, kind in plan if kind == "gamma"}:  # BN created with center=False
        for i in range(2 if "{}" in target else 1):
            key = f"{target.format(i)}.bias"
            out.setdefault(key, torch.zeros_like(out[f"{target.format(i)}.weight"]))
    return out


def simclr_projection_head(variables: Mapping[str, np.ndarray], ema: bool = False
                           ) -> Optional[Dict[str, torch.Tensor]]:
    """SimCLR v2 `head_contrastive` as the state dict of `heads.SimCLRProjectionHead` (None if absent)."""
    prefix = ("ema_model/" if ema else "") + "head_contrastive/"
    layers = sorted({int(m.group(1)) for n in variables.keys() if (m := re.match(re.escape(prefix) + r"nl_(\d+)/", n))})
    if not layers:
        return None
    out = {}
    for i in layers:
        p = f"{prefix}nl_{i}/"
        out[f"layers.{i}.linear.weight"] = torch.from_numpy(np.asarray(variables[p + "dense/kernel"])).t().contiguous()
        for leaf, suffix in _BN_LEAVES.items():
            name = p + "batch_normalization/" + leaf
            if name in variables:
                out[f"layers.{i}.bn.{suffix}"] = torch.from_numpy(np.asarray(variables[name]))
    return out


def _convert(prefix: str):
    def fn(variables: Mapping[str, np.ndarray]) -> Dict[str, torch.Tensor]:
        return simclr_tf1_to_timm(variables, prefix)
    return fn


def _data_shard(url: str) -> Tuple[str, ...]:
    """The released SimCLR v2 checkpoints are single-shard bundles: X.index beside X.data-00000-of-00001."""
    return (url[: -len(".index")] + ".data-00000-of-00001",) if url.endswith(".index") else ()


SIMCLR_TF1 = register_format(CheckpointFormat(
    name="simclr_tf1",
    description="SimCLR v1/v2 TensorFlow checkpoint (google-research/simclr): a .zip as released for v1, "
                "model.ckpt-N.index beside its .data-* file, or an .npz of {tf_variable_name: array}",
    convert_fn=_convert("base_model/"),
    load_fn=load_tf_variables,
    companion_urls=_data_shard,
))

SIMCLR_TF1_EMA = register_format(CheckpointFormat(
    name="simclr_tf1_ema",
    description="the EMA weights (ema_model/base_model/) of a SimCLR v2 TensorFlow checkpoint",
    convert_fn=_convert("ema_model/base_model/"),
    load_fn=load_tf_variables,
    companion_urls=_data_shard,
))
