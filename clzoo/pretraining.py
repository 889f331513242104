"""Official pretraining checkpoints with their SSL heads, to continue pretraining from official weights.

Interface (for `training/pretrain.py --init-from`, which copies online, target and state into the
trainer's method: training/methods/official.py):

    ckpt = clzoo.load_pretraining_checkpoint("mocov3_vits16.300ep")              # official file (cached)
    ckpt = clzoo.load_pretraining_checkpoint("dino_vits16.in1k_full", file="dino_deitsmall16_pretrain_full_checkpoint.pth")
    ckpt = clzoo.load_pretraining_checkpoint("dino_vits16.in1k_full", img_size=96)  # create_model kwargs

    ckpt.method          "mocov3"             registry method key (clzoo.list_methods())
    ckpt.name            "mocov3_vits16.300ep"
    ckpt.online          Branch: the network trained by gradient (MoCo query / base encoder, DINO student,
                         BYOL online, the only network of SimSiam, SwAV, Barlow Twins, SimCLR)
      .backbone          the timm encoder (num_classes=0) with its weights, as clzoo.create_model builds it
                         (a ViT's position table resampled to another img_size)
      .heads             nn.ModuleDict {official name: module}; each module's state_dict keys are the
                         official keys under that name, e.g. MoCo v3 {'head' (ViT) / 'fc' (ResNet): projector,
                         'predictor'} (the projector sits inside base_encoder in the official file), DINO
                         {'head': DINOHead}, SwAV {'projection_head', 'prototypes'}, SimSiam {'fc', 'predictor'}, BYOL
                         {'projector', 'predictor'}, Barlow Twins {'projector', 'bn'}, MoCo v1/v2 {'fc'},
                         SimCLR v2 {'head_contrastive'}
    ckpt.target          Branch of the momentum/EMA network where the file has one (MoCo encoder_k,
                         MoCo v3 momentum_encoder, DINO teacher, BYOL target), else None
    ckpt.state           {name: tensor}: DINO 'center' (1, 65536); MoCo 'queue' (128, K), 'queue_ptr'
    ckpt.meta            {'epoch', 'arch', 'args' (dict), 'step', 'format'} as far as the file has them

Heads are plain modules built from the file's shapes: Linear / BatchNorm1d at the official indexes,
the method's activation (ReLU; GELU for DINO) at the indexes without parameters; `DINOHead` (mlp, l2
normalisation, weight-normalised `last_layer` with `weight_g`/`weight_v`), `MultiPrototypes`
(DeepCluster-v2 `prototypes.prototypes{i}`), `SimCLRProjectionHead` (TF `head_contrastive/nl_{i}`,
as `layers.{i}.linear` / `layers.{i}.bn`). Loss-side parameter-free steps (l2 normalisation of MoCo
and PyContrast embeddings) are not modules. Releases without heads (backbone-only files) raise
`NoHeadsError`, naming the entry of the same architecture whose file has them.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._builder import check_state_dict
from .convert import ConversionError, add_num_batches_tracked, get_format

__all__ = ["load_pretraining_checkpoint", "PretrainingCheckpoint", "Branch", "NoHeadsError", "DINOHead",
           "MultiPrototypes", "SimCLRProjectionHead", "head_from_state_dict"]


class NoHeadsError(ValueError):
    """The release has no SSL heads (a backbone-only file) or its format's heads are not supported."""


@dataclass
class Branch:
    backbone: nn.Module
    heads: nn.ModuleDict


@dataclass
class PretrainingCheckpoint:
    method: str
    name: str
    online: Branch
    target: Optional[Branch] = None
    state: Dict[str, torch.Tensor] = field(default_factory=dict)
    meta: Dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# head modules in the official layouts


