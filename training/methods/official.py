"""Official pretraining checkpoints copied into a method (`--init-from` with heads).

`clzoo.load_pretraining_checkpoint` returns the official networks under their official head names
(clzoo/pretraining.py). A method whose official release has heads maps them onto its own modules with
an `OfficialLayout` and implements

    method.load_pretrained(ckpt) -> list[str]     # what was loaded, one line per part

with `load_official` plus its own state (DINO's center, MoCo's queue: `load_buffer`). The momentum /
EMA / teacher networks take the file's target network where it has one, else a copy of the loaded online
modules (the usual "target = online" start). A head that does not fit the configured one raises
ConfigError naming the head, the official and configured shapes, and the --hparams of the official heads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

import torch
import torch.nn as nn

from ..config import ConfigError

StateDict = Mapping[str, torch.Tensor]


@dataclass(frozen=True)
class OfficialLayout:
    heads: Mapping[str, str]  # official head name -> the method's attribute
    hparams: Callable  # ckpt -> the method's hparams that build the official heads (for error messages)
    backbone: str = "backbone"  # the method's online backbone
    momentum: Mapping[str, str] = field(default_factory=dict)  # momentum attribute -> the online one it follows
    keys: Mapping[str, Callable[[StateDict], StateDict]] = field(default_factory=dict)  # official head ->
    # its state dict in the method's key names, where the two layouts differ


def linear_out_dims(module: nn.Module) -> list[int]:
    return [m.out_features for m in module.modules() if isinstance(m, nn.Linear)]


def single_layer_keys(sd: StateDict) -> StateDict:
    """An official bare nn.Linear head (`weight`, `bias`) as the one-layer MLPHead (`0.weight`, `0.bias`)."""
    return {(k if k[0].isdigit() else f"0.{k}"): v for k, v in sd.items()}


def hparams_flags(hparams: Mapping) -> str:
    def value(v):
        if isinstance(v, bool):
            return str(v).lower()
        return f"[{','.join(map(str, v))}]" if isinstance(v, (list, tuple)) else str(v)
    return " ".join(f"--hparams.{k} {value(v)}" for k, v in hparams.items())


def _copy(official: StateDict, module: nn.Module, what: str, hint: Callable[[], str] = str) -> None:
    own = module.state_dict()
    # BatchNorm's step counter is bookkeeping, not weights: keep ours where the layout has none
    official = {**{k: v for k, v in own.items() if k.endswith("num_batches_tracked")}, **official}
    wrong = sorted((k for k, v in official.items() if k in own and v.shape != own[k].shape),
                   key=lambda k: -official[k].dim())  # weight matrices first: they show the widths
    problems = [f"{k}: official {tuple(official[k].shape)} vs configured {tuple(own[k].shape)}" for k in wrong]
    problems += [f"{k}: not in the configured module" for k in official if k not in own]
    problems += [f"{k}: not in the official one" for k in own if k not in official]
    if problems:
        more = f"; ... ({len(problems) - 6} more)" if len(problems) > 6 else ""
        raise ConfigError(f"{what}: {'; '.join(problems[:6])}{more}.{hint()}")
    module.load_state_dict(official)


def load_official(method: nn.Module, ckpt, layout: OfficialLayout) -> list[str]:
    """Online backbone + heads, then the momentum networks (the file's target, else a copy of the loaded
    online modules). Returns one line per part: `attribute <- source`."""
    def hint():
        return (f" The official heads are those of {hparams_flags(layout.hparams(ckpt))}; set these, or "
                "--init-heads no to start only the backbone from the official weights.")

    loaded: dict[str, str] = {}  # the method's attribute -> where its weights came from
    unused: list[str] = []

    def load_branch(branch, attrs: Mapping[str, str], which: str) -> None:
        backbone = attrs[layout.backbone]
        if branch.backbone is not getattr(method, backbone):  # the trainer builds the method on it
            _copy(branch.backbone.state_dict(), getattr(method, backbone),
                  f"--init-from {ckpt.name}: the {which} backbone does not fit {ckpt.method}.{backbone}")
        loaded[backbone] = f"{which} backbone"
        for name, head in branch.heads.items():
            attr = attrs.get(layout.heads.get(name))
            if attr is None:
                unused.append(f"{which} {name}: not used by {ckpt.method}")
                continue
            _copy(layout.keys.get(name, dict)(head.state_dict()), getattr(method, attr),
                  f"--init-from {ckpt.name}: the {which} head '{name}' does not fit {ckpt.method}.{attr}", hint)
            loaded[attr] = f"{which} {name}"

    load_branch(ckpt.online, {a: a for a in [layout.backbone, *layout.heads.values()]}, "official")
    if ckpt.target is not None and layout.momentum:
        load_branch(ckpt.target, {online: m for m, online in layout.momentum.items()}, "official target")
    with torch.no_grad():
        for m, online in layout.momentum.items():
            if m not in loaded:
                getattr(method, m).load_state_dict(getattr(method, online).state_dict())
                loaded[m] = f"copy of {online}"
    return [f"{attr} <- {source}" for attr, source in loaded.items()] + unused


@torch.no_grad()
def load_buffer(buffer: torch.Tensor, official: torch.Tensor | None, what: str, hint: str) -> str:
    """State (DINO center, MoCo queue) is loaded where its shape fits; else the configured one is kept
    and the line says which hparam would take it."""
    if official is None:
        return f"{what}: not in the file, initial value kept"
    if official.shape != buffer.shape:
        return (f"{what}: not loaded, official {tuple(official.shape)} vs configured {tuple(buffer.shape)} "
                f"({hint} to load it)")
    buffer.copy_(official)
    return f"{what} <- official"
