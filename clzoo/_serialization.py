"""Loading checkpoint files without running code from them.

Foreign `.pth`/`.pth.tar` files go through `torch.load(weights_only=True)`: only tensors, plain
containers and an allow-list of harmless classes are rebuilt. Official SSL checkpoints contain a few
non-tensor objects; those are allowed here and nowhere else:

* `argparse.Namespace` (DINO full checkpoints `args`, CMC `opt`, PyContrast `opt`);
* numpy scalars/dtypes (epoch counters and accuracies saved as numpy values);
* per-format *inert stubs* for pickled objects of the authors' own classes (lemniscate pickles its
  `lib.NCEAverage.NCEAverage` module): the stub records the object's state as attributes and has
  no behaviour, so no foreign code runs and no foreign module is imported.

Anything else (e.g. `os.system` in a `__reduce__`) is refused with `UnsafeCheckpointError`.
clzoo's own weights are safetensors, which cannot carry code.
"""

from __future__ import annotations

import argparse
import pickle
from pathlib import Path
from typing import Any, Dict, Iterable, Union

import numpy as np
import torch

__all__ = ["UnsafeCheckpointError", "load_checkpoint_file", "inert_stub"]


class UnsafeCheckpointError(RuntimeError):
    """The file holds pickled objects that would run code (or that clzoo does not know) when loaded."""


def _numpy_globals():
    multiarray = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
    out = [(multiarray.scalar, "numpy.core.multiarray.scalar"),
           (multiarray.scalar, "numpy._core.multiarray.scalar"),
           (np.dtype, "numpy.dtype")]
    for name in ("Float64DType", "Float32DType", "Int64DType", "Int32DType", "BoolDType"):
        if hasattr(np, "dtypes") and hasattr(np.dtypes, name):
            out.append((getattr(np.dtypes, name), f"numpy.dtypes.{name}"))
    return out


_SAFE_GLOBALS = [argparse.Namespace] + _numpy_globals()
_stub_cache: Dict[str, type] = {}


def inert_stub(full_name: str) -> type:
    """A behaviour-less class standing in for the pickled class `full_name` (module.Class)."""
    if full_name not in _stub_cache:
        module, _, qualname = full_name.rpartition(".")
        cls = type(qualname, (), {
            "__module__": f"clzoo.stub.{module}",
            "__doc__": f"Inert stand-in for {full_name} (state only, no behaviour).",
            "__repr__": lambda self: f"<inert {full_name}>",
        })
        _stub_cache[full_name] = cls
    return _stub_cache[full_name]


def load_checkpoint_file(path: Union[str, Path], stub_globals: Iterable[str] = ()) -> Any:
    """Load a checkpoint (safetensors or torch pickle) without executing code from it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        return load_file(str(path))
    allowed = list(_SAFE_GLOBALS) + [(inert_stub(name), name) for name in stub_globals]
    try:
        with torch.serialization.safe_globals(allowed):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        detail = next((ln for ln in lines if "GLOBAL" in ln or "global" in ln or "Unsupported" in ln),
                      lines[-1] if lines else repr(e))
        raise UnsafeCheckpointError(
            f"Refused to load {path}: it contains pickled objects that clzoo does not allow "
            f"({detail}). Loading them could run code. "
            "clzoo only unpickles tensors, containers and the known harmless classes of official SSL "
            "checkpoints. If this is an official file, pass the entry's format (clzoo convert NAME "
            "--input FILE); if you trust the file, re-save its state dict with "
            "torch.save(torch.load(f, weights_only=False)['state_dict'], 'clean.pth')."
        ) from None
