"""Official checkpoint formats -> timm state dicts.

One `CheckpointFormat` per official file layout is the only code that knows a foreign layout
(key/shape lists of each layout: ../shared/reference/keys/, summarised in checkpoints.md). Most
PyTorch releases differ only in where the backbone sits in the file and which prefixes/heads wrap it,
so they are data: `containers` (where to look), `keep_prefixes` (keys that belong to the backbone,
stripped), `drop_prefixes` (heads). Formats that need real code (TF1 variable names, Haiku trees,
two-branch CMC) give a `convert_fn`.

`convert_checkpoint(obj, fmt)` returns a plain `{timm_key: tensor}` backbone state dict.

Full training checkpoints (DINO's `*_full_checkpoint.pth`, Barlow Twins' `checkpoint.pth`) are
recognised wherever they are handed in: a format that lists them in `full_layouts` reads their backbone
(the released backbone file is exactly that network: DINO's teacher, Barlow Twins' `module.backbone`);
any other format raises a ConversionError whose `layout` names the full format, so the caller can name
the entry released in that layout.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch

from .._serialization import load_checkpoint_file

__all__ = ["CheckpointFormat", "ConversionError", "register_format", "get_format", "list_formats",
           "convert_checkpoint", "load_and_convert", "add_num_batches_tracked", "has_layout"]


_logger = logging.getLogger(__name__)


class ConversionError(ValueError):
    """A checkpoint does not have the layout its format expects.

    `layout`: the format whose layout the checkpoint has instead, when that is known (a full training
    checkpoint given for a backbone file, or the reverse), so that the caller can name the right entry;
    `what`: the message without its closing ": use ..." advice, for the caller to complete.
    """

    def __init__(self, message: str, layout: Optional[str] = None, what: Optional[str] = None):
        super().__init__(message)
        self.layout, self.what = layout, what


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
    # Full training checkpoints (format names) whose backbone is this format's file: read through
    # that format when the file has its layout (`has_layout`), instead of failing.
    full_layouts: Tuple[str, ...] = ()
    # This is a full training checkpoint layout (detected in files handed to other formats), and the
    # format of the backbone-only file released beside it.
    backbone_format: Optional[str] = None
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


def has_layout(obj: Any, fmt: CheckpointFormat) -> bool:
    """`obj` has the nesting and key prefixes of `fmt` (a nested container, not just any top-level dict)."""
    for path in fmt.containers:
        if not path:
            continue
        node = obj
        for key in path:
            node = node.get(key) if isinstance(node, Mapping) else None
        if isinstance(node, Mapping) and any(
                isinstance(v, torch.Tensor) and (not fmt.keep_prefixes or str(k).startswith(fmt.keep_prefixes))
                for k, v in node.items()):
            return True
    return False


def _is_bare_backbone(obj: Any) -> bool:
    """Tensors at the top level under plain module names (no DDP 'module.' wrapper, as in SwAV's files)."""
    return (isinstance(obj, Mapping) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())
            and not any(str(k).startswith("module.") for k in obj))


def _layout_error(fmt: CheckpointFormat, layout: CheckpointFormat) -> ConversionError:
    """One line: the file is `layout` (known), not `fmt`, and which kind of entry reads it."""
    kind = layout.description if layout.backbone_format is not None else f"backbone-only file ({layout.description})"
    what = f"this is a {kind}, not a {fmt.name} file ({fmt.description})"
    return ConversionError(f"{what}: use an entry of format {layout.name} (`clzoo info NAME` shows each "
                           "entry's format)", layout=layout.name, what=what)


def _other_layout(obj: Any, fmt: CheckpointFormat) -> Optional[CheckpointFormat]:
    """The known layout of a file `fmt` cannot read: a full training checkpoint, or (for a full format) the
    bare backbone state dict released beside it."""
    for other in _formats.values():
        if other.backbone_format is not None and other is not fmt and has_layout(obj, other):
            return other
    if fmt.backbone_format is not None and _is_bare_backbone(obj):
        return get_format(fmt.backbone_format)
    return None


def convert_checkpoint(obj: Any, fmt: Union[str, CheckpointFormat],
                       full_layouts: Optional[Sequence[str]] = None) -> Dict[str, torch.Tensor]:
    """Backbone state dict in timm layout from a loaded official checkpoint.

    `full_layouts`: the full training layouts this caller accepts in place of `fmt`'s file (default:
    `fmt.full_layouts`); one of `fmt.full_layouts` that is not accepted raises ConversionError(layout=...).
    """
    fmt = get_format(fmt) if isinstance(fmt, str) else fmt
    accepted = fmt.full_layouts if full_layouts is None else tuple(full_layouts)
    for name in fmt.full_layouts:
        full = get_format(name)
        if has_layout(obj, full):
            if name not in accepted:
                raise _layout_error(fmt, full)
            _logger.info("the file is the %s: reading its backbone", full.description)
            return convert_checkpoint(obj, full)
    try:
        return _convert(obj, fmt)
    except ConversionError as e:
        other = _other_layout(obj, fmt) if e.layout is None else None
        if other is None:
            raise
        raise _layout_error(fmt, other) from None


def _convert(obj: Any, fmt: CheckpointFormat) -> Dict[str, torch.Tensor]:
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


def load_and_convert(path: Union[str, Path], fmt: Union[str, CheckpointFormat],
                     full_layouts: Optional[Sequence[str]] = None) -> Dict[str, torch.Tensor]:
    fmt = get_format(fmt) if isinstance(fmt, str) else fmt
    path = Path(path)
    obj = fmt.load_fn(path) if fmt.load_fn is not None else load_checkpoint_file(path, fmt.stub_globals)
    return convert_checkpoint(obj, fmt, full_layouts)


from . import byol, formats, simclr  # noqa: E402,F401  (registers the official formats)
