"""One `nn.Module` per method, selected with `--method`.

The interface the training loop relies on (and nothing else):

    method = METHODS[name](backbone, info, **hparams)  # hparams: the `method:` section of the config
    loss, logs = method(batch, step)    # batch: {"views": [B x 3 x H x W, ...], "index": (B,),
                                        #         "jigsaw": (B, 9, 3, p, p) when the config asks for it}
    method.after_optimizer_step(step)   # EMA / queue / memory-bank / centre updates, once per
                                        # optimizer step (also under gradient accumulation)
    method.param_groups()               # [{"params", "weight_decay": bool, "lars": bool,
                                        #   "fixed_lr": bool, "lr_scale": float}]
    method.backbone                     # the timm model that is exported
    method.before_optimizer_step(step)  # optional: e.g. cancel the gradient of a frozen last layer
                                        # (after the backward of every micro-batch, before clipping)
    method.load_pretrained(ckpt)        # optional: copy an official pretraining checkpoint
                                        # (clzoo.load_pretraining_checkpoint) into the method: backbone,
                                        # heads, momentum network, state; returns what it loaded
                                        # (`--init-from` with heads; methods/official.py)

`info` (`TrainInfo`) gives a method what it may need to precompute per-step schedules (DINO-style
arrays indexed by the global step) or size a memory bank. `logs` holds floats or 0-dim tensors written
to metrics.jsonl next to `loss` and `lr`.
"""

from __future__ import annotations

import difflib
import inspect
from dataclasses import dataclass

import torch.nn as nn


@dataclass(frozen=True)
class TrainInfo:
    num_samples: int       # training-set size (memory banks)
    total_steps: int       # optimizer steps of the whole run (schedules)
    steps_per_epoch: int
    global_batch: int
    seed: int


def _registry():
    from .barlowtwins import BarlowTwins
    from .byol import BYOL
    from .cmc import CMC
    from .cpc import CPC
    from .cpcv2 import CPCv2
    from .deepclusterv2 import DeepClusterV2
    from .dino import DINO
    from .infomin import InfoMin
    from .instdisc import InstDisc
    from .invaspread import InvaSpread
    from .mocov1 import MoCo
    from .mocov2 import MoCoV2
    from .mocov3 import MoCoV3
    from .pcl import PCL, PCLv2
    from .pirl import PIRL
    from .selav2 import SeLaV2
    from .simclr import SimCLR
    from .simclrv2 import SimCLRv2
    from .simsiam import SimSiam
    from .swav import SwAV
    return {"instdisc": InstDisc, "invaspread": InvaSpread, "mocov1": MoCo, "mocov2": MoCoV2, "simclr": SimCLR,
            "simclrv2": SimCLRv2, "pirl": PIRL, "infomin": InfoMin, "byol": BYOL, "simsiam": SimSiam,
            "barlowtwins": BarlowTwins, "swav": SwAV, "deepclusterv2": DeepClusterV2, "mocov3": MoCoV3,
            "dino": DINO, "cmc": CMC, "cpc": CPC, "cpcv2": CPCv2, "pcl": PCL, "pclv2": PCLv2,
            "selav2": SeLaV2}


METHODS = ("instdisc", "invaspread", "mocov1", "mocov2", "simclr", "simclrv2", "pirl", "infomin", "byol", "simsiam",
           "barlowtwins", "swav", "deepclusterv2", "mocov3", "dino", "cmc", "cpc", "cpcv2", "pcl", "pclv2", "selav2")


def method_class(name: str) -> type[nn.Module]:
    registry = _registry()
    if name not in registry:
        close = difflib.get_close_matches(name, registry, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown method {name!r}.{hint} Available: {', '.join(registry)}")
    return registry[name]


def hparam_names(name: str) -> list[str]:
    sig = inspect.signature(method_class(name).__init__)
    return [p for p in sig.parameters if p not in ("self", "backbone", "info")]


def build_method(name: str, backbone: nn.Module, info: TrainInfo, **hparams) -> nn.Module:
    allowed = hparam_names(name)
    for key in hparams:
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise ValueError(f"unknown hyper-parameter method.{key} for {name}.{hint} "
                             f"{name} takes: {', '.join(allowed)}")
    return method_class(name)(backbone, info, **hparams)
