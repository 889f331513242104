"""Pushing encoders to the Hugging Face Hub as timm repos (`clzoo.push_to_hub`, `clzoo push`).

A pushed repo is what `timm.create_model("hf-hub:ORG/NAME", pretrained=True)` loads (ecosystem.md §2):
`config.json` (`architecture`, `model_args`, `pretrained_cfg`, plus clzoo's metadata under `"clzoo"`),
`model.safetensors` (never pickle weights; timm's own `push_to_hf_hub` also writes `pytorch_model.bin` by
default) and a `README.md` model card (`clzoo.cards`). A training run also uploads its configuration file
and `results.json`. Re-pushing replaces the weights and config, deletes pickle files an earlier upload left
(`pytorch_model.bin`, ...) and keeps the repo's README (which may have been edited on the Hub) unless
`overwrite_card=True`.

clzoo architectures load from the Hub once `clzoo` is imported (it registers them in timm).
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, Optional, Union

import torch.nn as nn

from ._io import atomic_write

__all__ = ["push_to_hub", "save_for_hub", "HubError"]

_WEIGHTS = "model.safetensors"
_PICKLE_FILES = ["*.bin", "*.pt", "*.pth", "*.pth.tar", "*.ckpt", "*.pkl"]  # never uploaded; deleted from the repo


class HubError(RuntimeError):
    """A push that cannot happen (no token, refused token, offline); the message says what to do."""


def _write_config(path: Path, config: Dict[str, Any], clzoo_meta: Dict[str, Any], license: Optional[str]) -> None:
    from . import __version__
    config = dict(config, clzoo=dict(clzoo_meta, version=__version__))
    # the licence of these weights, not the one timm's default cfg of the architecture names
    pretrained_cfg = {k: v for k, v in config["pretrained_cfg"].items() if k != "license"}
    config["pretrained_cfg"] = dict(pretrained_cfg, license=license) if license else pretrained_cfg
    _write_text(path, json.dumps(config, indent=2) + "\n")


def _write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def _copy(src: Path, dst: Path) -> None:
    with atomic_write(dst) as tmp:
        shutil.copyfile(src, tmp)


def _save_model(model: nn.Module, folder: Path) -> Dict[str, Any]:
    """timm's layout with safetensors only; returns the config.json written."""
    from timm.models import save_for_hf
    if not isinstance(getattr(model, "pretrained_cfg", None), dict):
        raise TypeError(f"{type(model).__name__} is not a timm model (no pretrained_cfg); create it with "
                        "clzoo.create_model or timm.create_model")
    # timm writes in place: stage its files in the folder, then move each one in durably
    stage = Path(tempfile.mkdtemp(dir=folder, prefix=".save_for_hf."))
    try:
        save_for_hf(model, stage, safe_serialization=True)
        for src in sorted(stage.iterdir()):
            with atomic_write(folder / src.name) as tmp:
                os.replace(src, tmp)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return json.loads((folder / "config.json").read_text())


def _save_run_dir(run_dir: Path, folder: Path, repo_id: Optional[str], license: Optional[str]) -> None:
    import timm
    from .cards import read_run_dir, render_run_card
    from ._registry import get_pretrained_cfg

    run = read_run_dir(run_dir)
    if not (run_dir / _WEIGHTS).is_file():
        found = sorted(p.name for p in run_dir.iterdir() if any(fnmatch.fnmatch(p.name, pat) for pat in _PICKLE_FILES))
        raise FileNotFoundError(
            f"{run_dir} has no {_WEIGHTS}" + (f" (found {', '.join(found)})" if found else "") + ": clzoo pushes "
            "safetensors weights only, never pickle files. Export with timm.models.save_for_hf(model, DIR, "
            "safe_serialization=True), as training/ does.")
    arch = run.config["architecture"]
    if not timm.is_model(arch):
        raise ValueError(f"{run_dir}: architecture {arch!r} is not registered in timm; import the package that "
                         "defines it first")
    # the folder must load as it will from the Hub: a broken export fails here, not for the users of the repo
    timm.create_model(f"local-dir:{run_dir}", pretrained=True)
    _copy(run_dir / _WEIGHTS, folder / _WEIGHTS)
    for name in (run.training_config_file, "results.json" if run.results else None):
        if name:
            _copy(run_dir / name, folder / name)
    if license is None and run.initialised_from:
        license = get_pretrained_cfg(run.initialised_from).license
    meta = {"source": "training run", "method": run.method, "training_config": run.training_config,
            "results": run.results}
    _write_config(folder / "config.json", run.config, meta, license)
    _write_text(folder / "README.md", render_run_card(run, repo_id, license))


