"""Official checkpoint formats -> timm state dicts.

One `CheckpointFormat` per official file layout is the only code that knows a foreign layout
(key/shape lists of each layout: ../shared/reference/keys/, summarised in checkpoints.md). Most
PyTorch releases differ only in where the backbone sits in the file and which prefixes/heads wrap it,
so they are data: `containers` (where to look), `keep_prefixes` (keys that belong to the backbone,
stripped), `drop_prefixes` (heads). Formats that need real code (TF1 variable names, Haiku trees,
two-branch CMC) give a `convert_fn`.

`convert_checkpoint(obj, fmt)` returns a plain `{timm_key: tensor}` backbone state dict.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch

from .._serialization import load_checkpoint_file

__all__ = ["CheckpointFormat", "ConversionError", "register_format", "get_format", "list_formats",
           "convert_checkpoint", "load_and_convert", "add_num_batches_tracked"]


class ConversionError(ValueError):
    """A checkpoint does not have the layout its format expects."""


@dataclass(frozen=True)
class CheckpointFormat:
    name: str
    description: str
    # Where the state dict sits: the first path that exists is used; () is the file's top level.
    containers: Tuple[Tuple[str, ...], ...] = ((),)
    # Keys must start with one of these (stripped); empty = every key.
    keep_prefixes: Tuple[str, ...] = ()
    # Stripped when present, in order, after keep_prefixes (DDP 'module.', wrappers).
    strip_prefixes: Tuple[str, ...] = ("module.",)
    # Heads and training state that are not part of the backbone.
    drop_prefixes: Tuple[str, ...] = ()
    # Pickled classes of the authors' code that may be replaced by inert stubs on load.
    stub_globals: Tuple[str, ...] = ()
    # For formats that need code rather than prefix rules: fn(loaded_object) -> state dict.
    convert_fn: Optional[Callable[[Any], Dict[str, torch.Tensor]]] = None
    # Raw file loader for non-torch containers (e.g. .npz); default: safe torch.load.
    load_fn: Optional[Callable[[Path], Any]] = None
    # Files released beside the one a URL names, fetched into the same download folder (e.g. the
    # `.data-00000-of-00001` shard of a TF checkpoint whose `.index` is the entry's URL).
    companion_urls: Optional[Callable[[str], Tuple[str, ...]]] = None
    version: int = 1  # bump when the conversion changes, to invalidate cached conversions


_formats: Dict[str, CheckpointFormat] = {}


def register_format(fmt: CheckpointFormat) -> CheckpointFormat:
    _formats[fmt.name] = fmt
    return fmt


def get_format(name: str) -> CheckpointFormat:
    if name not in _formats:
        raise ConversionError(f"unknown checkpoint format {name!r}; known: {', '.join(sorted(_formats))}")
    return _formats[name]


def list_formats() -> List[str]:
    return sorted(_formats)


def _describe(obj: Any) -> str:
    if isinstance(obj, Mapping):
        keys = list(obj.keys())
        shown = ", ".join(repr(k) for k in keys[:8])
        return f"a dict with {len(keys)} keys ({shown}{', ...' if len(keys) > 8 else ''})"
    return f"a {type(obj).__name__}"


def _find_container(obj: Any, fmt: CheckpointFormat) -> Mapping[str, Any]:
    for path in fmt.containers:
        node = obj
        for key in path:
            if isinstance(node, Mapping) and key in node:
                node = node[key]
            else:
                node = None
                break
        if isinstance(node, Mapping) and node:
            return node
    wanted = " or ".join("[" + "][".join(repr(k) for k in p) + "]" if p else "the top level"
                         for p in fmt.containers)
    raise ConversionError(
        f"not a {fmt.name} checkpoint ({fmt.description}): expected a state dict at {wanted}, "
        f"found {_describe(obj)}")


def add_num_batches_tracked(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Older/foreign files lack BN `num_batches_tracked`; emit zeros so the output equals a timm state dict."""
    for key in [k for k in state_dict if k.endswith(".running_mean")]:
        nbt = key[: -len("running_mean")] + "num_batches_tracked"
        state_dict.setdefault(nbt, torch.tensor(0, dtype=torch.long))
    return state_dict


def convert_checkpoint(obj: Any, fmt: Union[str, CheckpointFormat]) -> Dict[str, torch.Tensor]:
    """Backbone state dict in timm layout from a loaded official checkpoint."""
    fmt = get_format(fmt) if isinstance(fmt, str) else fmt
    if fmt.convert_fn is not None:
        return add_num_batches_tracked(dict(fmt.convert_fn(obj)))
    sd = _find_container(obj, fmt)
    out: Dict[str, torch.Tensor] = {}
    kept_any = False
    for key, value in sd.items():
        if not isinstance(value, torch.Tensor):
            continue
        if fmt.keep_prefixes:
            prefix = next((p for p in fmt.keep_prefixes if key.startswith(p)), None)
            if prefix is None:
                continue
            key = key[len(prefix):]
        kept_any = True
        for p in fmt.strip_prefixes:
            if key.startswith(p):
                key = key[len(p):]
        if any(key.startswith(p) for p in fmt.drop_prefixes):
            continue
        out[key] = value
    if not kept_any:
        sample = ", ".join(list(sd.keys())[:6])
        raise ConversionError(
            f"not a {fmt.name} checkpoint ({fmt.description}): no key starts with "
            f"{' or '.join(repr(p) for p in fmt.keep_prefixes)}; its keys begin {sample}")
    if not out:
        raise ConversionError(f"{fmt.name}: every tensor was a head; nothing left for the backbone")
    return add_num_batches_tracked(out)


def load_and_convert(path: Union[str, Path], fmt: Union[str, CheckpointFormat]) -> Dict[str, torch.Tensor]:
    fmt = get_format(fmt) if isinstance(fmt, str) else fmt
    path = Path(path)
    obj = fmt.load_fn(path) if fmt.load_fn is not None else load_checkpoint_file(path, fmt.stub_globals)
    return convert_checkpoint(obj, fmt)


from . import byol, formats, simclr  # noqa: E402,F401  (registers the official formats)
