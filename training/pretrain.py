"""Self-supervised pre-training: `accelerate launch training/pretrain.py --method M --model ARCH ...`
(or plain `python training/pretrain.py ...` for one process; no arguments: the quick-start run).

The loop, once per optimizer step:
    views   = augment(images, dataset indices, epoch)          (seeded per sample: data/transforms.py)
    loss    = method(views, step) / grad_accum; backward        (per micro-batch; DDP syncs on the last)
    lr, wd  = schedules[step]; method.before_optimizer_step (frozen layers); clip; optimizer.step()
    method.after_optimizer_step(step)                           (EMA, queue, memory bank: once per step)
    metrics.jsonl / TensorBoard; checkpoint every `save_every`; kNN monitor at each epoch end.
At the end the backbone is exported (model.safetensors + timm config.json) with results.json.

Data order: epoch e visits a permutation drawn from (seed, e); optimizer step s of the epoch takes the
global batch perm[s*N:(s+1)*N], split into grad_accum micro-batches and, within each, into one
contiguous slice per process. Every random draw is a function of (seed, epoch or step, index or rank),
so a run is reproducible, resumes exactly, and sees the same views for any number of processes. With
`sync_bn` BatchNorm spans the global batch on any backend, otherwise each process's batch (`bn_splits`
simulates W processes in one), and drop path is drawn per sample: 1 process at 2B and 2 at B take the same
steps (tests/training/test_train_invariance.py).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time

if __package__ in (None, ""):  # run as a script: make the repo root importable (`training` is not installed)
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np
import torch
import yaml

from clzoo import UnsafeCheckpointError
from clzoo._io import atomic_write, write_json
from training.checkpoint import check_resumable, export_backbone, load_checkpoint, load_state, save_checkpoint
from training.config import ConfigError, load_config
from training.data import SkipUnreadable, build_dataset, collate
from training.data.background import with_partners
from training.data.rng import generator, hash64
from training.data.transforms import build_views
from training.methods import TrainInfo, build_method, method_class
from training.modules.dist import average_bn_statistics, convert_sync_batchnorm
from training.modules.heads import convert_split_bn
from training.modules.losses import fp32
from training.modules.multicrop import use_dino_pos_interpolation
from training.modules.optim import (build_optimizer, clip_gradients_per_param, cosine_schedule, scaled_lr,
                                    step_schedule)
from training.modules.stochastic_depth import convert_drop_path, sample_keys
from training.monitor import eval_data_config, eval_view, monitor_eval


class NonFiniteLoss(RuntimeError):
    pass


def epoch_batches(num_samples: int, global_batch: int, seed: int, epoch: int) -> torch.Tensor:
    """(steps_per_epoch, global_batch) dataset indices of every optimizer step of `epoch`."""
    perm = torch.randperm(num_samples, generator=generator(seed, 1000, epoch))
    steps = num_samples // global_batch
    return perm[:steps * global_batch].view(steps, global_batch)


def micro_batches(batch: torch.Tensor, grad_accum: int, world: int, rank: int) -> list[list[int]]:
    """This process's slices of one global batch: micro-batch a, process r gets chunk a * world + r."""
    chunks = batch.chunk(grad_accum * world)
    return [chunks[a * world + rank].tolist() for a in range(grad_accum)]


def encoder_spec(cfg: dict, name: str) -> tuple[str, dict]:
    """(architecture name, model_args) of the run's encoder: `name` and model_args, unless the method builds
    its own encoder from them (`encoder_spec` of the method class: CMC turns `resnet18` into the two-branch
    `cmc_resnet18`)."""
    adapt = getattr(method_class(cfg["method"]), "encoder_spec", None)
    args = dict(cfg["model_args"])
    return adapt(name, args, image_size=cfg["image_size"]) if adapt else (name, args)


