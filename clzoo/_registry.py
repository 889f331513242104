"""Name resolution for clzoo entries: what exists, what it is called, and what is known about it.

clzoo architectures are registered in timm's own registry (each family module under `clzoo/models/`
declares `default_cfgs` and `@register_model` entrypoints, exactly like a timm model module), so
`timm.create_model("mocov2_resnet50.800ep")` works once clzoo is imported. timm's `PretrainedCfg`
has no room for what a model zoo of self-supervised weights must say about a checkpoint (method,
paper, training recipe, reported numbers and their protocol, the official file's format), so that
lives here in `WeightsInfo`, keyed by the same `arch.tag` name.

Names are `{method}_{backbone}[.{tag}]`. Aliases let timm users keep the names they know
(`vit_small_patch16_224.dino` is `dino_vits16`).
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import re
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import timm.models._registry as timm_registry
from timm.models import generate_default_cfgs
from timm.models._pretrained import PretrainedCfg

__all__ = [
    "Metric", "MethodInfo", "WeightsInfo", "UnknownModelError", "NoPretrainedWeightsError", "ManualDownloadError",
    "register_cfgs", "register_method", "register_alias", "resolve_name", "list_models",
    "list_pretrained", "get_pretrained_cfg", "get_weights_info", "get_method_info", "model_info",
    "list_aliases", "is_clzoo_model", "hash_check",
]


class UnknownModelError(ValueError):
    """An unknown model name or tag (the message lists the closest names)."""


class NoPretrainedWeightsError(RuntimeError):
    """`pretrained=True` for an entry that has no weight source."""


class ManualDownloadError(NoPretrainedWeightsError):
    """The official file exists but has no downloadable link (only a shared-folder page)."""


@dataclass(frozen=True)
class Metric:
    """A reported number and the protocol behind it (numbers are not comparable without it)."""
    name: str  # e.g. "imagenet_linear_top1", "imagenet_knn_top1"
    value: float  # in percent
    protocol: str  # how it was measured, e.g. "linear probe, SGD lr 30, 100 ep (main_lincls.py)"
    source: str = "paper"  # "paper", "README", "model card", "clzoo" (measured here)


@dataclass(frozen=True)
class MethodInfo:
    name: str  # display name, e.g. "MoCo v2"
    paper: str  # title
    authors: str
    venue: str  # e.g. "CVPR 2020"
    arxiv: str  # arXiv id
    code: str  # official repository URL
    bibtex_key: str = ""


@dataclass(frozen=True)
class WeightsInfo:
    """What clzoo knows about one `arch.tag` entry beyond timm's PretrainedCfg."""
    name: str
    method: str  # method key, e.g. "mocov2"
    weights_format: Optional[str] = None  # converter of the official file (clzoo.convert)
    backbone: str = ""  # e.g. "ResNet-50", "ViT-S/16 (12 heads)"
    dataset: str = "imagenet-1k"
    epochs: Optional[int] = None
    batch_size: Optional[int] = None
    recipe: str = ""  # one line: optimizer, lr, schedule, augmentations
    metrics: Tuple[Metric, ...] = ()
    # Hashes of the official file that its authors publish (never computed here: a hash recorded from
    # our own download would only prove that the next download equals the first). Every download is
    # checked against them. sha256: a full digest or a prefix (torch.hub's `name-<prefix>.ext`);
    # md5_prefix: as MoCo's README prints it.
    sha256: Optional[str] = None
    md5_prefix: Optional[str] = None
    notes: str = ""
    # The official file's name when `url` is a shared folder with no published per-file link (the
    # CMC and PyContrast Dropbox folders): it cannot be fetched, only named to the user (or mirrored).
    folder_file: Optional[str] = None
    # Architecture arguments these weights need and the arch's default lacks (e.g. CMC colour space).
    model_args: Dict[str, Any] = field(default_factory=dict)


_methods: Dict[str, MethodInfo] = {}
_weights: Dict[str, WeightsInfo] = {}  # 'arch.tag' (and 'arch' for the default tag) -> info
_archs: Dict[str, str] = {}  # arch -> method key
_aliases: Dict[str, str] = {}  # alias -> clzoo 'arch[.tag]'

# Fields of clzoo's cfg records that belong to WeightsInfo rather than timm's PretrainedCfg.
_INFO_FIELDS = {f.name for f in dataclasses.fields(WeightsInfo)} - {"name"}
# field -> the longest digest; a published prefix has at least 8 hex digits (torch.hub's check_hash uses 8+)
HASH_FIELDS = {"sha256": 64, "md5_prefix": 32}


