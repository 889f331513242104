"""Writes dino.safetensors + dino.json: 3 optimizer steps of the official DINO trainer (facebookresearch/dino
main_dino.py: its own `train_one_epoch` (lr / wd schedules per iteration, teacher on the 2 global crops,
`DINOLoss` with the teacher-temperature schedule and the center, `utils.clip_gradients`,
`utils.cancel_gradients_last_layer`, the teacher EMA), `utils.MultiCropWrapper`, `vision_transformer.
VisionTransformer` / `DINOHead`, `utils.get_params_groups`, `utils.cosine_scheduler`), in the format of
tests/training/step_parity.py.

    git --git-dir=MIRROR show COMMIT:main_dino.py > /tmp/dino_src/main_dino.py   (and utils.py,
    vision_transformer.py: `git archive` stops at a missing image blob of this snapshot)
    python tests/data/step_parity/gen_dino.py /tmp/dino_src COMMIT [float32|float64] [OUT_DIR]

The official modules are imported from that folder (argv[1]); nothing of them lives in this repository. Run in
the project venv, on CPU, in one gloo process (DINOLoss all-reduces the center; the student is in
DistributedDataParallel, as train_dino wraps it; a ViT has no BatchNorm, so the teacher is not).

train_dino builds the networks, optimizer and schedules before calling train_one_epoch; that set-up is done
here with the official classes and functions, in its order:
- student and teacher: `vits.VisionTransformer(img_size=[32], patch_size=8, embed_dim=64, depth=2,
  num_heads=4, mlp_ratio=4, qkv_bias=True, norm_layer=LayerNorm(eps=1e-6))` (vit_tiny's class at a small
  size; img_size 32 so that the trained grid is the global crops' 4 x 4, as timm's img_size), drop path 0 for
  the student (stochastic depth draws random masks that no second implementation can replay);
  `DINOHead(64, 128, hidden_dim=32, bottleneck_dim=16)` in `utils.MultiCropWrapper`; the teacher loads the
  student's state.
- AdamW over `utils.get_params_groups(student)`; lr, wd and momentum arrays from `utils.cosine_scheduler`
  with train_dino's arguments.
- `DINOLoss(out_dim, 2 + local crops, warmup_teacher_temp, teacher_temp, warmup_teacher_temp_epochs, epochs)`.
Then train_one_epoch(epoch 0) over 2 batches and train_one_epoch(epoch 1) over the first of its 2 batches: 3
steps that cover the 2-epoch warmup (np.linspace from 0: lr 0, b/3, 2b/3), the teacher temperature's epoch
schedule (0.04, then 0.07), the last layer frozen in epoch 0 and trained in epoch 1, and per-parameter
gradient clipping at 0.3 (every parameter's gradient norm is above it in step 1). Crops: 2 x 32 px + 2 x 16 px
(the local crops get the official interpolated position embedding), batch 8.

float32 (the default): the official float32 and float64 runs of this script differ by 1e-6 (losses) and
1.3e-6 (the student's qkv biases), within the 1e-5 tolerance.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from functools import partial

import torch
import torch.nn as nn
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
VIT = dict(patch_size=8, embed_dim=64, depth=2, num_heads=4, mlp_ratio=4)
BATCH, SIZES, NMB_CROPS, ITERS, EPOCHS = 8, (32, 16), (2, 2), 2, 4
STEPS = 3  # epoch 0's 2 iterations, then the first of epoch 1
OUT_DIM, HIDDEN, BOTTLENECK = 128, 32, 16
LR, MIN_LR, WARMUP_EPOCHS, WD, WD_END, CLIP = 5e-4 * 32, 1e-6, 2, 0.04, 0.4, 0.3
M_TEACHER, WARMUP_TT, TT, WARMUP_TT_EPOCHS, FREEZE_LAST = 0.996, 0.04, 0.07, 2, 1
SEED, PORT = 0, 29531


def clzoo_argv() -> list:
    return ["--method", "dino", "--model", "vit_small_patch16_224",
            "--model-args", json.dumps({**VIT, "drop_path_rate": 0.0}), "--image-size", str(SIZES[0]),
            "--batch-size", str(BATCH), "--epochs", str(EPOCHS), "--seed", str(SEED), "--lr", repr(LR),
            "--min-lr", repr(MIN_LR), "--warmup-epochs", str(WARMUP_EPOCHS), "--weight-decay", repr(WD),
            "--weight-decay-end", repr(WD_END), "--clip-grad", repr(CLIP), "--mixed-precision", "no",
            "--channels-last", "false", "--aug.local_views", str(NMB_CROPS[1]), "--aug.local_size", str(SIZES[1]),
            "--hparams.out_dim", str(OUT_DIM), "--hparams.hidden_dim", str(HIDDEN),
            "--hparams.bottleneck_dim", str(BOTTLENECK), "--hparams.momentum_teacher", repr(M_TEACHER),
            "--hparams.warmup_teacher_temp", repr(WARMUP_TT), "--hparams.teacher_temp", repr(TT),
            "--hparams.warmup_teacher_temp_epochs", str(WARMUP_TT_EPOCHS),
            "--hparams.freeze_last_layer", str(FREEZE_LAST)]


def clzoo_state(student, teacher, center) -> dict:
    """MultiCropWrapper's names -> clzoo DINO's (training/methods/dino.py): student.backbone ->
    student_backbone, student.head -> student_head, teacher.backbone -> backbone (DINO releases the teacher),
    teacher.head -> teacher_head; DINOLoss.center -> center."""
    out = {}
    for prefix, net in (("student", student), ("teacher", teacher)):
        for k, v in net.state_dict().items():
            part, rest = k.split(".", 1)
            name = {("student", "backbone"): "student_backbone", ("student", "head"): "student_head",
                    ("teacher", "backbone"): "backbone", ("teacher", "head"): "teacher_head"}[(prefix, part)]
            out[f"{name}.{rest}"] = v
    out["center"] = center
    return {k: v.detach().clone().contiguous() for k, v in out.items()}


class EpochLoader:
    """An epoch of `length` iterations (train_one_epoch's len(data_loader) sets the global iteration) that
    yields only `batches`: the fixture stops after its third step, in epoch 1."""

    def __init__(self, batches, length: int):
        self.batches, self.length = batches, length

    def __len__(self):
        return self.length

    def __iter__(self):
        return iter(self.batches)


def main():
    src, commit = os.path.abspath(sys.argv[1]), sys.argv[2]
    dtype_name = sys.argv[3] if len(sys.argv) > 3 else "float32"
    out_dir = sys.argv[4] if len(sys.argv) > 4 else HERE
    dtype = getattr(torch, dtype_name)
    sys.path.insert(0, src)
    import main_dino
    import utils
    import vision_transformer as vits

    torch.hub.list = lambda *a, **k: []  # get_args_parser lists XCiT's hub models for --arch (no network)
    torch.Tensor.cuda = lambda self, *a, **k: self  # train_one_epoch: images / modules .cuda()
    nn.Module.cuda = lambda self, *a, **k: self
    torch.cuda.synchronize = lambda *a, **k: None  # after each step, for its timing log
    utils.MetricLogger.synchronize_between_processes = lambda self: None  # CUDA tensors; logging only
    losses, lrs, wds = [], [], []
    update = utils.MetricLogger.update

    def recording_update(self, **kwargs):  # train_one_epoch's metric_logger.update(loss=loss.item()), ...
        for key, out in (("loss", losses), ("lr", lrs), ("wd", wds)):
            if key in kwargs:
                out.append(kwargs[key])
        update(self, **kwargs)

    utils.MetricLogger.update = recording_update

    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{PORT}", rank=0, world_size=1)
    args = argparse.ArgumentParser("DINO", parents=[main_dino.get_args_parser()]).parse_args([
        "--arch", "vit_tiny", "--patch_size", str(VIT["patch_size"]), "--out_dim", str(OUT_DIM),
        "--norm_last_layer", "true", "--momentum_teacher", str(M_TEACHER), "--use_bn_in_head", "false",
        "--warmup_teacher_temp", str(WARMUP_TT), "--teacher_temp", str(TT),
        "--warmup_teacher_temp_epochs", str(WARMUP_TT_EPOCHS), "--use_fp16", "false", "--weight_decay", str(WD),
        "--weight_decay_end", str(WD_END), "--clip_grad", str(CLIP), "--batch_size_per_gpu", str(BATCH),
        "--epochs", str(EPOCHS), "--freeze_last_layer", str(FREEZE_LAST), "--lr", str(LR),
        "--warmup_epochs", str(WARMUP_EPOCHS), "--min_lr", str(MIN_LR), "--optimizer", "adamw",
        "--drop_path_rate", "0", "--local_crops_number", str(NMB_CROPS[1]), "--seed", str(SEED)])
    utils.fix_random_seeds(args.seed)

    vit = partial(vits.VisionTransformer, img_size=[SIZES[0]], qkv_bias=True, norm_layer=partial(nn.LayerNorm, eps=1e-6),
                  **VIT)
    student, teacher = vit(drop_path_rate=args.drop_path_rate), vit()
    head = partial(vits.DINOHead, hidden_dim=HIDDEN, bottleneck_dim=BOTTLENECK)
    student = utils.MultiCropWrapper(student, head(VIT["embed_dim"], args.out_dim, use_bn=args.use_bn_in_head,
                                                   norm_last_layer=args.norm_last_layer)).to(dtype)
    teacher = utils.MultiCropWrapper(teacher, head(VIT["embed_dim"], args.out_dim, args.use_bn_in_head)).to(dtype)
    assert not utils.has_batchnorms(student)
    teacher_without_ddp = teacher
    student = nn.parallel.DistributedDataParallel(student)
    teacher_without_ddp.load_state_dict(student.module.state_dict())
    for p in teacher.parameters():
        p.requires_grad = False
    dino_loss = main_dino.DINOLoss(args.out_dim, args.local_crops_number + 2, args.warmup_teacher_temp,
                                   args.teacher_temp, args.warmup_teacher_temp_epochs, args.epochs).to(dtype)
    optimizer = torch.optim.AdamW(utils.get_params_groups(student))
    lr_schedule = utils.cosine_scheduler(args.lr * (args.batch_size_per_gpu * utils.get_world_size()) / 256.,
                                         args.min_lr, args.epochs, ITERS, warmup_epochs=args.warmup_epochs)
    wd_schedule = utils.cosine_scheduler(args.weight_decay, args.weight_decay_end, args.epochs, ITERS)
    momentum_schedule = utils.cosine_scheduler(args.momentum_teacher, 1, args.epochs, ITERS)
    init = clzoo_state(student.module, teacher_without_ddp, dino_loss.center)

    gen = torch.Generator().manual_seed(1234)
    batches = [[torch.randn(BATCH, 3, s, s, generator=gen).to(dtype) for s, n in zip(SIZES, NMB_CROPS)
                for _ in range(n)] for _ in range(STEPS)]
    labels = torch.zeros(BATCH, dtype=torch.long)
    for epoch, (first, last) in enumerate(((0, 2), (2, 3))):
        loader = EpochLoader([(batch, labels) for batch in batches[first:last]], ITERS)
        main_dino.train_one_epoch(student, teacher, teacher_without_ddp, dino_loss, loader, optimizer,
                                  lr_schedule, wd_schedule, momentum_schedule, epoch, None, args)
    final = clzoo_state(student.module, teacher_without_ddp, dino_loss.center)
    torch.distributed.destroy_process_group()
    assert len(losses) == STEPS, losses

    tensors = {f"init/{k}": v for k, v in init.items()}
    for s, crops in enumerate(batches):
        for i, v in enumerate(crops):
            tensors[f"views/{s}/{i}"] = v.contiguous()
    tensors.update({f"final/{k}": v for k, v in final.items()})
    save_file(tensors, os.path.join(out_dir, "dino.safetensors"))
    meta = {
        "argv": clzoo_argv(),
        "losses": losses,
        "total_steps": EPOCHS * ITERS,
        "steps_per_epoch": ITERS,
        "num_samples": BATCH * ITERS,
        "repo": "facebookresearch/dino",
        "commit": commit,
        "atol": 1e-5,
        "dtype": dtype_name,
        "official": {
            "files": ["main_dino.py", "utils.py", "vision_transformer.py"],
            "model": f"utils.MultiCropWrapper(vits.VisionTransformer(img_size=[{SIZES[0]}], qkv_bias=True, "
                     f"norm_layer=LayerNorm(eps=1e-6), {VIT}), DINOHead({VIT['embed_dim']}, {OUT_DIM}, "
                     f"hidden_dim={HIDDEN}, bottleneck_dim={BOTTLENECK}))",
            "args": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(args).items()
                     if k not in ("data_path", "output_dir", "dist_url")},
            "lr_schedule": lr_schedule.tolist(), "wd_schedule": wd_schedule.tolist(),
            "momentum_schedule": momentum_schedule.tolist(),
            "lrs": lrs, "wds": wds,
            "loop": "main_dino.train_one_epoch(epoch 0, 2 batches), train_one_epoch(epoch 1, its first of 2 "
                    "batches), called as train_dino calls it (fp16_scaler None); before them train_dino's "
                    "set-up with the official classes and functions (see the generator's docstring)",
            "distributed": "1 gloo process (world_size 1), student in DistributedDataParallel",
            "patched": "torch.hub.list = [] (get_args_parser's XCiT --arch choices), torch.Tensor.cuda / nn.Module.cuda = identity, torch.cuda.synchronize = no-op, "
                       "MetricLogger.synchronize_between_processes = no-op (its CUDA tensors; logging only), "
                       "MetricLogger.update records loss / lr / wd",
            "keys": "student.backbone -> student_backbone, student.head -> student_head, teacher.backbone -> "
                    "backbone, teacher.head -> teacher_head, DINOLoss.center -> center",
            "views": "torch.randn per crop, Generator seed 1234: [step][0, 1 = 32 px, 2, 3 = 16 px]",
            "init_seed": f"utils.fix_random_seeds({SEED}) before the networks are built",
        },
    }
    with open(os.path.join(out_dir, "dino.json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
    print(json.dumps({"losses": losses, "lrs": lrs, "wds": wds, "tensors": len(tensors)}))


if __name__ == "__main__":
    main()