def _backbone_spec(cfg: dict, name: str) -> tuple[str, dict]:
    """(architecture, kwargs) of the encoder: `encoder_spec`'s; for a ViT (a model with a `patch_embed`) the
    kwargs also get `image_size`, and `dynamic_img_size` when multi-crop adds local views of another size
    (its position embedding is then interpolated per crop size: by DINO's `interpolate_pos_encoding` with
    `vit_pos_interpolation: dino`, see build_backbone), unless model_args say otherwise. The architecture is
    probed on the meta device, so that pretrained weights are read once, by the final build."""
    import clzoo
    name, kwargs = encoder_spec(cfg, name)
    with torch.device("meta"):
        probe = clzoo.create_model(name, pretrained=False, **kwargs)
    patch_embed = getattr(probe, "patch_embed", None)
    if patch_embed is not None and getattr(patch_embed, "img_size", None) is not None:
        kwargs.setdefault("img_size", cfg["image_size"])
        if cfg["aug"].get("local_views"):
            kwargs.setdefault("dynamic_img_size", True)
    return name, kwargs


def _check_encoder(backbone: torch.nn.Module, cfg: dict) -> torch.nn.Module:
    if getattr(backbone, "num_classes", 0) != 0 or not hasattr(backbone, "num_features"):
        raise ConfigError(f"{cfg['model']}: expected a timm model with num_classes=0 and num_features")
    return backbone


def build_backbone(cfg: dict, weights: bool = True) -> torch.nn.Module:
    """The timm encoder, random or (`init_from`, unless not `weights`) with the entry's weights, built for
    `image_size`."""
    import clzoo
    name = cfg["init_from"] or cfg["model"]
    pretrained = bool(cfg["init_from"]) and weights
    file = {"pretrained_cfg_overlay": dict(file=cfg["init_from_file"])} if pretrained and cfg["init_from_file"] else {}
    name, kwargs = _backbone_spec(cfg, name)
    backbone = clzoo.create_model(name, pretrained=pretrained, **file, **kwargs)
    if kwargs.get("dynamic_img_size") and cfg["vit_pos_interpolation"] == "dino":
        use_dino_pos_interpolation(backbone)
    return _check_encoder(backbone, cfg)


def official_checkpoint(cfg: dict, log=print):
    """`init_from`'s official pretraining checkpoint with its heads, as `init_heads` asks (config.py), or
    None when only the backbone is initialised (logged with the reason; an error with `init_heads: yes`)."""
    import clzoo
    name, mode = cfg["init_from"], cfg["init_heads"]
    if not name or mode == "no":
        return None
    try:
        trained_with = clzoo.get_weights_info(name).method
    except clzoo.UnknownModelError:  # local-dir: / hf-hub: / a plain timm name
        trained_with = None
    if trained_with != cfg["method"]:
        reason = (f"{name} is not a clzoo entry with official weights" if trained_with is None else
                  f"it was trained with {trained_with}, not {cfg['method']}")
    elif not hasattr(method_class(cfg["method"]), "load_pretrained"):
        reason = f"the trainer's {cfg['method']} does not read official heads"
    else:
        try:
            return clzoo.load_pretraining_checkpoint(name, file=cfg["init_from_file"], **_backbone_spec(cfg, name)[1])
        except clzoo.NoHeadsError as e:
            reason = str(e)
    if mode == "yes":
        raise ConfigError(f"--init-heads yes: the heads of {name} cannot be loaded: {reason}")
    log(f"--init-from {name}: only the backbone is initialised ({reason})")
    return None


