"""Writes swav.safetensors + swav.json: 3 optimizer steps of the official SwAV trainer (facebookresearch/swav
main_swav.py: its own `train` (prototype normalisation, multi-resolution forward, queue, `distributed_sinkhorn`,
swapped prediction, prototype freezing), src/resnet50.py `ResNet`, apex `LARC(trust_coefficient=0.001,
clip=False)` around SGD, main()'s warmup + cosine lr schedule), in the format of tests/training/step_parity.py.

    git --git-dir=SWAV_MIRROR archive COMMIT | tar -x -C /tmp/swav_src
    git --git-dir=APEX_MIRROR show APEX_COMMIT:apex/parallel/LARC.py > /tmp/apex_LARC.py
    python tests/data/step_parity/gen_swav.py /tmp/swav_src COMMIT /tmp/apex_LARC.py APEX_COMMIT [float64|float32] [OUT_DIR]

main_swav.py and src/ are imported from that extracted copy (argv[1]), apex's LARC from its file (argv[3]:
NVIDIA/apex removed apex.parallel in 2025, so APEX_COMMIT is the last commit that has it; it is pure Python);
nothing of either lives in this repository. Run in the project venv, on CPU, in one gloo process (the
official sinkhorn all-reduces its marginals; the model is in DistributedDataParallel, as main() wraps it).

The network is the official `ResNet(Bottleneck, [1, 1, 1, 1], width_per_group=16)` (its class at a small
size: one bottleneck per stage, stage planes 16-32-64-128, bottleneck widths 4-8-16-32, features 512) with
its stem widened from 16 to timm's fixed 64 channels: conv1, bn1 and layer1.0.conv1 are rebuilt at that width
(PyTorch's default initialisation), and layer1.0 loses its downsample, as _make_layer builds none when the
stem's width equals the block's output (64). That
is timm's `resnet50 --model-args.layers [1,1,1,1] --model-args.channels [16,32,64,128]
--model-args.base_width 16` (the official ConstantPad2d(1) + conv padding 2 = timm's padding 3); projector
512-32-16 with BN, 12 prototypes, crops 2 x 32 px + 2 x 16 px, batch 8.

One epoch of 3 iterations (main_swav.train over a 3-batch loader, epoch 0 of 4) covers: the warmup from
`start_warmup` (np.linspace over the first epoch's 3 steps, ending at base_lr), the prototypes frozen for
`freeze_prototypes_niters` 1 step, and a queue of 16 (2 global batches, from epoch 0) that is full, and so
used by the Sinkhorn, in step 2. What main() sets up before `train` (the optimizer, the LARC wrapper, the
lr schedule array, the queue tensor) is built here as main() builds it, with the values above.

float64 (the default; `float32` writes the other): the official code's own float32 rounding (the swapped
prediction at temperature 0.1, exp(scores / 0.05) in the Sinkhorn, LARC's trust ratios) moves the step-2 loss
by 1.4e-5 and layer4's downsample BN weight by 8.6e-4 between its float32 and float64 runs, beyond the 1e-5
tolerance.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import sys
import types

import numpy as np
import torch
import torch.nn as nn
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
BATCH, SIZES, NMB_CROPS, STEPS, EPOCHS = 8, (32, 16), (2, 2), 3, 4
LAYERS, WIDTH, STEM, HIDDEN, DIM, K = [1, 1, 1, 1], 16, 64, 32, 16, 12
BASE_LR, FINAL_LR, START_WARMUP, WD, WARMUP_EPOCHS = 4.8, 0.0048, 0.3, 1e-6, 1
QUEUE, FREEZE_NITERS = 16, 1
SEED = 0
PORT = 29527


def clzoo_argv() -> list:
    model_args = ["--model-args.layers", json.dumps(LAYERS),
                  "--model-args.channels", json.dumps([WIDTH * 2 ** i for i in range(4)]),
                  "--model-args.base_width", str(WIDTH)]
    return ["--method", "swav", "--model", "resnet50", *model_args, "--image-size", str(SIZES[0]),
            "--batch-size", str(BATCH), "--epochs", str(EPOCHS), "--seed", str(SEED),
            "--lr", repr(BASE_LR * 256 / BATCH), "--min-lr", repr(FINAL_LR), "--warmup-epochs", str(WARMUP_EPOCHS),
            "--warmup-start-lr", repr(START_WARMUP), "--weight-decay", repr(WD), "--sync-bn", "false",
            "--mixed-precision", "no", "--channels-last", "false",
            "--aug.local_views", str(NMB_CROPS[1]), "--aug.local_size", str(SIZES[1]),
            "--hparams.dim", str(DIM), "--hparams.hidden_mlp", str(HIDDEN), "--hparams.nmb_prototypes", str(K),
            "--hparams.freeze_prototypes_epochs", repr(FREEZE_NITERS / STEPS),
            "--hparams.queue_length", str(QUEUE), "--hparams.epoch_queue_starts", "0"]


def _stub_modules(larc_file: str) -> None:
    # main_swav.py imports apex (LARC; amp and syncbn only with --use_fp16 / --sync_bn apex) and src/logger.py
    # imports pandas (PD_Stats, the training-stats file): neither is used by `train`.
    apex, parallel = types.ModuleType("apex"), types.ModuleType("apex.parallel")
    spec = importlib.util.spec_from_file_location("apex.parallel.LARC", larc_file)
    larc = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(larc)
    apex.parallel, parallel.LARC = parallel, larc
    import torchvision  # noqa: F401  (imported before the pandas stub: torch._dynamo probes pandas' spec)
    pandas = types.ModuleType("pandas")
    pandas.__spec__ = importlib.util.spec_from_loader("pandas", loader=None)
    sys.modules.update({"apex": apex, "apex.parallel": parallel, "apex.parallel.LARC": larc, "pandas": pandas})
    torch.Tensor.cuda = lambda self, *a, **k: self  # src/resnet50.py moves each crop group to the GPU


def widen_stem(model, width: int) -> None:
    """The stem at `width` channels (timm's plain stem is always 64 wide; the official one is width_per_group)."""
    block = model.layer1[0]
    model.conv1 = nn.Conv2d(3, width, kernel_size=7, stride=2, padding=2, bias=False)  # padding 2: after self.padding
    model.bn1 = nn.BatchNorm2d(width)
    block.conv1 = nn.Conv2d(width, block.conv1.out_channels, kernel_size=1, bias=False)
    if width == block.conv3.out_channels:  # _make_layer builds no downsample when inplanes == planes x 4
        block.downsample = None


def clzoo_state(model, queue) -> dict:
    """src/resnet50.py's names -> clzoo SwAV's: the backbone's layers -> backbone.*, projection_head ->
    projector, prototypes as is; the queue (main_swav.py's (crops, length, dim) tensor) -> queue."""
    out = {}
    for k, v in model.state_dict().items():
        if k.startswith("projection_head."):
            out["projector." + k[len("projection_head."):]] = v
        elif k.startswith("prototypes."):
            out[k] = v
        else:
            out["backbone." + k] = v
    out["queue"] = queue
    return {k: v.detach().clone().contiguous() for k, v in out.items()}


def main():
    src, commit, larc_file, apex_commit = os.path.abspath(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    dtype_name = sys.argv[5] if len(sys.argv) > 5 else "float64"
    out_dir = sys.argv[6] if len(sys.argv) > 6 else HERE
    dtype = getattr(torch, dtype_name)
    _stub_modules(larc_file)
    sys.path.insert(0, src)
    import main_swav
    import src.resnet50 as resnet_models

    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{PORT}", rank=0, world_size=1)
    args = main_swav.parser.parse_args([
        "--nmb_crops", *map(str, NMB_CROPS), "--size_crops", *map(str, SIZES), "--crops_for_assign", "0", "1",
        "--temperature", "0.1", "--epsilon", "0.05", "--sinkhorn_iterations", "3", "--feat_dim", str(DIM),
        "--nmb_prototypes", str(K), "--queue_length", str(QUEUE), "--epoch_queue_starts", "0",
        "--epochs", str(EPOCHS), "--batch_size", str(BATCH), "--base_lr", str(BASE_LR), "--final_lr", str(FINAL_LR),
        "--freeze_prototypes_niters", str(FREEZE_NITERS), "--wd", str(WD), "--warmup_epochs", str(WARMUP_EPOCHS),
        "--start_warmup", str(START_WARMUP), "--hidden_mlp", str(HIDDEN), "--use_fp16", "false",
        "--sync_bn", "none"])
    args.world_size, args.rank = 1, 0
    main_swav.args = args  # train() and distributed_sinkhorn() read the module's global args, as main() sets it

    torch.manual_seed(SEED)
    model = resnet_models.ResNet(resnet_models.Bottleneck, LAYERS, width_per_group=WIDTH, normalize=True,
                                 hidden_mlp=HIDDEN, output_dim=DIM, nmb_prototypes=K)
    widen_stem(model, STEM)
    model = model.to(dtype)
    # main(): SGD(lr base_lr, momentum 0.9, wd), LARC(trust 0.001, clip False), warmup + cosine array, DDP
    iters_per_epoch = STEPS
    optimizer = torch.optim.SGD(model.parameters(), lr=args.base_lr, momentum=0.9, weight_decay=args.wd)
    optimizer = main_swav.LARC(optimizer=optimizer, trust_coefficient=0.001, clip=False)
    warmup = np.linspace(args.start_warmup, args.base_lr, iters_per_epoch * args.warmup_epochs)
    iters = np.arange(iters_per_epoch * (args.epochs - args.warmup_epochs))
    cosine = np.array([args.final_lr + 0.5 * (args.base_lr - args.final_lr) * (1 + math.cos(
        math.pi * t / (iters_per_epoch * (args.epochs - args.warmup_epochs)))) for t in iters])
    lr_schedule = np.concatenate((warmup, cosine))
    model = nn.parallel.DistributedDataParallel(model)
    args.queue_length -= args.queue_length % (args.batch_size * args.world_size)
    queue = torch.zeros(len(args.crops_for_assign), args.queue_length // args.world_size, args.feat_dim,
                        dtype=dtype)

    # the state the first forward sees: train() L2-normalises the prototypes before it (a no-op afterwards)
    with torch.no_grad():
        model.module.prototypes.weight.copy_(nn.functional.normalize(model.module.prototypes.weight, dim=1, p=2))
    init = clzoo_state(model.module, queue)

    gen = torch.Generator().manual_seed(1234)
    batches = [[torch.randn(BATCH, 3, s, s, generator=gen).to(dtype) for s, n in zip(SIZES, NMB_CROPS)
                for _ in range(n)] for _ in range(STEPS)]

    losses, lrs = [], []

    made = []  # train() makes batch_time, data_time, losses: the third AverageMeter is the loss's

    class RecordingMeter(main_swav.AverageMeter):
        """train()'s AverageMeter; the loss meter's update(loss.item(), bs) records each step's loss."""

        def __init__(self):
            super().__init__()
            made.append(self)

        def update(self, val, n=1):
            if len(made) >= 3 and self is made[2]:
                losses.append(val)
                lrs.append(optimizer.param_groups[0]["lr"])
            super().update(val, n)

    main_swav.AverageMeter = RecordingMeter
    (_, _), queue = main_swav.train(batches, model, optimizer, 0, lr_schedule, queue)
    final = clzoo_state(model.module, queue)
    torch.distributed.destroy_process_group()
    assert len(losses) == STEPS, losses

    tensors = {f"init/{k}": v for k, v in init.items()}
    for s, crops in enumerate(batches):
        for i, v in enumerate(crops):
            tensors[f"views/{s}/{i}"] = v.contiguous()
    tensors.update({f"final/{k}": v for k, v in final.items()})
    save_file(tensors, os.path.join(out_dir, "swav.safetensors"))
    meta = {
        "argv": clzoo_argv(),
        "losses": losses,
        "total_steps": EPOCHS * STEPS,
        "steps_per_epoch": STEPS,
        "num_samples": BATCH * STEPS,
        "repo": "facebookresearch/swav",
        "commit": commit,
        "atol": 1e-5,
        "dtype": dtype_name,
        "official": {
            "files": ["main_swav.py", "src/resnet50.py", "src/utils.py (AverageMeter)",
                      f"NVIDIA/apex @ {apex_commit} apex/parallel/LARC.py"],
            "model": f"src.resnet50.ResNet(Bottleneck, {LAYERS}, width_per_group={WIDTH}, normalize=True, "
                     f"hidden_mlp={HIDDEN}, output_dim={DIM}, nmb_prototypes={K}); stem widened to {STEM} "
                     f"channels (conv1, bn1, layer1.0.conv1 rebuilt, layer1.0.downsample None: timm's plain "
                     f"stem is 64 wide)",
            "args": {k: v for k, v in vars(args).items() if not k.startswith(("dump", "data", "dist"))},
            "lr_schedule": lr_schedule.tolist(),
            "lrs": lrs,
            "loop": "main_swav.train(loader of 3 batches, model, optimizer, epoch 0, lr_schedule, queue), called "
                    "as main() calls it; before it, main()'s SGD + LARC + lr schedule + DDP + queue set-up with "
                    "the values of `args`",
            "distributed": "1 gloo process (world_size 1), DistributedDataParallel",
            "patched": "the stem's width (see model); stub modules apex / apex.parallel (LARC loaded from apex's file) and pandas (unused "
                       "PD_Stats); torch.Tensor.cuda = identity; main_swav.args set; main_swav.AverageMeter "
                       "subclassed to record each step's loss",
            "prototypes": "init/ holds them L2-normalised, as train() normalises them before each forward; "
                          "final/ as the last optimizer step left them (train() normalises them again before "
                          "the next forward; clzoo right after each step)",
            "keys": "conv1/bn1/layerN.* -> backbone.*, projection_head.* -> projector.*, prototypes.weight, "
                    "queue (crops_for_assign, queue_length, feat_dim)",
            "views": "torch.randn per crop, Generator seed 1234: [step][0, 1 = 32 px, 2, 3 = 16 px]",
            "init_seed": SEED,
        },
    }
    with open(os.path.join(out_dir, "swav.json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
    print(json.dumps({"losses": losses, "lrs": lrs, "tensors": len(tensors)}))


if __name__ == "__main__":
    main()
