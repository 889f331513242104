"""Where pretrained weights come from, and how they reach disk intact.

Order of sources for `pretrained=True` (`resolve_weights`):
  1. an explicit local file (`pretrained_cfg_overlay=dict(file=...)`), converted if foreign;
  2. the entry's Hugging Face Hub id (already in timm layout), through huggingface_hub's cache;
  3. the entry's official URL (or the same path under `CLZOO_MIRROR`), downloaded into
     `CLZOO_HOME/downloads/` and converted once into `CLZOO_HOME/converted/*.safetensors`.
`hf-hub:` and `local-dir:` model names are timm's own sources and are left to timm.

Every file clzoo writes goes through `clzoo._io.atomic_write` (temp file, fsync, rename), with a JSON
sidecar recording its size, sha256 and md5; a cached file whose size or hash no longer matches is
treated as absent and fetched (or converted) again. torch.hub's downloader is not used because it
accepts a connection that closes early as a complete file.

Where the authors publish a hash of a file (MoCo's README prints an md5 prefix per checkpoint), the
registry records it (`WeightsInfo.md5_prefix` / `.sha256`, a full digest or a prefix as in torch.hub's
`name-<sha256 prefix>.ext` convention) and every download is checked against it before it enters the
cache. Other files can only be checked against what was recorded on their first download.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Union
from urllib.parse import urlsplit

import torch
from filelock import FileLock
from safetensors.torch import save_file
from timm.models._pretrained import PretrainedCfg

from ._io import atomic_write
from .convert import ConversionError, get_format, load_and_convert

__all__ = ["get_cache_dir", "mirror_url", "download", "download_official", "official_file_url", "resolve_weights",
           "convert_file", "DownloadError", "HashMismatchError", "sha256_file"]

_logger = logging.getLogger(__name__)
_CHUNK = 1 << 20


class DownloadError(RuntimeError):
    pass


class HashMismatchError(DownloadError):
    """A downloaded file whose hash differs from the one its authors published (it is not kept)."""


def get_cache_dir(cache_dir: Optional[Union[str, Path]] = None) -> Path:
    """`cache_dir`, else $CLZOO_HOME, else $XDG_CACHE_HOME/clzoo (~/.cache/clzoo)."""
    if cache_dir is None:
        cache_dir = os.environ.get("CLZOO_HOME") or Path(
            os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "clzoo"
    path = Path(cache_dir).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def mirror_url(url: str) -> str:
    """The URL to fetch: `url`, or the same path under $CLZOO_MIRROR (air-gapped clusters)."""
    mirror = os.environ.get("CLZOO_MIRROR")
    if not mirror:
        return url
    parts = urlsplit(url)
    out = mirror.rstrip("/") + "/" + parts.path.lstrip("/")
    return out + (f"?{parts.query}" if parts.query else "")


def _hash_file(path: Union[str, Path], md5: bool = True) -> Dict[str, str]:
    """sha256 (and md5, which some releases publish instead) in one read."""
    hashes = {"sha256": hashlib.sha256()}
    if md5:
        hashes["md5"] = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            for h in hashes.values():
                h.update(chunk)
    return {k: h.hexdigest() for k, h in hashes.items()}


def sha256_file(path: Union[str, Path]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _published(sha256: Optional[str] = None, md5_prefix: Optional[str] = None) -> Dict[str, str]:
    """{'sha256'|'md5': published hex digest or prefix}, lower case."""
    return {k: v.lower() for k, v in (("sha256", sha256), ("md5", md5_prefix)) if v}


def _published_spec(published: Mapping[str, str]) -> Optional[str]:
    """'md5:b251726a': what a conversion records it was checked against (None: nothing published)."""
    return ",".join(f"{k}:{v}" for k, v in sorted(published.items())) or None


def _hash_mismatch(digests: Mapping[str, str], published: Mapping[str, str]) -> Optional[tuple]:
    """(algorithm, expected, actual) of the first published hash `digests` do not start with, else None."""
    for algo, expected in published.items():
        if not digests[algo].startswith(expected):
            return algo, expected, digests[algo]
    return None


def _meta_path(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def _write_json_atomic(path: Path, data: Dict[str, Any]) -> None:
    atomic_write(path, lambda f: f.write(json.dumps(data, indent=1, sort_keys=True).encode()))


def _read_meta(path: Path) -> Optional[Dict[str, Any]]:
    try:
        return json.loads(_meta_path(path).read_text())
    except (OSError, ValueError):
        return None


def _verified(path: Path, published: Optional[Mapping[str, str]] = None, **expect: Any) -> bool:
    """The cached file exists, matches its recorded size and sha256 (and the `published` hashes), and its
    metadata matches `expect`."""
    meta = _read_meta(path)
    if meta is None or not path.is_file():
        return False
    if any(meta.get(k) != v for k, v in expect.items()):
        return False
    if path.stat().st_size != meta.get("size"):
        _logger.warning("%s has %d bytes, %s were recorded: fetching it again",
                        path, path.stat().st_size, meta.get("size"))
        return False
    digests = _hash_file(path, md5="md5" in (published or {}))
    if digests["sha256"] != meta.get("sha256"):
        _logger.warning("%s does not match its recorded sha256: fetching it again", path)
        return False
    bad = _hash_mismatch(digests, published or {})
    if bad is not None:
        _logger.warning("%s has %s %s, but %s... is published: fetching it again", path, bad[0], bad[2], bad[1])
        return False
    return True


def _fetch(url: str, dest: Path, progress: bool, published: Optional[Mapping[str, str]] = None,
           official: Optional[str] = None) -> Dict[str, str]:
    """Stream `url` into `dest` atomically; returns its sha256 and md5. Fails on a short or empty body, and
    on a hash that differs from a `published` one (the file never reaches `dest`)."""
    from tqdm.auto import tqdm

    req = urllib.request.Request(url, headers={"User-Agent": "clzoo"})
    try:
        response = urllib.request.urlopen(req, timeout=60)
    except (urllib.error.URLError, OSError) as e:
        raise DownloadError(f"could not download {url}: {e}") from None
    expected = response.headers.get("Content-Length")
    expected = int(expected) if expected is not None else None
    sha, md5, size = hashlib.sha256(), hashlib.md5(usedforsecurity=False), 0
    with atomic_write(dest, suffix=".part") as tmp, open(tmp, "wb") as f, response, tqdm(
            total=expected, unit="B", unit_scale=True, unit_divisor=1024, desc=dest.name,
            disable=not progress) as bar:
        while True:
            try:
                chunk = response.read(_CHUNK)
            except Exception as e:  # http.client.IncompleteRead and socket errors
                raise DownloadError(f"download of {url} broke off after {size} bytes: {e}") from None
            if not chunk:
                break
            f.write(chunk)
            sha.update(chunk)
            md5.update(chunk)
            size += len(chunk)
            bar.update(len(chunk))
        if expected is not None and size != expected:
            raise DownloadError(f"download of {url} is truncated: got {size} of {expected} bytes")
        if size == 0:
            raise DownloadError(f"download of {url} is empty")
        digests = {"sha256": sha.hexdigest(), "md5": md5.hexdigest()}
        bad = _hash_mismatch(digests, published or {})
        if bad is not None:
            algo, want, got = bad
            where = url if official in (None, url) else f"{url} (for {official})"
            kind = f"{algo} prefix" if len(want) < len(got) else algo
            raise HashMismatchError(
                f"{where} has {algo} {got}, but its authors publish {kind} {want}: the download is corrupt or "
                f"the server (check $CLZOO_MIRROR) serves another file; it was not kept. Download it again, fix "
                f"the mirror, or pass a copy you trust: pretrained_cfg_overlay=dict(file=PATH)")
    return digests


def download(url: str, cache_dir: Optional[Union[str, Path]] = None, progress: bool = True,
             sha256: Optional[str] = None, retries: int = 2, md5_prefix: Optional[str] = None) -> Path:
    """The official file at `url` in the local cache, downloaded (and verified) if needed.

    The cache path mirrors the official URL (`downloads/<host>/<path>`), so a mirror and the
    official server fill the same entry. `sha256` (a full digest or a prefix) and `md5_prefix` are the
    hashes the authors publish, if any: a download that differs raises HashMismatchError and is not kept.
    """
    parts = urlsplit(url)
    dest = get_cache_dir(cache_dir) / "downloads" / parts.netloc / parts.path.lstrip("/")
    dest.parent.mkdir(parents=True, exist_ok=True)
    published = _published(sha256, md5_prefix)
    with FileLock(str(dest) + ".lock"):
        if _verified(dest, published, url=url):
            return dest
        source = mirror_url(url)
        last_error: Optional[Exception] = None
        for attempt in range(retries + 1):
            try:
                digests = _fetch(source, dest, progress, published, official=url)
            except HashMismatchError:
                # a cached copy that failed the check above must not stay either
                for stale in (dest, _meta_path(dest)):
                    stale.unlink(missing_ok=True)
                raise
            except DownloadError as e:
                last_error = e
                _logger.warning("%s (attempt %d of %d)", e, attempt + 1, retries + 1)
                continue
            _write_json_atomic(_meta_path(dest), dict(url=url, source=source, size=dest.stat().st_size,
                                                      published_hash=_published_spec(published), **digests))
            return dest
        raise DownloadError(f"{last_error}. Check the network, or set CLZOO_MIRROR to a mirror that serves "
                            f"{parts.path}, or pass the file: pretrained_cfg_overlay=dict(file=PATH)")


def official_file_url(name: str, url: str) -> str:
    """The URL of `name`'s official file: `url`, or the file inside the shared folder `url` names.

    A folder link (Dropbox `/sh/...`) serves a web page, not the file, so such an entry can only be
    fetched from a mirror (`$CLZOO_MIRROR/<folder path>/<file>`); otherwise the error says which file to
    download by hand and how to pass it.
    """
    from ._registry import ManualDownloadError, _weights

    info = _weights.get(name)
    if info is None or not info.folder_file:
        return url
    parts = urlsplit(url)
    file_url = f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}/{info.folder_file}"
    if os.environ.get("CLZOO_MIRROR"):
        return file_url
    raise ManualDownloadError(
        f"{name}: the official file {info.folder_file} is shared only inside the folder {url} (no per-file "
        f"link is published, so clzoo cannot download it). Download {info.folder_file} from that folder and "
        f"pass it: clzoo.create_model({name!r}, pretrained=True, pretrained_cfg_overlay=dict(file="
        f"'path/to/{info.folder_file}')), or `clzoo convert {name} --input {info.folder_file} --output "
        f"model.safetensors`; or set CLZOO_MIRROR to a mirror that serves {urlsplit(file_url).path}.")


def download_official(url: str, fmt, cache_dir=None, progress: bool = True, sha256: Optional[str] = None,
                      md5_prefix: Optional[str] = None) -> Path:
    """The official file at `url` (and the files released beside it, e.g. a TF data shard) in the cache,
    checked against the hashes its authors publish (`sha256`, `md5_prefix`), if any."""
    raw = download(url, cache_dir=cache_dir, progress=progress, sha256=sha256, md5_prefix=md5_prefix)
    for companion in fmt.companion_urls(url) if fmt.companion_urls else ():
        download(companion, cache_dir=cache_dir, progress=progress)
    return raw


def _save_converted(state_dict: Dict[str, torch.Tensor], out: Path, **meta: Any) -> Path:
    tensors = {k: v.detach().contiguous() for k, v in state_dict.items()}
    with atomic_write(out) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt", "converted_by": "clzoo",
                                               "source_format": str(meta.get("format"))})
    _write_json_atomic(_meta_path(out), dict(meta, size=out.stat().st_size, sha256=sha256_file(out)))
    return out


def convert_file(source: Union[str, Path], fmt: str, out: Union[str, Path]) -> Path:
    """Convert an official checkpoint file to a timm-layout safetensors file (what `clzoo convert` does)."""
    source, out = Path(source), Path(out)
    fmt_obj = get_format(fmt)
    return _save_converted(load_and_convert(source, fmt_obj), out, format=fmt, format_version=fmt_obj.version,
                           source=str(source))


def _local_file_key(path: Path) -> str:
    st = path.stat()
    return hashlib.sha256(f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode()).hexdigest()[:16]


def _is_timm_safetensors(path: Path) -> bool:
    return path.suffix == ".safetensors"


def _entries_in_layout(name: str, layout: str) -> List[str]:
    """Entries released in format `layout`: of `name`'s architecture, else of the same backbone (the name
    after the method: `barlowtwins_resnet50` -> `dino_resnet50`), else all of them."""
    from ._registry import _weights

    arch = name.split(".")[0]
    entries = sorted(n for n, i in _weights.items() if "." in n and i.weights_format == layout)
    for same in (lambda a: a == arch, lambda a: a.split("_", 1)[-1] == arch.split("_", 1)[-1]):
        close = [n for n in entries if same(n.split(".")[0])]
        if close:
            return close
    return entries


def _load_and_convert_entry(raw: Path, fmt_obj, name: Optional[str]) -> Dict[str, torch.Tensor]:
    """`load_and_convert` for the file of entry `name`: a full training checkpoint is read through its
    backbone only if `name`'s own release has that layout (DINO's full file for a DINO entry, not for a
    Barlow Twins one); a file of another known layout is refused naming the entry that reads it."""
    from ._registry import _weights

    if name is None:
        return load_and_convert(raw, fmt_obj)
    arch = name.split(".")[0]
    own = {i.weights_format for n, i in _weights.items() if n.split(".")[0] == arch}
    try:
        return load_and_convert(raw, fmt_obj, full_layouts=[f for f in fmt_obj.full_layouts if f in own])
    except ConversionError as e:
        entries = _entries_in_layout(name, e.layout) if e.layout else []
        if not entries:
            raise
        raise ConversionError(f"{raw.name}: {e.what}: use {' or '.join(f'`{n}`' for n in entries[:3])}",
                              layout=e.layout, what=e.what) from None


def _convert_cached(raw: Path, fmt: str, out: Path, entry: Optional[str] = None, **identity: Any) -> Path:
    fmt_obj = get_format(fmt)
    with FileLock(str(out) + ".lock"):
        if _verified(out, format=fmt, format_version=fmt_obj.version, **identity):
            return out
        _logger.info("converting %s (%s format) to %s", raw, fmt, out)
        return _save_converted(_load_and_convert_entry(raw, fmt_obj, entry), out, format=fmt,
                               format_version=fmt_obj.version, **identity)


def resolve_weights(cfg: PretrainedCfg, weights_format: Optional[str], name: str,
                    cache_dir: Optional[Union[str, Path]] = None, progress: bool = True) -> PretrainedCfg:
    """`cfg` with `file` pointing at a timm-layout weight file for `name`, fetched/converted as needed."""
    from ._registry import NoPretrainedWeightsError

    if cfg.source in ("hf-hub", "local-dir") or cfg.state_dict is not None:
        return cfg  # timm's own sources
    fmt = weights_format or "state_dict"
    cache = get_cache_dir(cache_dir)

    if cfg.file:
        path = Path(cfg.file).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"pretrained file for {name} not found: {path}")
        if _is_timm_safetensors(path):
            return cfg
        out = cache / "converted" / "local" / f"{name}-{_local_file_key(path)}.safetensors"
        return dataclasses.replace(cfg, file=str(_convert_cached(path, fmt, out, entry=name,
                                                                        source=str(path.resolve()))))

    if cfg.hf_hub_id:
        try:
            from huggingface_hub import hf_hub_download
            repo, _, revision = cfg.hf_hub_id.partition("@")
            path = hf_hub_download(repo, cfg.hf_hub_filename or "model.safetensors",
                                   revision=revision or None)
            return dataclasses.replace(cfg, file=path)
        except Exception as e:  # offline, missing repo, no network: fall back to the official URL
            if not cfg.url:
                raise
            _logger.warning("Hugging Face Hub %s unavailable (%s); using the official URL", cfg.hf_hub_id,
                            type(e).__name__)

    if cfg.url:
        url = official_file_url(name, cfg.url[0] if isinstance(cfg.url, (tuple, list)) else cfg.url)
        from ._registry import _weights
        info = _weights.get(name)
        sha256, md5_prefix = (info.sha256, info.md5_prefix) if info is not None else (None, None)
        # a conversion is reused only if it was made from a download checked against today's published hash
        identity = dict(source=url, published_hash=_published_spec(_published(sha256, md5_prefix)))
        out = cache / "converted" / f"{name}.safetensors"
        fmt_obj = get_format(fmt)
        with FileLock(str(out) + ".lock"):
            if _verified(out, format=fmt, format_version=fmt_obj.version, **identity):
                return dataclasses.replace(cfg, file=str(out))
        raw = download_official(url, fmt_obj, cache_dir=cache, progress=progress, sha256=sha256,
                                md5_prefix=md5_prefix)
        return dataclasses.replace(cfg, file=str(_convert_cached(raw, fmt, out, entry=name, **identity)))

    raise NoPretrainedWeightsError(
        f"{name} has no pretrained weights registered (no official release is known for it). Use "
        f"pretrained=False for a random init, or pass a checkpoint: clzoo.create_model({name.split('.')[0]!r}, "
        "pretrained=True, pretrained_cfg_overlay=dict(file='path/to/checkpoint.pth')).")
