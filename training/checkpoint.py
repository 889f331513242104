"""Training checkpoints that run no code when read, survive a kill at any instant, and say what is wrong.

* `save_checkpoint(run_dir, state)`: the new checkpoint is written to `checkpoint.pt.tmp` and fsynced;
  only then does the previous `checkpoint.pt` become `checkpoint.prev.pt` and the new file take its name
  (two `os.replace`s, each atomic). A run killed at any instant leaves at least one complete checkpoint.
* `load_checkpoint(path)`: `torch.load(weights_only=True)` with no extra classes allowed: a checkpoint
  is tensors, containers and plain values, with the config as YAML text and the results as JSON text.
  A pickle that would build anything else is refused with `clzoo.UnsafeCheckpointError`; an empty,
  truncated or foreign file raises `CheckpointError` naming the file, the problem and what to do. Given
  a run directory, it falls back to `checkpoint.prev.pt` when `checkpoint.pt` is missing or unreadable.
* `export_backbone(backbone, run_dir, data_config, ...)`: `model.safetensors` + timm `config.json`
  (timm's `save_for_hf`), so `clzoo.create_model("local-dir:RUN_DIR", pretrained=True)` rebuilds it.
"""

from __future__ import annotations

import copy
import json
import os
import pickle
import shutil

import torch
import yaml

from clzoo import UnsafeCheckpointError
from clzoo._io import fsync_dir

from .config import ConfigError

FORMAT = "clzoo-training-checkpoint/1"
CHECKPOINT, PREVIOUS = "checkpoint.pt", "checkpoint.prev.pt"
# Config keys that fix what a checkpoint's state means: a resumed run must agree on all of them.
MUST_MATCH = ("method", "model", "model_args", "hparams", "batch_size", "seed", "image_size", "data",
              "data_args", "grad_accum", "optimizer", "aug")


class CheckpointError(ConfigError):
    """A checkpoint that cannot be resumed from: missing, empty, truncated, foreign or of another run."""


def save_checkpoint(run_dir: str, state: dict) -> str:
    """Write `state` (with `config` / `results` dicts) as run_dir/checkpoint.pt, keeping the previous one
    as checkpoint.prev.pt until the new one is complete on disk."""
    state = dict(state, format=FORMAT, config=yaml.safe_dump(state["config"], sort_keys=False),
                 results=json.dumps(state.get("results") or {}))
    path, prev = os.path.join(run_dir, CHECKPOINT), os.path.join(run_dir, PREVIOUS)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    if os.path.exists(path):
        os.replace(path, prev)  # from here until the next line only checkpoint.prev.pt exists
    os.replace(tmp, path)
    fsync_dir(run_dir)
    return path


def _read(path: str) -> dict:
    """One checkpoint file, or CheckpointError / UnsafeCheckpointError with a one-line reason."""
    what_to_do = ("delete it and resume from the run directory (checkpoint.prev.pt is used when "
                  "checkpoint.pt is unreadable), or start a new run without --resume")
    if os.path.getsize(path) == 0:
        raise CheckpointError(f"--resume: {path} is empty (0 bytes); {what_to_do}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        detail = next((ln.strip() for ln in str(e).splitlines() if "GLOBAL" in ln or "global" in ln),
                      str(e).strip().splitlines()[0] if str(e).strip() else repr(e))
        raise UnsafeCheckpointError(
            f"--resume: refused to load {path}: its pickle would build objects a clzoo checkpoint never "
            f"holds ({detail}); loading it could run code. Do not resume from files you did not write; "
            f"start a new run, or --init-from an exported model.safetensors instead") from None
    except Exception as e:  # a damaged file fails anywhere in torch's readers (zip, legacy, unpickler)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"--resume: {path} is not a readable torch checkpoint, probably truncated "
                              f"({first}); {what_to_do}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        keys = ", ".join(map(str, list(state)[:6])) if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(
            f"--resume: {path} is not a clzoo training checkpoint (format {FORMAT!r}; it holds {keys}). "
            f"--resume takes a run directory written by training/pretrain.py; to start from other weights "
            f"use --init-from NAME (a clzoo entry, local-dir:PATH or hf-hub:ID) with --init-from-file FILE")
    state["config"] = yaml.safe_load(state["config"])
    state["results"] = json.loads(state["results"])
    return state


