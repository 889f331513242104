"""Deterministic parameter values keyed by the official variable name (numpy only).

Shared by the golden-output generator (`tests/data/golden/make_golden.py`, run once with the official
TensorFlow / Haiku code) and the tests, so a test can rebuild the exact weights behind a stored
golden output without storing the weights. `np.random.RandomState` is used because its streams are
frozen across numpy versions.
"""
from __future__ import annotations

import zlib
from typing import Sequence

import numpy as np


def _rng(name: str) -> np.random.RandomState:
    return np.random.RandomState(zlib.crc32(name.encode()) & 0x7FFFFFFF)


def golden_value(name: str, shape: Sequence[int]) -> np.ndarray:
    """A float32 value for the TF/Haiku variable `name`: He-scaled kernels, BN statistics near (0, 1)."""
    shape = tuple(int(s) for s in shape)
    rng = _rng(name)
    leaf = name.replace("|", "/").rsplit("/", 1)[-1]
    if "mean_ema" in name or leaf == "moving_mean":
        out = rng.standard_normal(shape) * 0.1
    elif "var_ema" in name or leaf == "moving_variance":
        out = rng.uniform(0.5, 1.5, shape)
    elif leaf in ("gamma", "scale"):
        out = rng.uniform(0.2, 0.6, shape)  # keeps deep random ResNets at O(1) activations
    elif leaf in ("beta", "offset", "bias", "b"):
        out = rng.standard_normal(shape) * 0.1
    elif leaf in ("kernel", "w"):
        fan_in = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
        out = rng.standard_normal(shape) * np.sqrt(2.0 / max(fan_in, 1))
    elif leaf == "counter":
        return np.full(shape, 1000, dtype=np.int32)
    else:
        out = rng.standard_normal(shape)
    return out.astype(np.float32)


def golden_input(seed: int, shape: Sequence[int]) -> np.ndarray:
    """A float32 image batch in NHWC with values in [0, 1]."""
    return np.random.RandomState(seed).uniform(0.0, 1.0, tuple(shape)).astype(np.float32)