def save_for_hub(source: Union[str, Path, nn.Module], folder: Union[str, Path], repo_id: Optional[str] = None,
                 license: Optional[str] = None, file: Optional[str] = None) -> Path:
    """Write the files of a Hub repo for `source` into `folder` (what `push_to_hub` uploads).

    `source`: a training run directory (`model.safetensors` + timm `config.json`, as `training/` exports it), a
    clzoo entry name (its official weights, downloaded and converted, or converted from `file`), or a timm model.
    `license` sets the licence of a run or model (default: a run's `init_from` entry's, else none is claimed);
    an entry keeps its authors' licence.
    """
    from .cards import read_run_dir, render_card, render_run_card
    from ._factory import create_model
    from ._registry import _full_name, model_info

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if isinstance(source, nn.Module):
        config = _save_model(source, folder)
        _write_config(folder / "config.json", config, {"source": "model"}, license)
        _write_text(folder / "README.md", render_run_card(read_run_dir(folder), repo_id, license))
        return folder
    source = str(source)
    if source.startswith("local-dir:") or Path(source).is_dir():
        _save_run_dir(Path(source.removeprefix("local-dir:")), folder, repo_id, license)
        return folder
    if "/" in source or os.sep in source:
        raise FileNotFoundError(f"no run directory {source}")
    name = _full_name(source)  # an unknown name raises UnknownModelError with the closest names
    info = model_info(name)
    if license and license != info["license"]:
        raise ValueError(f"{name} carries its authors' licence ({info['license']}); it cannot be pushed as {license}")
    overlay = dict(file=str(file)) if file else None
    model = create_model(name, pretrained=True, pretrained_cfg_overlay=overlay)
    config = _save_model(model, folder)
    _write_config(folder / "config.json", config, {"source": "entry", "entry": info}, info["license"])
    _write_text(folder / "README.md", render_card(name, repo_id))
    return folder


def push_to_hub(model_or_run_dir: Union[str, Path, nn.Module], repo_id: str, private: bool = False,
                token: Optional[str] = None, endpoint: Optional[str] = None, commit_message: Optional[str] = None,
                overwrite_card: bool = False, license: Optional[str] = None, file: Optional[str] = None):
    """Push a clzoo entry, a training run directory or a timm model to the Hub as a timm repo.

    Args:
        model_or_run_dir: a clzoo name with weights (e.g. "mocov2_resnet50.800ep", pushed with its model card),
            a run directory exported by `training/` (its config and results go into the card), or a timm model.
        repo_id: "ORG/NAME" (a user or organisation). Created if missing (`private` applies then).
        token: a write token; default: $HF_TOKEN or the one `hf auth login` stored.
        endpoint: the Hub's URL; default: huggingface_hub's ($HF_ENDPOINT or https://huggingface.co).
        overwrite_card: replace an existing README.md; by default a re-push keeps it (it may have been edited).
        license: the licence of a run or model (default: that of the entry a run started from, else none: the
            card says so); an entry keeps its authors' licence.
        file: for an entry, the official file to convert instead of downloading it.
    Returns huggingface_hub's CommitInfo (`.commit_url`, `.oid`).
    """
    from huggingface_hub import HfApi, get_token, is_offline_mode
    from huggingface_hub.errors import HfHubHTTPError

    from . import __version__

    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise ValueError(f"repo_id must be 'ORG/NAME' (a user or organisation, then the repo name), got {repo_id!r}")
    token = token or get_token()
    if not token:
        raise HubError("Pushing to the Hugging Face Hub needs a token with write access, and none was found: pass "
                       "token=... (clzoo push --token), set HF_TOKEN, or run `hf auth login`.")
    if is_offline_mode():
        raise HubError("HF_HUB_OFFLINE is set, so huggingface_hub makes no request; pushing needs the Hub: "
                       "unset HF_HUB_OFFLINE.")
    api = HfApi(endpoint=endpoint, token=token, library_name="clzoo", library_version=__version__)
    is_model = isinstance(model_or_run_dir, nn.Module)
    what = type(model_or_run_dir).__name__ if is_model else Path(str(model_or_run_dir)).name
    with tempfile.TemporaryDirectory(prefix="clzoo-push-") as tmp:
        folder = save_for_hub(model_or_run_dir, tmp, repo_id, license=license, file=file)
        try:
            api.create_repo(repo_id, private=private, exist_ok=True)
            if not overwrite_card and api.file_exists(repo_id, "README.md"):
                (folder / "README.md").unlink()  # keep the card on the Hub
            return api.upload_folder(repo_id=repo_id, folder_path=folder, delete_patterns=_PICKLE_FILES,
                                     commit_message=commit_message or f"Push {what} with clzoo {__version__}")
        except HfHubHTTPError as e:
            status = e.response.status_code if e.response is not None else None
            if status in (401, 403):
                raise HubError(f"The Hub at {api.endpoint} refused the token (HTTP {status}) for {repo_id}: it needs "
                               f"write access to {repo_id.split('/')[0]!r}; create a write token at "
                               f"{api.endpoint}/settings/tokens.") from e
            raise
