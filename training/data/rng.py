"""Counter-based random numbers: every draw is a pure function of integer keys.

Each sample's augmentation randomness is `uniform(seed, epoch, index, view, ...)`, so a sample's views
do not depend on which process draws them, how the batch is split, or what was drawn before. The hash is
SplitMix64 (Steele et al. 2014) chained over the keys; numpy uint64 arithmetic wraps, which is what the
mixer needs.
"""

from __future__ import annotations

import numpy as np
import torch

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def _mix(z: np.ndarray) -> np.ndarray:
    z = z + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def hash64(*keys) -> np.ndarray:
    """SplitMix64 chained over `keys` (ints or integer arrays, broadcast together) -> uint64 array."""
    with np.errstate(over="ignore"):
        h = np.zeros((), dtype=np.uint64)
        for k in keys:
            k = np.asarray(k)
            if k.dtype.kind == "i" and (k < 0).any():
                raise ValueError("random keys must be non-negative")
            h = _mix(h ^ k.astype(np.uint64))
        return h


def unit_interval(h: np.ndarray) -> np.ndarray:
    """float64 in [0, 1) from the top 24 bits of uint64 hashes (exact in float32 too)."""
    return (h >> np.uint64(40)).astype(np.float64) / float(1 << 24)


def uniform(index, n: int, *keys) -> torch.Tensor:
    """(len(index), n) float32 uniforms in [0, 1): row i depends only on (keys, index[i], column)."""
    index = np.asarray(index.cpu() if torch.is_tensor(index) else index, dtype=np.int64).reshape(-1, 1)
    h = hash64(*keys, index, np.arange(n, dtype=np.int64)[None, :])
    return torch.from_numpy(unit_interval(h).astype(np.float32))


def randint(index, n: int, high: int, *keys) -> torch.Tensor:
    """(len(index), n) int64 in [0, high): row i depends only on (keys, index[i], column)."""
    index = np.asarray(index.cpu() if torch.is_tensor(index) else index, dtype=np.int64).reshape(-1, 1)
    h = hash64(*keys, index, np.arange(n, dtype=np.int64)[None, :])
    return torch.from_numpy((h % np.uint64(high)).astype(np.int64))


def generator(*keys) -> torch.Generator:
    """A torch.Generator seeded by the hash of `keys` (for draws that are too many to hash one by one)."""
    return torch.Generator().manual_seed(int(hash64(*keys)) & ((1 << 63) - 1))
