"""Stochastic depth drawn per sample from the counter-based generator (data/rng.py).

timm's `DropPath` draws its mask from the process's global RNG, so the same sample drops other paths on
another number of processes, another split of the batch or after a resume. `CounterDropPath` keys each
row's keep / drop draw by (seed, step, layer, call, view, dataset index): a pure function of the sample,
whatever process or micro-batch it lands on. The trainer opens `sample_keys(index, step, seed)` around
each forward; outside it (a user's own loop) the layer falls back to timm's draw.

Rows of one call are matched to samples as the methods concatenate views, view-major: a call on
`k * len(index)` rows is k views of the batch, row i being view i // B of sample index[i % B].
"""

from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn

from ..data.rng import hash64, unit_interval

_KEYS: contextvars.ContextVar = contextvars.ContextVar("clzoo_sample_keys", default=None)


@dataclass
class _Keys:
    index: np.ndarray
    step: int
    seed: int
    calls: dict = field(default_factory=dict)  # layer id -> calls so far in this forward


@contextlib.contextmanager
def sample_keys(index: torch.Tensor, step: int, seed: int):
    """Within this context every CounterDropPath draws from (seed, step, layer, call, view, index)."""
    token = _KEYS.set(_Keys(np.asarray(index.cpu(), dtype=np.int64), int(step), int(seed)))
    try:
        yield
    finally:
        _KEYS.reset(token)


class CounterDropPath(nn.Module):
    """timm's DropPath (per-sample residual-branch drop, kept rows scaled by 1 / keep) with the mask from
    the counter-based generator. `layer` is this layer's id within the method (distinct for the online,
    momentum and teacher networks)."""

    def __init__(self, drop_prob: float, layer: int, scale_by_keep: bool = True):
        super().__init__()
        self.drop_prob, self.layer, self.scale_by_keep = drop_prob, layer, scale_by_keep

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keys = _KEYS.get()
        keep = 1.0 - self.drop_prob
        if keys is None:
            mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        else:
            B, n = len(keys.index), x.shape[0]
            if B == 0 or n % B:
                raise ValueError(f"drop path: {n} rows are not whole views of the batch of {B} samples")
            call = keys.calls.get(self.layer, 0)
            keys.calls[self.layer] = call + 1
            row = np.arange(n)
            h = hash64(keys.seed, 3000, keys.step, self.layer, call, row // B, keys.index[row % B])
            mask = torch.from_numpy(unit_interval(h) < keep).to(x.device, x.dtype)
            mask = mask.view((n,) + (1,) * (x.dim() - 1))
        if keep > 0.0 and self.scale_by_keep:
            mask = mask / keep
        return x * mask

    def extra_repr(self) -> str:
        return f"drop_prob={round(self.drop_prob, 3):0.3f}, layer={self.layer}"


def convert_drop_path(module: nn.Module) -> nn.Module:
    """Replace every timm DropPath of `module` (in module order) by a CounterDropPath with its own id."""
    from timm.layers import DropPath

    targets = [(name, m) for name, m in module.named_modules() if isinstance(m, DropPath)]
    for layer, (name, m) in enumerate(targets):
        parent_name, _, attr = name.rpartition(".")
        parent = module.get_submodule(parent_name) if parent_name else module
        new = CounterDropPath(m.drop_prob, layer, getattr(m, "scale_by_keep", True))
        new.train(m.training)
        setattr(parent, attr, new)
    return module