def initial_method(cfg: dict, info: TrainInfo, log=print, resuming: bool = False) -> torch.nn.Module:
    """The method of `cfg` before its first step: the backbone random or from `init_from`, and with
    `init_heads` the official heads, momentum network and state too. When `resuming`, only the
    architecture: the checkpoint replaces every weight, so init_from's file is neither read nor downloaded."""
    official = None if resuming else official_checkpoint(cfg, log)
    backbone = (_check_encoder(official.online.backbone, cfg) if official is not None
                else build_backbone(cfg, weights=not resuming))
    init_random = getattr(method_class(cfg["method"]), "init_random_backbone", None)
    if init_random is not None and official is None and not cfg["init_from"] and not resuming:
        init_random(backbone)  # the official code's own initialisation (MoCo v3's vits.py), before any copy
    if cfg["channels_last"]:
        backbone = backbone.to(memory_format=torch.channels_last)
    method = build_method(cfg["method"], backbone, info, **cfg["hparams"])
    # world-size invariance: BN in bn_splits groups per process, stochastic depth drawn per sample
    method = convert_drop_path(convert_split_bn(method, cfg["bn_splits"]))
    if official is not None:
        log(f"--init-from {official.name}: " + "; ".join(method.load_pretrained(official)))
    return method


def training_images(cfg: dict, data_args: dict, masks, train_set):
    """What the views are made from: the train set, or with `aug.background` the same images with their
    foreground masks (and a partner each for the random / swap modes). The kNN monitor keeps `train_set`."""
    mode = cfg["aug"].get("background")
    if mode is None:
        if masks is not None:
            raise ConfigError("data_args.masks is set but aug.background is not: the masks serve only the "
                              "background stage (--aug.background remove|random|swap)")
        return train_set
    if masks is None and cfg["data"] != "synthetic":
        raise ConfigError(f"--aug.background {mode} needs foreground masks: --data {cfg['data']!r} has none. "
                          f"Give an ImageFolder's mask folder with --data-args.masks DIR (DIR/CLASS/NAME.png per "
                          f"image, 255 = foreground); the synthetic data renders its own.")
    masked = build_dataset(cfg["data"], "train", cfg["image_size"], cfg["seed"], masks=masks or True, **data_args)
    return masked if mode == "remove" else with_partners(masked, cfg["seed"])


def schedules(cfg: dict, total_steps: int, steps_per_epoch: int) -> tuple[np.ndarray, np.ndarray]:
    lr = scaled_lr(cfg["lr"], cfg["batch_size"], cfg["lr_scaling"])
    warmup = int(round(cfg["warmup_epochs"] * steps_per_epoch))
    ramp = dict(start_warmup=cfg["warmup_start_lr"], warmup_endpoint=cfg["warmup_style"] == "linspace")
    if cfg["lr_schedule"] == "cosine":
        lrs = cosine_schedule(lr, cfg["min_lr"], total_steps, warmup, **ramp)
    else:
        lrs = step_schedule(lr, total_steps, cfg["lr_milestones"], cfg["lr_gamma"], warmup, **ramp)
    wd_end = cfg["weight_decay"] if cfg["weight_decay_end"] is None else cfg["weight_decay_end"]
    wds = cosine_schedule(cfg["weight_decay"], wd_end, total_steps)
    return lrs, wds


