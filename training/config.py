"""Run configuration: defaults < the method's paper recipe (configs/<method>.yaml) < `--config FILE` <
command-line flags. Any key can be set from the command line, nested ones with dots:

    python training/pretrain.py --method simclr --lr 0.5 --hparams.tau 0.2 --aug.scale [0.2,1.0]

Values are parsed as YAML (`0.2`, `true`, `null`, `[0.2, 1.0]`). Unknown keys are errors that list the
closest valid names. The effective configuration is written to the run directory (run_config.yaml).
"""

from __future__ import annotations

import argparse
import copy
import difflib
import inspect
import os
import re

import yaml

from .methods import METHODS

CONFIG_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs")
QUICKSTART = os.path.join(CONFIG_DIR, "quickstart.yaml")

DEFAULTS: dict = {
    "method": None,
    "model": "resnet50",
    "model_args": {},           # extra kwargs for clzoo.create_model (e.g. drop_path_rate)
    "init_from": None,          # a clzoo entry (or local-dir: / hf-hub:) to start from
    "init_from_file": None,     # init_from's official file on disk (default: downloaded, or $CLZOO_MIRROR)
    "init_heads": "auto",       # official SSL heads, momentum network and state of init_from too: auto (when
                                # its release has them and --method is its method) | yes (or fail) | no
    "data": "synthetic",        # synthetic | PATH (ImageFolder) | hf:NAME
    "data_args": {},            # e.g. {num_samples: 5000} for synthetic
    "data_decode": "pil",       # ImageFolder decoding: pil | torchvision (torchvision.io, no PIL image)
    "image_size": 224,
    "epochs": 200,
    "max_steps": 0,             # > 0: stop after this many optimizer steps (schedules span the capped run)
    "batch_size": 256,          # global batch per optimizer step, over processes and accumulation
    "grad_accum": 1,            # micro-batches per optimizer step
    "seed": 0,
    "output": None,             # default runs/<method>_<model>
    "resume": None,             # a run directory or checkpoint file
    "mixed_precision": "no",    # no | bf16 | fp16 (GPU only)
    "channels_last": True,
    "vit_pos_interpolation": "dino",  # multi-crop ViTs, crops of another size: dino (main_dino.py's bicubic
                                # by scale factor) | timm (resample_abs_pos_embed, antialiased)
    "sync_bn": False,           # BatchNorm over the global batch: SyncBatchNorm on CUDA, GlobalBatchNorm on
                                # gloo / CPU; false: BN per process (statistics averaged at each step)
    "bn_splits": 1,             # BN per process in this many contiguous groups (SplitBatchNorm): one process
                                # with bn_splits W normalises as W processes do (MoCo's simulated shuffle-BN)
    "num_workers": 0,
    "threads": 0,               # torch CPU threads per process; 0: the cores / processes (OMP_NUM_THREADS wins)
    "optimizer": "sgd",         # sgd | lars | larc (apex LARC: SwAV, DeepCluster-v2) | adamw
    "lr": 0.03,                 # base lr, scaled by lr_scaling with the global batch
    "lr_scaling": "linear",     # linear (x N/256) | sqrt (x sqrt(N)) | none
    "lr_schedule": "cosine",    # cosine | step
    "lr_milestones": [0.6, 0.8],  # step schedule: fractions of training
    "lr_gamma": [0.1, 0.01],    # step schedule: multipliers from each milestone on
    "min_lr": 0.0,
    "warmup_epochs": 0.0,
    "warmup_start_lr": 0.0,     # the lr of the first warmup step (absolute, like min_lr; SwAV: 0.3)
    "warmup_style": "fraction",  # fraction: start + (peak - start) x step / warmup (MoCo v3, BYOL, Barlow
                                # Twins) | linspace: np.linspace(start, peak, warmup), at the peak on the last
                                # warmup step (DINO, SwAV, DeepCluster-v2)
    "weight_decay": 1.0e-4,
    "weight_decay_end": None,   # cosine weight-decay schedule to this value (DINO); null: constant
    "momentum": 0.9,
    "betas": [0.9, 0.999],
    "lars_eta": 0.001,          # the trust coefficient of lars and larc
    "lars_lr_in_momentum": False,  # lars: true is SimCLR's TF LARSOptimizer (v <- m v + lr g, w <- w - v);
                                # false: v <- m v + g, w <- w - lr v (MoCo v3, Barlow Twins, BYOL, DINO)
    "clip_grad": 0.0,           # > 0: clip the gradient norm
    "clip_grad_mode": "global",  # global (one norm over all parameters) | per_param (DINO: each on its own)
    "aug": {"preset": "simclr"},  # keyword arguments of data.transforms.build_views
    "hparams": {},              # keyword arguments of the method (methods/<method>.py)
    "knn": {"every": 1, "k": 20, "temperature": 0.07, "train_samples": 0, "test_samples": 0, "batch_size": 512,
            "linear": False},  # linear: also a linear probe on the same features (monitor.linear_probe)
    "save_every": 500,          # optimizer steps between checkpoints (and one at the end)
    "log_every": 1,
}