def _check_hashes(name: str, info: Dict[str, Any]) -> None:
    for fld, longest in HASH_FIELDS.items():
        value = info.get(fld)
        if value is not None and not re.fullmatch(f"[0-9a-f]{{8,{longest}}}", value):
            raise ValueError(f"cfg {name}: {fld}={value!r} is not a lower-case hex digest or prefix "
                             f"(8 to {longest} digits)")


def hash_check(name: str) -> Optional[str]:
    """How the download of an entry's official file is checked: against a hash its authors publish, or
    only against the sha256 recorded when clzoo first downloaded it (None: nothing is downloaded)."""
    info, cfg = get_weights_info(name), get_pretrained_cfg(name)
    if info.sha256:
        return f"published sha256 {'prefix ' if len(info.sha256) < 64 else ''}{info.sha256}"
    if info.md5_prefix:
        return f"published md5 prefix {info.md5_prefix}"
    return "recorded on first download" if cfg.url else None


def register_method(key: str, info: MethodInfo) -> None:
    _methods[key] = info


def register_alias(alias: str, target: str) -> None:
    """`alias` (e.g. 'vit_small_patch16_224.dino') resolves to the clzoo name `target`."""
    _aliases[alias] = target


def register_cfgs(cfgs: Dict[str, Dict[str, Any]]) -> Dict[str, Any]:
    """Split clzoo cfg records into timm `default_cfgs` and clzoo `WeightsInfo`.

    Each record is a dict of PretrainedCfg fields plus WeightsInfo fields (`method` is required).
    Returns what a timm model module assigns to its `default_cfgs`.
    """
    timm_cfgs = {}
    for name, record in cfgs.items():
        record = dict(record)
        info = {k: record.pop(k) for k in list(record) if k in _INFO_FIELDS}
        arch, tag = timm_registry.split_model_name_tag(name)
        clean = f"{arch}.{tag.strip('*')}" if tag else arch
        if "method" not in info:
            raise ValueError(f"cfg {name} has no method")
        if info["method"] not in _methods:
            raise ValueError(f"cfg {name}: unknown method {info['method']!r}; register_method first")
        _check_hashes(name, info)
        _weights[clean] = WeightsInfo(name=clean, **info)
        _archs[arch] = info["method"]
        timm_cfgs[name] = PretrainedCfg(**record)
    return generate_default_cfgs(timm_cfgs)


# ---------------------------------------------------------------------------------------------
# lookups


def is_clzoo_model(name: str) -> bool:
    arch, _ = timm_registry.split_model_name_tag(_aliases.get(name, name))
    return arch in _archs


def _all_names() -> List[str]:
    names = set(_archs)
    for arch in _archs:
        names.update(timm_registry._model_with_tags.get(arch, []))
    return sorted(names | set(_aliases), key=timm_registry._natural_key)


def _closest(name: str, n: int = 5) -> List[str]:
    candidates = _all_names()
    close = difflib.get_close_matches(name, candidates, n=n, cutoff=0.55)
    if len(close) < n:  # also offer names sharing the method or the backbone
        stem = re.split(r"[._]", name)[0]
        close += [c for c in candidates if c.startswith(stem) and c not in close][: n - len(close)]
    return close


def resolve_name(name: str) -> str:
    """The clzoo `arch[.tag]` a user-facing name refers to; raises UnknownModelError with suggestions."""
    if not isinstance(name, str) or not name:
        raise UnknownModelError(f"model name must be a non-empty string, got {name!r}")
    name = _aliases.get(name, name)
    arch, tag = timm_registry.split_model_name_tag(name)
    if arch not in _archs:
        hint = _closest(name)
        msg = f"Unknown clzoo model {name!r}."
        if hint:
            msg += " Did you mean: " + ", ".join(hint) + "?"
        msg += " `clzoo list` (or clzoo.list_models()) shows every name."
        raise UnknownModelError(msg)
    if tag and f"{arch}.{tag}" not in timm_registry._model_pretrained_cfgs:
        tags = [t.split(".", 1)[1] for t in timm_registry._model_with_tags.get(arch, []) if "." in t]
        raise UnknownModelError(
            f"Unknown tag {tag!r} for {arch!r}. Available tags: {', '.join(tags) or '(none)'}.")
    return name


def _default_tag(arch: str) -> str:
    default = timm_registry._model_default_cfgs.get(arch)
    return default.tags[0] if default is not None and default.tags else ""


