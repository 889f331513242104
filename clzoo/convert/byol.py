"""BYOL (deepmind-research/byol) JAX/Haiku checkpoints -> timm ResNet.

The released `pretrain_res50x1.pkl` / `pretrain_res200x2.pkl` are `dill.dump(..., protocol=2)` of
`dict(experiment_state=_ByolExperimentState(online_params, target_params, online_state,
target_state, opt_state), step=int, rng=array)` (byol/utils/checkpointing.py, byol_experiment.py).
dill records the NamedTuple class by value (`dill._dill._create_namedtuple(name, fields, module)`),
Haiku (mid 2020) pickles its `FlatMapping` as `FlatMapping(dict)`, arrays are numpy. The file is read
with `clzoo._serialization.load_foreign_pickle`: nothing from byol, haiku, jax or dill is imported.

Params are `{module path: {name: array}}`: `res_net50/~/initial_conv` (`w`, HWIO), `.../initial_batchnorm`
(`scale`, `offset`, shape (1, 1, 1, C)), `.../block_group_G/~/block_B/~/conv_K` / `batchnorm_K` /
`shortcut_conv` / `shortcut_batchnorm` (haiku.nets.ResNet.BlockV1: stride on conv_1, the 3x3), and
`projector/...`, `predictor/...`, `classifier`. BN statistics are state: `<bn>/~/mean_ema` and
`<bn>/~/var_ema` with `average` (used at eval), `hidden`, `counter`. The official evaluation uses the
online network; the target (EMA) network is exposed by `clzoo.load_pretraining_checkpoint`.

A `.npz` of the flattened trees is accepted too, with keys `params:<module>|<name>` and
`state:<module>|<name>` (the naming of reference/keys/byol_haiku_to_timm_resnet50.tsv).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np
import torch

from .._serialization import InertObject, UnsafeCheckpointError, load_foreign_pickle
from . import CheckpointFormat, ConversionError, register_format

__all__ = ["byol_trees", "byol_haiku_to_timm", "haiku_mlp_state_dict", "as_mapping"]

_FIELDS = ("online_params", "target_params", "online_state", "target_state", "opt_state")


def as_mapping(obj: Any) -> Optional[Mapping]:
    """A Mapping view of dicts and of inert stand-ins of mapping classes (Haiku FlatMapping/frozendict)."""
    if isinstance(obj, Mapping):
        return obj
    if isinstance(obj, InertObject):
        if len(obj.args) == 1 and isinstance(obj.args[0], Mapping) and not obj.items:
            return obj.args[0]
        if obj.items:
            return obj.items
        if isinstance(obj.state, Mapping) and obj.state and not obj.args:
            return obj.state
    return None


def _field(state: Any, name: str) -> Any:
    mapping = as_mapping(state)
    if mapping is not None and name in mapping:
        return mapping[name]
    if hasattr(state, "_fields") and name in state._fields:  # dill's namedtuple, rebuilt as a namedtuple
        return getattr(state, name)
    if isinstance(state, InertObject) and len(state.args) == len(_FIELDS):  # NamedTuple class by reference
        return state.args[_FIELDS.index(name)]
    raise ConversionError(f"not a BYOL checkpoint: experiment_state has no {name!r} "
                          f"(found {type(state).__name__})")


def _flatten(tree: Any, kind: str) -> Dict[str, np.ndarray]:
    modules = as_mapping(tree)
    if modules is None:
        raise ConversionError(f"not a BYOL checkpoint: {kind} is a {type(tree).__name__}, not a Haiku tree")
    out = {}
    for module, leaves in modules.items():
        leaves = as_mapping(leaves)
        if leaves is None:
            raise ConversionError(f"not a BYOL checkpoint: {kind}[{module!r}] is not a mapping")
        for name, value in leaves.items():
            out[f"{kind}:{module}|{name}"] = np.asarray(value)
    return out


def byol_trees(obj: Any, branch: str = "online") -> Dict[str, np.ndarray]:
    """Flat {'params:<module>|<name>' / 'state:<module>|<name>': array} of the online or target network."""
    top = as_mapping(obj)
    if top is not None and any(k.startswith(("params:", "state:")) for k in top):  # .npz dump
        if branch != "online":
            raise ConversionError("a flat .npz dump holds one network; the target network needs the .pkl")
        return dict(top)
    if top is None or "experiment_state" not in top:
        raise ConversionError(
            "not a BYOL checkpoint (deepmind-research/byol pretrain_*.pkl): expected a dict with "
            f"'experiment_state', found {sorted(top)[:6] if top is not None else type(obj).__name__}")
    state = top["experiment_state"]
    return {**_flatten(_field(state, f"{branch}_params"), "params"),
            **_flatten(_field(state, f"{branch}_state"), "state")}


def _squeeze(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a).reshape(-1).astype(np.float32))


def _bn(flat: Dict[str, np.ndarray], module: str, target: str, out: Dict[str, torch.Tensor]) -> None:
    try:
        out[f"{target}.weight"] = _squeeze(flat[f"params:{module}|scale"])
        out[f"{target}.bias"] = _squeeze(flat[f"params:{module}|offset"])
        out[f"{target}.running_mean"] = _squeeze(flat[f"state:{module}/~/mean_ema|average"])
        out[f"{target}.running_var"] = _squeeze(flat[f"state:{module}/~/var_ema|average"])
    except KeyError as e:
        raise ConversionError(f"BYOL checkpoint: batch norm {module} lacks {e.args[0]}") from None


def _modules(flat: Dict[str, np.ndarray]) -> Dict[str, None]:
    mods = {}
    for key in flat:
        module = key.split(":", 1)[1].rsplit("|", 1)[0]
        mods[re.sub(r"/~/(mean|var)_ema$", "", module)] = None
    return mods


def byol_haiku_to_timm(flat: Dict[str, np.ndarray]) -> Dict[str, torch.Tensor]:
    """timm ResNet state dict from the flat trees of one BYOL network (online or target)."""
    modules = _modules(flat)
    roots = {m.split("/~/")[0] for m in modules if re.search(r"/~/initial_conv(_\d+)?$", m)}
    if len(roots) != 1:
        raise ConversionError(f"BYOL checkpoint: expected one ResNet torso (<root>/~/initial_conv), found "
                              f"{sorted(roots) or 'none'} among modules {sorted(modules)[:6]}")
    root = roots.pop()
    block = re.compile(re.escape(root) + r"/~/block_group_(\d+)/~/block_(\d+)/~/"
                       r"(conv_(\d)|batchnorm_(\d)|shortcut_conv|shortcut_batchnorm)$")
    out: Dict[str, torch.Tensor] = {}
    for module in modules:
        if not module.startswith(root + "/"):
            continue  # projector, predictor, classifier
        if re.fullmatch(re.escape(root) + r"/~/initial_conv(_\d+)?", module):
            out["conv1.weight"] = torch.from_numpy(flat[f"params:{module}|w"]).permute(3, 2, 0, 1)
            continue
        if re.fullmatch(re.escape(root) + r"/~/initial_batchnorm(_\d+)?", module):
            _bn(flat, module, "bn1", out)
            continue
        m = block.fullmatch(module)
        if m is None:
            raise ConversionError(f"BYOL checkpoint: unexpected module {module!r} in the ResNet torso")
        prefix = f"layer{int(m.group(1)) + 1}.{int(m.group(2))}."
        if m.group(4) is not None:
            out[prefix + f"conv{int(m.group(4)) + 1}.weight"] = torch.from_numpy(
                flat[f"params:{module}|w"]).permute(3, 2, 0, 1)
        elif m.group(5) is not None:
            _bn(flat, module, prefix + f"bn{int(m.group(5)) + 1}", out)
        elif m.group(3) == "shortcut_conv":
            out[prefix + "downsample.0.weight"] = torch.from_numpy(flat[f"params:{module}|w"]).permute(3, 2, 0, 1)
        else:
            _bn(flat, module, prefix + "downsample.1", out)
    return {k: v.float().contiguous() for k, v in out.items()}


def haiku_mlp_state_dict(flat: Dict[str, np.ndarray], name: str) -> Optional[Dict[str, torch.Tensor]]:
    """byol networks.MLP `name` (linear -> batch_norm -> relu -> linear_1) as torch Sequential keys 0/1/3."""
    if f"params:{name}/linear|w" not in flat:
        return None
    out = {"0.weight": torch.from_numpy(flat[f"params:{name}/linear|w"]).t(),
           "0.bias": torch.from_numpy(flat[f"params:{name}/linear|b"]),
           "3.weight": torch.from_numpy(flat[f"params:{name}/linear_1|w"]).t()}
    _bn(flat, f"{name}/batch_norm", "1", out)
    return {k: v.float().contiguous() for k, v in out.items()}


def _load(path: Path) -> Any:
    path = Path(path)
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as npz:
            return {k: npz[k] for k in npz.files}
    try:
        return load_foreign_pickle(path)
    except UnsafeCheckpointError as e:
        raise ConversionError(f"not a BYOL checkpoint (a dill pickle of Haiku trees, pretrain_res*.pkl): {e}") from None


BYOL_HAIKU = register_format(CheckpointFormat(
    name="byol_haiku",
    description="BYOL JAX/Haiku checkpoint (deepmind-research/byol pretrain_res*.pkl, a dill pickle), or an "
                ".npz of its flattened online network ('params:<module>|<name>', 'state:<module>|<name>')",
    convert_fn=lambda obj: byol_haiku_to_timm(byol_trees(obj, "online")),
    load_fn=_load,
))