def load_checkpoint(path: str, log=print) -> dict:
    """The checkpoint at `path` (a file, or a run directory: checkpoint.pt, else checkpoint.prev.pt)."""
    if not os.path.isdir(path):
        if not os.path.isfile(path):
            raise CheckpointError(f"--resume: no checkpoint at {path} (give the run directory of a "
                                  f"training/pretrain.py run, or its {CHECKPOINT})")
        return _read(path)
    candidates = [p for p in (os.path.join(path, CHECKPOINT), os.path.join(path, PREVIOUS)) if os.path.isfile(p)]
    if not candidates:
        raise CheckpointError(f"--resume: {path} has neither {CHECKPOINT} nor {PREVIOUS}: not a run directory "
                              f"with a checkpoint (one is written every save_every steps)")
    for i, candidate in enumerate(candidates):
        try:
            state = _read(candidate)
        except CheckpointError as e:
            if i == len(candidates) - 1:
                raise
            log(f"{e}\n--resume: using {candidates[i + 1]} instead")
            continue
        return state


def check_resumable(saved: dict, cfg: dict) -> None:
    """CheckpointError naming every config key that differs from the checkpoint's in a way that changes
    what its state means (the schedule's length and the output directory may differ)."""
    diff = [f"{k} is {cfg.get(k)!r} but the checkpoint has {saved.get(k)!r}" for k in MUST_MATCH
            if k in saved and saved.get(k) != cfg.get(k)]
    if diff:
        raise CheckpointError("--resume: the checkpoint was written by another configuration: " + "; ".join(diff)
                              + ". Resume with the checkpoint's run_config.yaml (--config), or start a new run")


def load_state(module_or_optimizer, state: dict, what: str, path: str) -> None:
    """load_state_dict, with a one-line CheckpointError listing what did not fit."""
    try:
        result = module_or_optimizer.load_state_dict(state)
    except (RuntimeError, ValueError, KeyError) as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        raise CheckpointError(f"--resume: the {what} state in {path} does not fit this run's {what}: "
                              + " ".join(lines[:4]) + (" ..." if len(lines) > 4 else "")) from None
    return result


def export_backbone(backbone: torch.nn.Module, run_dir: str, data_config: dict, tag: str | None = None) -> str:
    """Write model.safetensors + config.json to run_dir (staged in a temp folder, fsynced, then moved)."""
    from timm.models import save_for_hf
    from .modules.heads import SplitBatchNorm

    model = copy.deepcopy(backbone).cpu().to(memory_format=torch.contiguous_format)
    for name, mod in list(model.named_modules()):  # SplitBatchNorm is a training-time BatchNorm2d
        if isinstance(mod, SplitBatchNorm):
            mod.__class__ = mod.bn_class
    for p in model.parameters():
        p.data = p.data.contiguous()
    for b in model.buffers():
        b.data = b.data.contiguous()
    model.pretrained_cfg = dict(model.pretrained_cfg)
    if tag:
        model.pretrained_cfg["tag"] = tag
    stage = os.path.join(run_dir, ".export")
    shutil.rmtree(stage, ignore_errors=True)
    save_for_hf(model, stage, safe_serialization=True, data_config=dict(data_config))
    umask = os.umask(0)
    os.umask(umask)
    for name in ("model.safetensors", "config.json"):
        with open(os.path.join(stage, name), "rb") as f:
            os.fsync(f.fileno())
        os.chmod(os.path.join(stage, name), 0o666 & ~umask)  # safetensors creates 0600: shared run dirs read it
        os.replace(os.path.join(stage, name), os.path.join(run_dir, name))
    fsync_dir(run_dir)
    shutil.rmtree(stage, ignore_errors=True)
    return run_dir