CLI_FLAGS = ("method", "model", "data", "epochs", "max_steps", "batch_size", "image_size", "seed", "output",
             "resume", "init_from", "init_from_file", "init_heads", "config", "mixed_precision")


class ConfigError(ValueError):
    pass


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads `1e-4` as a string; accept the usual float spellings."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                  |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                  |\.[0-9_]+(?:[eE][-+][0-9]+)?
                  |[-+]?\.(?:inf|Inf|INF)
                  |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."))


def parse_value(raw: str):
    return yaml.load(raw, Loader=_Loader)


def _close(key, names):
    close = difflib.get_close_matches(key, list(names), n=3, cutoff=0.5)
    return f" Did you mean {', '.join(close)}?" if close else ""


def _aug_keys() -> list[str]:
    from .data.transforms import build_views
    return [p for p in inspect.signature(build_views).parameters if p not in ("image_size", "seed")]


def _merge(base: dict, override: dict, where: str) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if key == "hparams":  # validated against the method's signature once the method is known
            out["hparams"] = {**out.get("hparams", {}), **(value or {})}
        elif key == "aug":
            allowed = _aug_keys()
            for k in value or {}:
                if k not in allowed:
                    raise ConfigError(f"unknown key aug.{k} in {where}.{_close(k, allowed)} aug takes: {', '.join(allowed)}")
            out["aug"] = {**out.get("aug", {}), **(value or {})}
        elif key == "knn":
            for k in value or {}:
                if k not in DEFAULTS["knn"]:
                    raise ConfigError(f"unknown key knn.{k} in {where}.{_close(k, DEFAULTS['knn'])}")
            out["knn"] = {**out.get("knn", {}), **(value or {})}
        elif key in DEFAULTS:
            out[key] = value
        else:
            raise ConfigError(f"unknown config key {key!r} in {where}.{_close(key, DEFAULTS)}")
    return out


def _read_yaml(path: str) -> dict:
    if not os.path.isfile(path):
        raise ConfigError(f"config file not found: {path}")
    with open(path) as f:
        data = yaml.load(f, Loader=_Loader) or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys")
    return data


def method_recipe(method: str) -> dict:
    from .methods import method_class
    try:
        method_class(method)
    except ValueError as e:  # unknown method: the message lists the methods
        raise ConfigError(str(e)) from None
    return _read_yaml(os.path.join(CONFIG_DIR, f"{method}.yaml"))