class WeightNormLinear(nn.Module):
    """`nn.utils.weight_norm(nn.Linear(in, out, bias=False))` with its official keys weight_g / weight_v."""

    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.weight_g = nn.Parameter(torch.ones(out_features, 1))
        self.weight_v = nn.Parameter(torch.empty(out_features, in_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight_g * self.weight_v / self.weight_v.norm(dim=1, keepdim=True))


class DINOHead(nn.Module):
    """facebookresearch/dino `DINOHead`: mlp -> l2 normalise -> weight-normalised last layer."""

    def __init__(self, mlp: nn.Sequential, last_layer: WeightNormLinear):
        super().__init__()
        self.mlp, self.last_layer = mlp, last_layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last_layer(F.normalize(self.mlp(x), dim=-1, p=2))


class MultiPrototypes(nn.Module):
    """facebookresearch/swav `MultiPrototypes` (DeepCluster-v2): one bias-free Linear per head."""

    def __init__(self, heads: Dict[str, nn.Linear]):
        super().__init__()
        for name, layer in heads.items():
            self.add_module(name, layer)

    def forward(self, x: torch.Tensor):
        return [layer(x) for layer in self.children()]


class _LinearBN(nn.Module):
    def __init__(self, linear: nn.Linear, bn: nn.BatchNorm1d, relu: bool):
        super().__init__()
        self.linear, self.bn, self.relu = linear, bn, relu

    def forward(self, x):
        x = self.bn(self.linear(x))
        return F.relu(x) if self.relu else x


class SimCLRProjectionHead(nn.Module):
    """google-research/simclr `head_contrastive`: nl_i = dense (no bias) + BN (+ ReLU but the last).

    The last BN has no beta in TF (center=False); its `bias` is zero and frozen. `forward` returns the
    projection; `forward_all` the list [input, nl_0, nl_1, ...] (`ft_proj_selector` picks from it).
    """

    def __init__(self, layers):
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward_all(self, x: torch.Tensor):
        out = [x]
        for layer in self.layers:
            out.append(layer(out[-1]))
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_all(x)[-1]


def _children(sd: Mapping[str, torch.Tensor]) -> Dict[str, Dict[str, torch.Tensor]]:
    out: Dict[str, Dict[str, torch.Tensor]] = {}
    for key, value in sd.items():
        head, _, rest = key.partition(".")
        out.setdefault(head, {})[rest] = value
    return out


def _leaf(sd: Mapping[str, torch.Tensor]) -> nn.Module:
    if "running_mean" in sd:
        n = sd["running_mean"].shape[0]
        return nn.BatchNorm1d(n, affine="weight" in sd)
    if "weight" in sd and sd["weight"].dim() == 2:
        out_f, in_f = sd["weight"].shape
        return nn.Linear(in_f, out_f, bias="bias" in sd)
    raise ConversionError(f"cannot build a head layer from keys {sorted(sd)}")


def head_from_state_dict(sd: Mapping[str, torch.Tensor], act: Callable[[], nn.Module] = nn.ReLU) -> nn.Module:
    """A module whose state_dict keys are exactly `sd`'s, with the official layout's structure."""
    sd = {k: v for k, v in sd.items()}
    children = _children(sd)
    if set(sd) <= {"weight", "bias", "running_mean", "running_var", "num_batches_tracked"}:
        module = _leaf(sd)
    elif "last_layer" in children and "mlp" in children:  # DINO head
        mlp = head_from_state_dict({k[4:]: v for k, v in sd.items() if k.startswith("mlp.")}, nn.GELU)
        if not isinstance(mlp, nn.Sequential):
            mlp = nn.Sequential(mlp)
        v = sd["last_layer.weight_v"]
        module = DINOHead(mlp, WeightNormLinear(v.shape[1], v.shape[0]))
    elif all(k.startswith("prototypes") and k[len("prototypes"):].isdigit() for k in children):
        module = MultiPrototypes({k: _leaf(children[k]) for k in sorted(children, key=lambda k: int(k[10:]))})
    elif all(k.isdigit() for k in children):
        idx = sorted(int(k) for k in children)
        module = nn.Sequential(*[_leaf(children[str(i)]) if str(i) in children else act()
                                 for i in range(idx[-1] + 1)])
    else:
        raise ConversionError(f"cannot build a head from keys {sorted(sd)[:8]}")
    module.load_state_dict(add_num_batches_tracked(sd), strict=True)
    return module


def _simclr_head(sd: Dict[str, torch.Tensor]) -> SimCLRProjectionHead:
    layers = []
    n = 1 + max(int(k.split(".")[1]) for k in sd)
    for i in range(n):
        w = sd[f"layers.{i}.linear.weight"]
        bn = nn.BatchNorm1d(w.shape[0])
        if f"layers.{i}.bn.bias" not in sd:  # center=False
            sd[f"layers.{i}.bn.bias"] = torch.zeros(w.shape[0])
            bn.bias.requires_grad_(False)
        layers.append(_LinearBN(nn.Linear(w.shape[1], w.shape[0], bias=False), bn, relu=i < n - 1))
    head = SimCLRProjectionHead(layers)
    head.load_state_dict(add_num_batches_tracked(sd), strict=True)
    return head


# ---------------------------------------------------------------------------------------------
# where each format keeps backbone, heads and state


@dataclass(frozen=True)
class _BranchSpec:
    container: Tuple[str, ...]  # path in the file to the state dict
    backbone: str  # prefix of the backbone keys (after 'module.'), '' = the container's top level
    heads_in: Tuple[str, ...] = ()  # heads whose keys sit inside the backbone's key space
    heads_out: Tuple[str, ...] = ()  # heads beside the backbone


@dataclass(frozen=True)
class _Spec:
    online: _BranchSpec
    target: Optional[_BranchSpec] = None
    state: Tuple[Tuple[Tuple[str, ...], str], ...] = ()  # (path of a dict in the file, key without 'module.')
    act: Callable[[], nn.Module] = nn.ReLU


_SPECS: Dict[str, _Spec] = {
    "moco": _Spec(_BranchSpec(("state_dict",), "encoder_q.", ("fc",)),
                  _BranchSpec(("state_dict",), "encoder_k.", ("fc",)),
                  state=((("state_dict",), "queue"), (("state_dict",), "queue_ptr"))),
    "mocov3": _Spec(_BranchSpec(("state_dict",), "base_encoder.", ("fc", "head"), ("predictor",)),
                    _BranchSpec(("state_dict",), "momentum_encoder.", ("fc", "head"))),
    "simsiam": _Spec(_BranchSpec(("state_dict",), "encoder.", ("fc",), ("predictor",))),
    "swav": _Spec(_BranchSpec((), "", ("projection_head", "prototypes"))),
    "barlowtwins_full": _Spec(_BranchSpec(("model",), "backbone.", (), ("projector", "bn"))),
    "dino_full": _Spec(_BranchSpec(("student",), "backbone.", (), ("head",)),
                       _BranchSpec(("teacher",), "backbone.", (), ("head",)),
                       state=((("dino_loss",), "center"),), act=nn.GELU),
}


def _get(obj: Any, path: Tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(obj, Mapping) or key not in obj:
            return None
        obj = obj[key]
    return obj


def _strip_module(sd: Mapping[str, Any]) -> Dict[str, torch.Tensor]:
    return {(k[7:] if k.startswith("module.") else k): v for k, v in sd.items() if isinstance(v, torch.Tensor)}


def _sub(sd: Mapping[str, torch.Tensor], prefix: str) -> Dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}


def _backbone(name: str, sd: Dict[str, torch.Tensor], kwargs: Dict[str, Any]) -> nn.Module:
    from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn

    from ._factory import create_model
    model = create_model(name, pretrained=False, **kwargs)
    sd = add_num_batches_tracked(dict(sd))
    if isinstance(model, VisionTransformer):  # position table resampled to another img_size, as create_model does
        sd = checkpoint_filter_fn(sd, model)
    check_state_dict(sd, model, name)
    model.load_state_dict(sd, strict=True)
    return model.eval()


def _torch_branch(obj, spec: _BranchSpec, fmt: str, name: str, act, kwargs) -> Optional[Branch]:
    container = _get(obj, spec.container)
    if spec.container == () and isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        container = obj["state_dict"]  # SwAV's eval_linear also accepts {'state_dict': ...}
    if not isinstance(container, Mapping):
        return None
    sd = _strip_module(container)
    if spec.backbone and not any(k.startswith(spec.backbone) for k in sd):
        return None
    inner = _sub(sd, spec.backbone) if spec.backbone else sd
    heads = {}
    for head in spec.heads_in:
        if any(k.startswith(head + ".") for k in inner):
            heads[head] = head_from_state_dict(_sub(inner, head + "."), act)
            inner = {k: v for k, v in inner.items() if not k.startswith(head + ".")}
    for head in spec.heads_out:
        if any(k.startswith(head + ".") for k in sd):
            heads[head] = head_from_state_dict(_sub(sd, head + "."), act)
    if not heads:
        raise NoHeadsError(f"{name}: the {fmt} file has no heads under {spec.container or 'the top level'} "
                           f"({', '.join(spec.heads_in + spec.heads_out)} expected)")
    return Branch(_backbone(name, inner, kwargs), nn.ModuleDict(heads))


def _meta(obj: Any, fmt: str) -> Dict[str, Any]:
    meta: Dict[str, Any] = {"format": fmt}
    if isinstance(obj, Mapping):
        for key in ("epoch", "arch", "step"):
            if key in obj and not isinstance(obj[key], torch.Tensor):
                meta[key] = obj[key]
        args = obj.get("args", obj.get("opt"))
        if isinstance(args, argparse.Namespace):
            meta["args"] = vars(args)
    return meta


def _byol(obj, name, kwargs) -> PretrainingCheckpoint:
    from .convert.byol import byol_haiku_to_timm, byol_trees, haiku_mlp_state_dict

    def branch(which):
        flat = byol_trees(obj, which)
        heads = {h: head_from_state_dict(sd) for h in ("projector", "predictor")
                 if (sd := haiku_mlp_state_dict(flat, h)) is not None}
        return Branch(_backbone(name, byol_haiku_to_timm(flat), kwargs), nn.ModuleDict(heads))

    online = branch("online")
    if not len(online.heads):
        raise NoHeadsError(f"{name}: the BYOL file has no projector/predictor")
    return PretrainingCheckpoint("", name, online, branch("target") if "experiment_state" in obj else None,
                                 meta={"format": "byol_haiku", "step": obj.get("step")})


def _simclr(obj, name, kwargs, ema: bool) -> PretrainingCheckpoint:
    from .convert.simclr import simclr_projection_head, simclr_tf1_to_timm
    head = simclr_projection_head(obj, ema=ema)
    if head is None:
        raise NoHeadsError(f"{name}: the checkpoint has no head_contrastive (the SimCLR v1 projection head "
                           "was not released); use clzoo.create_model for the backbone")
    backbone = _backbone(name, simclr_tf1_to_timm(obj, ("ema_model/" if ema else "") + "base_model/"), kwargs)
    fmt = "simclr_tf1_ema" if ema else "simclr_tf1"
    return PretrainingCheckpoint("", name, Branch(backbone, nn.ModuleDict({"head_contrastive": _simclr_head(head)})),
                                 meta={"format": fmt})


_SUPPORTED = set(_SPECS) | {"byol_haiku", "simclr_tf1", "simclr_tf1_ema"}


def _with_heads(arch: str) -> str:
    """An entry of `arch` whose release carries heads (e.g. the DINO `_full` tags)."""
    from ._registry import _weights, list_entries
    return next((e for e in list_entries(arch + ".*") if _weights[e].weights_format in _SUPPORTED), "")


def load_pretraining_checkpoint(name: str, file: Optional[Union[str, Path]] = None, weights_format: Optional[str] = None,
                                cache_dir: Optional[Union[str, Path]] = None, progress: bool = True,
                                **kwargs: Any) -> PretrainingCheckpoint:
    """Backbone + SSL heads + training state of an official pretraining checkpoint (see module docstring).

    Args:
        name: a clzoo entry `arch[.tag]` whose release carries heads (e.g. "dino_vits16.in1k_full").
        file: the official file as released; default: the entry's official URL (or $CLZOO_MIRROR), cached.
        weights_format: override the entry's format (e.g. "simclr_tf1_ema").
        **kwargs: passed to clzoo.create_model for the backbones (e.g. img_size for ViTs).
    """
    from ._pretrained import download_official, official_file_url
    from ._registry import _full_name, get_pretrained_cfg, get_weights_info
    from ._serialization import load_checkpoint_file

    full = _full_name(name)
    info = get_weights_info(full)
    fmt_name = weights_format or info.weights_format or "state_dict"
    fmt = get_format(fmt_name)
    if fmt_name not in _SUPPORTED:
        other = _with_heads(full.split(".")[0])
        raise NoHeadsError(
            f"{full} is released as a backbone-only file (format {fmt_name}); the heads API reads "
            f"{', '.join(sorted(_SUPPORTED))}." + (f" The release with heads is {other}." if other else ""))
    if file is None:
        url = get_pretrained_cfg(full).url
        if not url:
            raise NoHeadsError(f"{full} has no official URL; pass the downloaded file: "
                               f"load_pretraining_checkpoint({full!r}, file=PATH)")
        file = download_official(official_file_url(full, url), fmt, cache_dir=cache_dir, progress=progress,
                                 sha256=info.sha256, md5_prefix=info.md5_prefix)
    path = Path(file)
    obj = fmt.load_fn(path) if fmt.load_fn is not None else load_checkpoint_file(path, fmt.stub_globals)
    if fmt_name == "byol_haiku":
        ckpt = _byol(obj, full, kwargs)
    elif fmt_name.startswith("simclr_tf1"):
        ckpt = _simclr(obj, full, kwargs, ema=fmt_name.endswith("_ema"))
    else:
        spec = _SPECS[fmt_name]
        online = _torch_branch(obj, spec.online, fmt_name, full, spec.act, kwargs)
        if online is None:
            raise ConversionError(f"not a {fmt_name} checkpoint ({fmt.description}): no "
                                  f"{spec.online.backbone or 'backbone'} keys under {list(spec.online.container)}")
        target = None
        if spec.target is not None:
            try:
                target = _torch_branch(obj, spec.target, fmt_name, full, spec.act, kwargs)
            except NoHeadsError:
                target = None
        state = {}
        for where, key in spec.state:
            node = _get(obj, where)
            if isinstance(node, Mapping) and isinstance(_strip_module(node).get(key), torch.Tensor):
                state[key] = _strip_module(node)[key].clone()
        ckpt = PretrainingCheckpoint(info.method, full, online, target, state, _meta(obj, fmt_name))
    ckpt.method = info.method
    return ckpt