class Metrics:
    """metrics.jsonl (one object per optimizer step) + TensorBoard, main process only."""

    def __init__(self, run_dir: str, enabled: bool, resume_step: int | None):
        self.enabled = enabled
        if not enabled:
            return
        self.path = os.path.join(run_dir, "metrics.jsonl")
        kept = []
        if resume_step is not None and os.path.exists(self.path):  # drop steps after the checkpoint
            with open(self.path) as f:
                kept = [line for line in f if line.endswith("\n") and json.loads(line).get("step", 0) <= resume_step]
        atomic_write(self.path, lambda f: f.write("".join(kept).encode()))
        from torch.utils.tensorboard import SummaryWriter
        tb_dir = os.path.join(run_dir, "tensorboard")
        if resume_step is not None and os.path.isdir(tb_dir):
            # TensorBoard reads event files in name order, and a name starts with its creation second: the
            # resumed run's file (with the purge) must sort after the killed run's, also within one second
            stamps = [int(n.split(".")[3]) for n in os.listdir(tb_dir)
                      if n.startswith("events.out.tfevents.") and n.split(".")[3].isdigit()]
            while stamps and int(time.time()) <= max(stamps):
                time.sleep(0.05)
        # purge_step: TensorBoard drops the events a killed run wrote after its checkpoint, so a resumed
        # run's curves have no duplicate steps.
        self.tb = SummaryWriter(tb_dir,
                                purge_step=None if resume_step is None else resume_step + 1)

    def log(self, record: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        for k, v in record.items():
            if k not in ("step", "epoch") and isinstance(v, (int, float)):
                self.tb.add_scalar(f"train/{k}", v, record["step"])

    def close(self):
        if self.enabled:
            self.tb.close()


def _float(v) -> float:
    return float(v.detach().float().mean()) if torch.is_tensor(v) else float(v)


def make_optimizer(cfg: dict, method: torch.nn.Module) -> torch.optim.Optimizer:
    """The recipe's optimizer over the method's parameter groups (weight-decay / LARS exclusions, fixed-lr
    predictor); lr and weight decay are set per step by `optimizer_step`."""
    return build_optimizer(method.param_groups(), cfg["optimizer"], cfg["weight_decay"], cfg["momentum"],
                           cfg["betas"], cfg["lars_eta"], cfg["lars_lr_in_momentum"])


class Schedule:
    """Per-step learning rate and weight decay of a run, and the fixed peak lr (SimSiam's predictor)."""

    def __init__(self, cfg: dict, total_steps: int, steps_per_epoch: int):
        self.lr, self.wd = schedules(cfg, total_steps, steps_per_epoch)
        self.peak_lr = scaled_lr(cfg["lr"], cfg["batch_size"], cfg["lr_scaling"])


def optimizer_step(accelerator, method, optimizer, micro_batches, step: int, cfg: dict,
                   schedule: Schedule) -> tuple[torch.Tensor, dict]:
    """One optimizer step of the trainer, as every method takes it: forward + backward of each micro-batch
    of views (gradients averaged; DDP syncs on the last), the mean loss over processes (NonFiniteLoss before
    anything is applied), this step's lr / weight decay per group, the method's before-step hook (frozen
    layers, DINO's last layer), gradient clipping, the update, and the method's after-step hook (EMA, queue,
    bank, center). `micro_batches`: an iterable of the `views(...)` batches, of length cfg["grad_accum"].
    The step-parity tests call this with the official trainers' views."""
    raw = accelerator.unwrap_model(method)
    A = cfg["grad_accum"]
    logs_acc: dict = {}
    loss_sum = torch.zeros((), device=accelerator.device)
    for a, batch in enumerate(micro_batches):
        sync = accelerator.no_sync(method) if a < A - 1 else contextlib.nullcontext()
        with sync:
            keys = (sample_keys(batch["index"], step, cfg["seed"]) if "index" in batch
                    else contextlib.nullcontext())
            with accelerator.autocast(), keys:
                loss, logs = method(batch, step)
            accelerator.backward(loss / A)
        loss_sum = loss_sum + fp32(loss.detach()) / A  # float64 in a float64 (step-parity) run
        for k, v in logs.items():
            logs_acc[k] = logs_acc.get(k, 0.0) + _float(v) / A
    loss_mean = accelerator.reduce(loss_sum, "mean")
    if not torch.isfinite(loss_mean):
        raise NonFiniteLoss(f"loss is {loss_mean.item()}")
    for g in optimizer.param_groups:
        # plain floats: a checkpoint holds no numpy objects (weights_only loading)
        g["lr"] = float((schedule.peak_lr if g["fixed_lr"] else schedule.lr[step]) * g["lr_scale"])
        g["weight_decay"] = float(schedule.wd[step] * g["wd_scale"])
    if hasattr(raw, "before_optimizer_step"):
        raw.before_optimizer_step(step)
    if cfg["clip_grad"] and cfg["clip_grad_mode"] == "per_param":  # DINO's clip_gradients
        accelerator.unscale_gradients()
        clip_gradients_per_param(method.parameters(), cfg["clip_grad"])
    elif cfg["clip_grad"]:
        accelerator.clip_grad_norm_(method.parameters(), cfg["clip_grad"])
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    raw.after_optimizer_step(step)
    if not cfg["sync_bn"]:
        average_bn_statistics(raw)  # BN per process: keep the statistics one process with bn_splits keeps
    return loss_mean, logs_acc


def train(cfg: dict) -> dict:
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, set_seed

    t_start = time.time()
    if cfg["mixed_precision"] == "fp16" and not torch.cuda.is_available():
        raise ConfigError("mixed_precision fp16 needs a GPU; use bf16 on CPU")
    accelerator = Accelerator(mixed_precision=cfg["mixed_precision"],
                              kwargs_handlers=[DistributedDataParallelKwargs(broadcast_buffers=False)])
    world, rank, device = accelerator.num_processes, accelerator.process_index, accelerator.device
    if cfg["threads"]:
        torch.set_num_threads(cfg["threads"])
    elif device.type == "cpu" and world > 1 and "OMP_NUM_THREADS" not in os.environ:
        # share the cores between the processes of this machine
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", world))))
    log = accelerator.print
    N, A = cfg["batch_size"], cfg["grad_accum"]
    if N % (A * world):
        raise ConfigError(f"batch_size {N} must be divisible by grad_accum x processes = {A * world}")

    run_dir = cfg["output"]
    resume = load_checkpoint(cfg["resume"], log) if cfg["resume"] else None
    if resume is not None:
        check_resumable(resume["config"], cfg)
    if accelerator.is_main_process:
        os.makedirs(run_dir, exist_ok=True)
        atomic_write(os.path.join(run_dir, "run_config.yaml"),
                     lambda f: f.write(yaml.safe_dump(cfg, sort_keys=False).encode()))

    # Data, model, method, optimizer.
    data_args = dict(cfg["data_args"])
    if cfg["data"] != "synthetic" and not cfg["data"].startswith("hf:"):  # an ImageFolder
        data_args["decode"] = cfg["data_decode"]
    masks = data_args.pop("masks", None)
    train_set = build_dataset(cfg["data"], "train", cfg["image_size"], cfg["seed"], **data_args)
    train_source = training_images(cfg, data_args, masks, train_set)
    try:
        test_set = build_dataset(cfg["data"], "test", cfg["image_size"], cfg["seed"],
                                 **{k: v for k, v in data_args.items() if k != "num_samples"})
    except FileNotFoundError as e:
        test_set = None
        log(f"kNN monitor off: {e}")
    steps_per_epoch = len(train_set) // N
    if steps_per_epoch == 0:
        raise ConfigError(f"the dataset has {len(train_set)} images, fewer than one batch of {N}")
    total_steps = cfg["epochs"] * steps_per_epoch
    if cfg["max_steps"]:
        total_steps = min(total_steps, cfg["max_steps"])
    info = TrainInfo(len(train_set), total_steps, steps_per_epoch, N, cfg["seed"])

    set_seed(cfg["seed"])  # identical initialisation on every process
    method = initial_method(cfg, info, log, resuming=resume is not None)
    if cfg["sync_bn"] and world > 1:
        method = convert_sync_batchnorm(method, device)
    optimizer = make_optimizer(cfg, method)
    schedule = Schedule(cfg, total_steps, steps_per_epoch)
    lrs, wds = schedule.lr, schedule.wd
    start_step = 0
    if resume is not None:
        load_state(method, resume["method"], "method", cfg["resume"])
        load_state(optimizer, resume["optimizer"], "optimizer", cfg["resume"])
        start_step = resume["step"]
    # The whole method goes to DDP (as MoCo's official code does): frozen EMA copies have no gradient, so
    # DDP neither syncs nor complains; buffers (queues, banks) stay per process and are kept identical by
    # gathered updates, so they are not broadcast.
    method, optimizer = accelerator.prepare(method, optimizer)
    raw = accelerator.unwrap_model(method)
    if resume is not None and resume.get("scaler") and accelerator.scaler is not None:
        accelerator.scaler.load_state_dict(resume["scaler"])

    aug = dict(cfg["aug"])
    views = build_views(aug.pop("preset"), cfg["image_size"], seed=cfg["seed"], **aug)
    train_items = SkipUnreadable(train_source)
    metrics = Metrics(run_dir, accelerator.is_main_process, start_step if resume is not None else None)
    knn_cfg = dict(cfg["knn"])
    knn_every = knn_cfg.pop("every")

    knn_seconds = [0.0]
    # The monitor sees the pixels eval_knn.py / clzoo.features see for the exported model (one transform).
    bank_view = eval_view(train_set, cfg["image_size"], cfg["data"])
    test_view = eval_view(test_set, cfg["image_size"], cfg["data"]) if test_set is not None else None

    def knn_monitor() -> dict:
        """{"knn_top1": ...} (+ "linear_top1" with --knn.linear true) on the main process; {} without a
        held-out split or with --knn.every 0."""
        if test_set is None or not knn_every:
            return {}
        t0, accs = time.time(), {}
        if accelerator.is_main_process:
            accs = monitor_eval(raw.backbone, bank_view, test_view, autocast=accelerator.autocast,
                                channels_last=cfg["channels_last"], **knn_cfg)
        accelerator.wait_for_everyone()
        knn_seconds[0] += time.time() - t0
        return accs

    def describe(accs: dict) -> str:
        return f"kNN top-1 {accs['knn_top1']:.4f}" + (f", linear probe {accs['linear_top1']:.4f}" if "linear_top1" in accs else "")

    results = dict(resume["results"]) if resume is not None else {}
    monitored_step = None  # the step of the last monitor run: the results must describe the final encoder
    if resume is None:
        accs = knn_monitor()
        results.update({f"{name}_init": acc for name, acc in accs.items()})
        if accs.get("knn_top1") is not None:
            log(f"initial (random-init) encoder: {describe(accs)}")

    log(f"{cfg['method']} on {cfg['model']} | {world} process(es) on {device} | global batch {N} "
        f"({A} micro-batch(es)) | {len(train_set)} images, {steps_per_epoch} steps/epoch, {total_steps} steps "
        f"| run dir {run_dir}")

    def checkpoint(step: int) -> None:
        if accelerator.is_main_process:
            save_checkpoint(run_dir, {
                "step": step, "method": raw.state_dict(), "optimizer": optimizer.state_dict(),
                "scaler": accelerator.scaler.state_dict() if accelerator.scaler is not None else None,
                "config": cfg, "results": results})
        accelerator.wait_for_everyone()

    from tqdm.auto import tqdm
    bar = tqdm(total=total_steps, initial=start_step, disable=not accelerator.is_main_process,
               dynamic_ncols=True, desc=cfg["method"], mininterval=0.5 if sys.stderr.isatty() else 30)
    step, skipped, t_train, images_seen = start_step, 0, time.time(), 0
    knn_seconds[0] = 0.0
    method.train()
    try:
        while step < total_steps:
            epoch, first = divmod(step, steps_per_epoch)
            batches = epoch_batches(len(train_set), N, cfg["seed"], epoch)
            if hasattr(train_source, "epoch"):  # background partners are drawn per epoch
                train_source.epoch = epoch
            last = min(steps_per_epoch, first + total_steps - step)
            plan = [idx for s in range(first, last) for idx in micro_batches(batches[s], A, world, rank)]
            loader = torch.utils.data.DataLoader(train_items, batch_sampler=plan, collate_fn=collate,
                                                 num_workers=cfg["num_workers"])
            it = iter(loader)
            def step_batches(epoch=epoch):
                nonlocal skipped
                for _ in range(A):
                    data = next(it)
                    skipped += data["skipped"]
                    images = data["images"]  # uint8; augmented where the model runs
                    images = ([im.to(device) for im in images] if isinstance(images, list)
                              else images.to(device, non_blocking=True))
                    yield views(images, data["index"].to(device), epoch)

            for _ in range(first, last):
                torch.manual_seed(int(hash64(cfg["seed"], 2000, step, rank)) & ((1 << 63) - 1))
                try:
                    loss_mean, logs_acc = optimizer_step(accelerator, method, optimizer, step_batches(), step, cfg,
                                                         schedule)
                except NonFiniteLoss as e:
                    raise NonFiniteLoss(
                        f"{e} at step {step} (epoch {epoch}); stopping without applying this update. The last good "
                        f"checkpoints are kept in {run_dir}/checkpoint.pt and checkpoint.prev.pt (saved every "
                        f"{cfg['save_every']} steps): resume with --resume {run_dir} and a lower lr or clip_grad.") from None
                step += 1
                images_seen += N
                bar.update(1)
                record = {"step": step, "epoch": epoch, "loss": loss_mean.item(), "lr": float(lrs[step - 1]),
                          "weight_decay": float(wds[step - 1]), **logs_acc}
                if skipped:
                    record["skipped_images"] = skipped
                if step % steps_per_epoch == 0 and step // steps_per_epoch % max(knn_every, 1) == 0:
                    accs, monitored_step = knn_monitor(), step
                    record.update(accs)
                    results.update(accs)
                    if accs.get("knn_top1") is not None:
                        log(f"epoch {epoch}: {describe(accs)}")
                if step % cfg["log_every"] == 0 or "knn_top1" in record:
                    metrics.log(record)
                    bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.3g}")
                if step % cfg["save_every"] == 0 and step < total_steps:
                    checkpoint(step)
            if skipped:
                log(f"epoch {epoch}: skipped {skipped} unreadable image(s) so far (substituted by the next readable)")
    finally:
        bar.close()
        metrics.close()

    train_seconds = time.time() - t_train - knn_seconds[0]
    if monitored_step != step:  # the last epoch was not monitored (the same test on every process)
        results.update(knn_monitor())
    results.update(steps=step, epochs=round(step / steps_per_epoch, 3), processes=world, skipped_images=skipped,
                   wall_time_s=round(time.time() - t_start, 1), knn_monitor_s=round(knn_seconds[0], 1),
                   train_images_per_s=round(images_seen / max(train_seconds, 1e-9), 1))
    checkpoint(step)
    if accelerator.is_main_process:
        export_backbone(raw.backbone, run_dir, eval_data_config(cfg["image_size"], cfg["data"]), tag=f"{cfg['method']}_{cfg['data']}"
                        if cfg["data"] == "synthetic" else cfg["method"])
        results.update(knn={"k": cfg["knn"]["k"], "temperature": cfg["knn"]["temperature"]},
                       method=cfg["method"], model=cfg["model"], image_size=cfg["image_size"], data=cfg["data"])
        write_json(os.path.join(run_dir, "results.json"), results)
        if results.get("knn_top1") is not None:
            init = results.get("knn_top1_init")
            log(f"kNN top-1 (k={cfg['knn']['k']}, T={cfg['knn']['temperature']}): trained {results['knn_top1']:.4f}"
                + (f" vs random-init {init:.4f}" if init is not None else ""))
            if results.get("linear_top1") is not None:
                init = results.get("linear_top1_init")
                log(f"linear probe top-1: trained {results['linear_top1']:.4f}"
                    + (f" vs random-init {init:.4f}" if init is not None else ""))
        log(f"done in {results['wall_time_s']:.0f} s; exported {run_dir}/model.safetensors + config.json "
            f"(load with clzoo.create_model('local-dir:{run_dir}', pretrained=True))")
    accelerator.wait_for_everyone()  # (no end_training: it would tear down the process group of a caller)
    return results


def main(argv: list[str] | None = None) -> int:
    try:
        cfg = load_config(argv)
        train(cfg)
    except (ConfigError, UnsafeCheckpointError, NonFiniteLoss) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1 if isinstance(e, NonFiniteLoss) else 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