def _full_name(name: str) -> str:
    """'arch' -> 'arch.default_tag' (when the arch has tags)."""
    name = resolve_name(name)
    arch, tag = timm_registry.split_model_name_tag(name)
    tag = tag or _default_tag(arch)
    return f"{arch}.{tag}" if tag else arch


def list_models(pattern: str = "*", pretrained: bool = False) -> List[str]:
    """clzoo architecture names matching a shell-style pattern.

    With `pretrained=True` the `arch.tag` names that have a weight source are listed (as timm does).
    """
    if pretrained:
        names = [n for n in timm_registry._model_has_pretrained
                 if timm_registry.split_model_name_tag(n)[0] in _archs and "." in n]
        # an arch whose only cfg is untagged
        names += [a for a in _archs if a in timm_registry._model_has_pretrained
                  and not any(t.startswith(a + ".") for t in timm_registry._model_has_pretrained)]
    else:
        names = list(_archs)
    names = [n for n in names if fnmatch.fnmatch(n, pattern)]
    return sorted(names, key=timm_registry._natural_key)


def list_entries(pattern: str = "*") -> List[str]:
    """Every registered `arch.tag`, with or without a weight source."""
    names = [t for arch in _archs for t in timm_registry._model_with_tags.get(arch, [])]
    return sorted((n for n in names if fnmatch.fnmatch(n, pattern)), key=timm_registry._natural_key)


def list_pretrained(pattern: str = "*") -> List[str]:
    """`arch.tag` names with weights (an official URL, a Hub id or a file)."""
    return list_models(pattern, pretrained=True)


def list_aliases() -> Dict[str, str]:
    return dict(_aliases)


def get_pretrained_cfg(name: str) -> PretrainedCfg:
    """timm PretrainedCfg of an entry (the default tag when none is given)."""
    full = _full_name(name)
    cfg = timm_registry.get_pretrained_cfg(full)
    if cfg is None:
        raise UnknownModelError(f"no pretrained cfg registered for {full!r}")
    return cfg


def get_weights_info(name: str) -> WeightsInfo:
    full = _full_name(name)
    if full not in _weights:
        raise UnknownModelError(f"no clzoo metadata for {full!r}")
    return _weights[full]


def weights_format_of(name: str) -> Optional[str]:
    """The official file format of a registered `arch.tag`, or None (not a clzoo entry, or untagged)."""
    info = _weights.get(name) or _weights.get(_aliases.get(name, ""))
    if info is None and "." not in name and name in _archs:
        info = _weights.get(_full_name(name))
    return info.weights_format if info else None


def get_method_info(method: str) -> MethodInfo:
    return _methods[method]


def list_methods() -> Dict[str, MethodInfo]:
    return dict(_methods)


def model_info(name: str) -> Dict[str, Any]:
    """Everything known about an entry: method, paper, architecture, licence, weights, metrics."""
    full = _full_name(name)
    arch, tag = timm_registry.split_model_name_tag(full)
    cfg = get_pretrained_cfg(full)
    info = get_weights_info(full)
    method = _methods[info.method]
    tags = [t.split(".", 1)[1] for t in timm_registry._model_with_tags.get(arch, []) if "." in t]
    return {
        "name": full,
        "architecture": arch,
        "tag": tag or None,
        "available_tags": tags,
        "aliases": sorted(a for a, t in _aliases.items() if t in (full, arch)),
        "method": info.method,
        "method_name": method.name,
        "paper": {"title": method.paper, "authors": method.authors, "venue": method.venue,
                  "arxiv": method.arxiv, "url": f"https://arxiv.org/abs/{method.arxiv}",
                  "code": method.code},
        "backbone": info.backbone,
        "license": cfg.license,
        "weights": {
            "url": cfg.url, "hf_hub_id": cfg.hf_hub_id, "format": info.weights_format,
            "has_weights": bool(cfg.has_weights), "sha256": info.sha256, "md5_prefix": info.md5_prefix,
            "hash": hash_check(full), "hash_published": bool(info.sha256 or info.md5_prefix),
            "folder_file": info.folder_file,
        },
        "training": {"dataset": info.dataset, "epochs": info.epochs, "batch_size": info.batch_size,
                     "recipe": info.recipe},
        "metrics": [dataclasses.asdict(m) for m in info.metrics],
        "preprocessing": {"input_size": cfg.input_size, "interpolation": cfg.interpolation,
                          "crop_pct": cfg.crop_pct, "mean": cfg.mean, "std": cfg.std},
        "notes": info.notes,
    }