def _parse_overrides(rest: list[str]) -> dict:
    """`--a.b VALUE` / `--a.b=VALUE` pairs into a nested dict (values parsed as YAML)."""
    out: dict = {}
    i = 0
    while i < len(rest):
        arg = rest[i]
        if not arg.startswith("--"):
            raise ConfigError(f"unexpected argument {arg!r} (overrides are --key value)")
        if "=" in arg:
            key, raw = arg[2:].split("=", 1)
            i += 1
        else:
            if i + 1 >= len(rest):
                raise ConfigError(f"{arg} needs a value")
            key, raw = arg[2:], rest[i + 1]
            i += 2
        key = key.replace("-", "_") if "." not in key else key.split(".")[0].replace("-", "_") + "." + key.split(".", 1)[1]
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = parse_value(raw)
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pretrain.py", description="Self-supervised pre-training (clzoo trainer). With no arguments: "
        "the quick-start run (configs/quickstart.yaml). Any config key can also be set as --key value "
        "or --section.key value.")
    p.add_argument("--method", help=", ".join(METHODS))
    p.add_argument("--model", help="any timm backbone name or clzoo entry")
    p.add_argument("--data", help="synthetic | PATH (ImageFolder) | hf:NAME")
    p.add_argument("--data-decode", choices=["pil", "torchvision"],
                   help="ImageFolder JPEG/PNG decoding (torchvision: torchvision.io, faster)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--max-steps", type=int)
    p.add_argument("--batch-size", type=int, help="global batch, split over processes")
    p.add_argument("--image-size", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--output", help="run directory")
    p.add_argument("--resume", help="run directory or checkpoint to continue")
    p.add_argument("--init-from", help="clzoo entry to initialise the backbone from (and, where its official "
                   "release has them, the method's heads, momentum network and state: see --init-heads)")
    p.add_argument("--init-from-file", help="the --init-from entry's official file, already downloaded")
    p.add_argument("--init-heads", choices=["auto", "yes", "no"],
                   help="load --init-from's official SSL heads too: auto (default: when the release has heads "
                   "and --method is the one it was trained with; else only the backbone, logged), yes (or "
                   "fail), no (backbone only)")
    p.add_argument("--config", help="YAML file of config keys, applied over the method's recipe")
    p.add_argument("--mixed-precision", choices=["no", "bf16", "fp16"])
    return p


def load_config(argv: list[str] | None = None) -> dict:
    args, rest = build_parser().parse_known_args(argv)
    cli = {k: v for k, v in vars(args).items() if v is not None and k != "config"}
    cli = _merge({}, {**_parse_overrides(rest), **cli}, "the command line") if cli or rest else {}
    config_path = args.config or (None if cli.get("method") else QUICKSTART)
    file_cfg = _read_yaml(config_path) if config_path else {}
    method = cli.get("method") or file_cfg.get("method")
    if not method:
        raise ConfigError(f"no method: pass --method (one of {', '.join(METHODS)}) or a --config with a "
                          "`method:` key")
    recipe = method_recipe(method)
    model = cli.get("model") or file_cfg.get("model")
    if model and model != recipe.get("model"):
        # the recipe's model_args (DINO's drop_path_rate, MoCo v3's 12 heads) belong to the recipe's model
        recipe = {k: v for k, v in recipe.items() if k != "model_args"}
    cfg = _merge(DEFAULTS, recipe, f"configs/{method}.yaml")
    cfg = _merge(cfg, file_cfg, config_path or "")
    cfg = _merge(cfg, cli, "the command line")
    cfg["method"] = method
    if cfg["output"] is None:
        cfg["output"] = os.path.join("runs", f"{method}_{cfg['model']}".replace("/", "_").replace(":", "_"))
    validate(cfg)
    return cfg


def validate(cfg: dict) -> None:
    from .methods import hparam_names
    allowed = hparam_names(cfg["method"])
    for k in cfg["hparams"]:
        if k == "bn_splits":
            raise ConfigError("hparams.bn_splits is now a trainer setting for every method: use --bn-splits "
                              f"{cfg['hparams'][k]} (bn_splits: in a config)")
        if k not in allowed:
            raise ConfigError(f"unknown hyper-parameter hparams.{k} for {cfg['method']}.{_close(k, allowed)} "
                              f"{cfg['method']} takes: {', '.join(allowed)}")
    for key in ("batch_size", "image_size", "grad_accum", "bn_splits"):
        if not isinstance(cfg[key], int) or cfg[key] < 1:
            raise ConfigError(f"{key} must be a positive integer, got {cfg[key]!r}")
    if cfg["batch_size"] % cfg["grad_accum"]:
        raise ConfigError(f"batch_size {cfg['batch_size']} is not divisible by grad_accum {cfg['grad_accum']}")
    if cfg["sync_bn"] and cfg["bn_splits"] > 1:
        raise ConfigError(f"sync_bn normalises over the global batch; bn_splits {cfg['bn_splits']} asks for BN in "
                          "groups: set one of them")
    if isinstance(cfg["init_heads"], bool):  # YAML reads an unquoted yes / no as a boolean
        cfg["init_heads"] = "yes" if cfg["init_heads"] else "no"
    choices = {"optimizer": ("sgd", "lars", "larc", "adamw"), "warmup_style": ("fraction", "linspace"),
               "vit_pos_interpolation": ("dino", "timm"),
               "lr_scaling": ("linear", "sqrt", "none"),
               "lr_schedule": ("cosine", "step"), "mixed_precision": ("no", "bf16", "fp16"),
               "clip_grad_mode": ("global", "per_param"), "init_heads": ("auto", "yes", "no")}
    for key, options in choices.items():
        if cfg[key] not in options:
            raise ConfigError(f"{key} must be one of {', '.join(options)}, got {cfg[key]!r}")
    if cfg["init_from_file"] and not cfg["init_from"]:
        raise ConfigError("init_from_file needs init_from: the clzoo entry the file is the official release of")
