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

Non-torch pickles (BYOL's dill pickle of Haiku trees) go through `load_foreign_pickle`, a
`pickle.Unpickler` whose `find_class` returns numpy's array reconstruction, builtin containers, or an
inert stand-in (`InertObject`) for any other class or function: arguments and state are recorded,
nothing foreign is imported or called.
"""

from __future__ import annotations

import argparse
import pickle
from pathlib import Path
from typing import Any, Dict, Iterable, Tuple, Union

import numpy as np
import torch

__all__ = ["UnsafeCheckpointError", "load_checkpoint_file", "inert_stub", "load_foreign_pickle", "InertObject"]


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


# ---------------------------------------------------------------------------------------------
# Plain (non-torch) pickles: BYOL's dill pickle of JAX/Haiku trees.
#
# `pickle.Unpickler.find_class` is the only way a pickle reaches code, so it is replaced: numpy's
# array reconstruction, bytes decoding and builtin containers are the real thing; every other global
# (haiku FlatMapping, jax arrays, the byol NamedTuples, dill helpers) becomes an inert stand-in that
# records the arguments and state it was given and has no other behaviour. No module named in the
# file is imported.

class InertObject:
    """Stand-in for an object of a class clzoo does not import: `args`, `kwargs`, `state`, `items`."""
    _clzoo_name = "?"

    def __new__(cls, *args, **kwargs):
        self = object.__new__(cls)
        self.args, self.kwargs, self.state, self.items, self.list = args, kwargs, None, {}, []
        return self

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        self.state = state

    def __setitem__(self, key, value):  # SETITEMS on a dict subclass
        self.items[key] = value

    def append(self, value):  # APPENDS on a list subclass
        self.list.append(value)

    def extend(self, values):
        self.list.extend(values)

    def __repr__(self):
        return f"<inert {self._clzoo_name}>"


_inert_classes: Dict[str, type] = {}


def _inert_class(full_name: str) -> type:
    if full_name not in _inert_classes:
        module, _, name = full_name.rpartition(".")
        _inert_classes[full_name] = type(name.replace("<", "_").replace(">", "_") or "Inert", (InertObject,), {
            "__module__": f"clzoo.stub.{module}", "_clzoo_name": full_name})
    return _inert_classes[full_name]


def _inert_namedtuple(name, fieldnames, modulename=None, *unused):
    """dill's `_create_namedtuple(name, fields, module)`: a plain namedtuple, nothing imported."""
    import collections
    fields = [str(f) for f in fieldnames]
    cls = collections.namedtuple(str(name).replace(".", "_"), fields)  # validates identifiers
    cls.__module__ = f"clzoo.stub.{modulename}"
    return cls


def _inert_reconstructor(cls, base, state):
    """copyreg._reconstructor (protocols 0/1) without calling foreign constructors."""
    obj = cls.__new__(cls) if isinstance(cls, type) and issubclass(cls, InertObject) else _inert_class("object")()
    if state is not None:
        obj.__setstate__(state)
    return obj


def _safe_pickle_globals() -> Dict[Tuple[str, str], Any]:
    import builtins
    import codecs
    import collections

    multiarray = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
    numeric = np._core.numeric if hasattr(np, "_core") else np.core.numeric
    out: Dict[Tuple[str, str], Any] = {}
    for mod in ("numpy.core", "numpy._core"):
        for sub in ("multiarray", "_multiarray_umath"):  # dill names the implementing module
            out[(f"{mod}.{sub}", "_reconstruct")] = multiarray._reconstruct
            out[(f"{mod}.{sub}", "scalar")] = multiarray.scalar
        if hasattr(numeric, "_frombuffer"):
            out[(f"{mod}.numeric", "_frombuffer")] = numeric._frombuffer
    out[("numpy", "ndarray")] = np.ndarray
    out[("numpy", "dtype")] = np.dtype
    out[("_codecs", "encode")] = codecs.encode
    out[("collections", "OrderedDict")] = collections.OrderedDict
    for name in ("dict", "list", "tuple", "set", "frozenset", "bytearray", "bytes", "str", "int", "float",
                 "complex", "bool", "slice", "range", "object"):
        out[("builtins", name)] = out[("__builtin__", name)] = getattr(builtins, name)
    out[("copyreg", "_reconstructor")] = out[("copy_reg", "_reconstructor")] = _inert_reconstructor
    out[("dill._dill", "_create_namedtuple")] = out[("dill.dill", "_create_namedtuple")] = _inert_namedtuple
    return out


class _ModuleRef:
    """What dill's `_import_module(name)` yields here: the name, not the module."""

    def __init__(self, name: str):
        self.name = str(name)


class _RestrictedUnpickler(pickle.Unpickler):
    _safe = None

    def find_class(self, module: str, name: str):
        if _RestrictedUnpickler._safe is None:
            _RestrictedUnpickler._safe = _safe_pickle_globals()
        found = self._safe.get((module, name))
        if found is not None:
            return found
        if module in ("dill._dill", "dill.dill"):
            # dill spells some globals as _get_attr(_import_module('numpy.core.multiarray'), '_reconstruct'):
            # resolve them through this same allow-list instead of importing anything.
            if name == "_import_module":
                return _ModuleRef
            if name == "_get_attr":
                return lambda obj, attr: (self.find_class(obj.name, str(attr)) if isinstance(obj, _ModuleRef)
                                          else _inert_class(f"dill.getattr.{attr}"))
            if name == "_load_type":
                return lambda type_name: {"NoneType": type(None), "DictType": dict, "ListType": list,
                                          "TupleType": tuple}.get(type_name, _inert_class(f"dill.{type_name}"))
        return _inert_class(f"{module}.{name}")

    def persistent_load(self, pid):
        raise UnsafeCheckpointError("the pickle references persistent objects (not a plain data pickle)")


def load_foreign_pickle(path: Union[str, Path]) -> Any:
    """Load a plain pickle (e.g. dill protocol 2) of numpy arrays and containers, running no foreign code.

    Numpy arrays and builtin containers are rebuilt; objects of any other class come back as
    `InertObject`s (constructor `args`, `state`, `items`), and dill's namedtuple records as plain
    namedtuples. Nothing named in the file is imported.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {path}")
    with open(path, "rb") as fh:
        try:
            return _RestrictedUnpickler(fh).load()
        except (pickle.UnpicklingError, EOFError) as e:
            raise UnsafeCheckpointError(f"{path} is not a readable plain pickle: {e}") from None
