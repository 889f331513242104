"""Writes barlowtwins.safetensors + barlowtwins.json: 3 optimizer steps of the official Barlow Twins trainer
(facebookresearch/barlowtwins main.py: `BarlowTwins`, `LARS(weight_decay_filter=True,
lars_adaptation_filter=True)`, `adjust_learning_rate`, main_worker's parameter groups, SyncBatchNorm and DDP),
in the format of tests/training/step_parity.py.

    git --git-dir=MIRROR archive COMMIT | tar -x -C /tmp/bt_src
    python tests/data/step_parity/gen_barlowtwins.py /tmp/bt_src COMMIT [float64|float32] [OUT_DIR]

main.py is imported from that extracted copy (argv[1]); nothing of it lives in this repository. Run in the
project venv, on CPU, in one gloo process (the official forward all-reduces C; main_worker's SyncBatchNorm conversion is
left out: DDP refuses SyncBatchNorm on CPU, and at world size 1 it is nn.BatchNorm).

What is set instead of main.py's defaults, and why:
- the backbone: `torchvision.models.resnet50` is replaced by the narrow ResNet-18 of narrow_resnet.py (built as
  main.py builds it, `zero_init_residual=True`, fc = Identity). main.py sizes the projector's first Linear
  for ResNet-50's 2048 features, so that one layer is rebuilt as Linear(64, 64, bias=False) (PyTorch's own
  initialisation, drawn right after the official constructor); the rest of the module is main.py's.
- the learning rates: main.py's lr is `batch_size / 256 x learning_rate_weights` (and x learning_rate_biases);
  at batch 8 the defaults 0.2 / 0.0048 move the LARS-adapted weights by ~6e-6 of their norm per step, under
  the comparison's tolerance, so a wrong optimizer could not fail the test. Both are x100 (20 / 0.48, the
  official ratio 0.024), which moves them by ~0.06 % (the loss goes 83.19, 82.99, 70.68).
- float64 (the default; `float32` writes the other): the loss is a sum of 64 x 64 squared correlations of
  size ~83, and the official code's own float32 rounding moves it by 2e-5 at step 0 (float32 vs float64 runs
  of main.py), and the zero-initialised residual BN weights by 2e-4 after 3 steps; both over the 1e-5
  tolerance. clzoo matches the float64 run to ~4e-12.
- epochs 20 with one batch per epoch: warmup 10 steps (main.py: 10 x len(loader)); the 3 steps are global
  steps 9, 10, 11 (the last warmup step, then the cosine), the JSON's "first_step".
The loop body is main_worker's, in its order: adjust_learning_rate, zero_grad, model.forward, backward,
optimizer.step (in float32: GradScaler / autocast are CUDA-only and scale nothing here).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import torch
import torch.nn as nn
from safetensors.torch import save_file

from narrow_resnet import CHANNELS, NarrowResNet18

HERE = os.path.dirname(os.path.abspath(__file__))
PROJECTOR = "64-64-64"
BATCH, SIZE, STEPS, EPOCHS, FIRST_STEP = 8, 32, 3, 20, 9
LR_WEIGHTS, LR_BIASES, WD, LAMBD = 20.0, 0.48, 1e-6, 0.0051
SEED = 0
PORT = 29523


def clzoo_argv() -> list:
    base = BATCH / 256
    return ["--method", "barlowtwins", "--model", "resnet18", "--model-args.channels", json.dumps(CHANNELS),
            "--image-size", str(SIZE), "--batch-size", str(BATCH), "--epochs", str(EPOCHS), "--seed", str(SEED),
            "--optimizer", "lars", "--lr", str(LR_WEIGHTS), "--lr-scaling", "linear", "--lr-schedule", "cosine",
            "--min-lr", repr(base * 0.001 * LR_WEIGHTS), "--warmup-epochs", "10", "--weight-decay", str(WD),
            "--momentum", "0.9", "--lars-eta", "0.001", "--mixed-precision", "no", "--channels-last", "false",
            "--hparams.lambd", str(LAMBD), "--hparams.bias_lr_scale", repr(LR_BIASES / LR_WEIGHTS),
            "--hparams.proj_dims", json.dumps([int(d) for d in PROJECTOR.split("-")])]


def clzoo_state(model) -> dict:
    """main.py's names are clzoo's (backbone.*, projector.*), except the affine-free `bn` that normalises z
    before C: clzoo normalises with the batch statistics only (losses.global_batch_norm); its running
    statistics are never read in training (main.py saves only the backbone)."""
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items() if not k.startswith("bn.")}


def main():
    src, commit = os.path.abspath(sys.argv[1]), sys.argv[2]
    dtype_name = sys.argv[3] if len(sys.argv) > 3 else "float64"
    out_dir = sys.argv[4] if len(sys.argv) > 4 else HERE
    dtype = getattr(torch, dtype_name)
    sys.path.insert(0, src)
    import main as bt_main

    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{PORT}", rank=0, world_size=1)
    args = argparse.Namespace(batch_size=BATCH, epochs=EPOCHS, learning_rate_weights=LR_WEIGHTS,
                              learning_rate_biases=LR_BIASES, weight_decay=WD, lambd=LAMBD, projector=PROJECTOR)
    bt_main.torchvision.models.resnet50 = NarrowResNet18
    torch.manual_seed(SEED)
    model = bt_main.BarlowTwins(args)
    width = NarrowResNet18().fc.in_features  # drawn after the official constructor's own layers
    model.projector[0] = nn.Linear(width, model.projector[0].out_features, bias=False)
    # main_worker, in its order. Not nn.SyncBatchNorm.convert_sync_batchnorm: DDP refuses SyncBatchNorm on CPU
    # modules, and at world size 1 it computes nn.BatchNorm's batch statistics (its own fallback)
    param_weights, param_biases = [], []
    for param in model.parameters():
        (param_biases if param.ndim == 1 else param_weights).append(param)
    parameters = [{"params": param_weights}, {"params": param_biases}]
    model = torch.nn.parallel.DistributedDataParallel(model.to(dtype))
    optimizer = bt_main.LARS(parameters, lr=0, weight_decay=args.weight_decay, weight_decay_filter=True,
                             lars_adaptation_filter=True)
    init = clzoo_state(model.module)

    gen = torch.Generator().manual_seed(1234)
    views = [[torch.randn(BATCH, 3, SIZE, SIZE, generator=gen).to(dtype) for _ in range(2)] for _ in range(STEPS)]
    loader = [None]  # len(loader) = 1: one batch per epoch
    losses, lrs = [], []
    for s, (y1, y2) in enumerate(views):
        step = FIRST_STEP + s
        bt_main.adjust_learning_rate(args, optimizer, loader, step)
        lrs.append([g["lr"] for g in optimizer.param_groups])
        optimizer.zero_grad()
        loss = model.forward(y1, y2)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    final = clzoo_state(model.module)
    torch.distributed.destroy_process_group()

    tensors = {f"init/{k}": v for k, v in init.items()}
    for s, (y1, y2) in enumerate(views):
        tensors[f"views/{s}/0"] = y1.contiguous()
        tensors[f"views/{s}/1"] = y2.contiguous()
    tensors.update({f"final/{k}": v for k, v in final.items()})
    save_file(tensors, os.path.join(out_dir, "barlowtwins.safetensors"))
    meta = {
        "argv": clzoo_argv(),
        "losses": losses,
        "total_steps": EPOCHS,
        "steps_per_epoch": 1,
        "first_step": FIRST_STEP,
        "num_samples": BATCH,
        "repo": "facebookresearch/barlowtwins",
        "commit": commit,
        "atol": 1e-5,
        "dtype": dtype_name,
        "official": {
            "files": ["main.py"],
            "model": f"main.BarlowTwins(args), projector {PROJECTOR}, torchvision.models.resnet50 -> NarrowResNet18 "
                     f"(BasicBlock [2,2,2,2], stem 64, stages {CHANNELS}, zero_init_residual=True); projector[0] "
                     f"rebuilt as Linear({width}, 64, bias=False) (main.py hard-codes 2048 inputs)",
            "args": vars(args),
            "lrs": lrs,
            "loop": "main_worker's loop body for global steps 9, 10, 11 (len(loader) 1, epochs 20): "
                    "adjust_learning_rate, zero_grad, model.forward(y1, y2), backward, LARS.step; float32 "
                    "(no GradScaler / autocast on CPU)",
            "distributed": "1 gloo process (world_size 1), DistributedDataParallel, as main_worker; without "
                           "SyncBatchNorm.convert_sync_batchnorm (CPU DDP refuses it; at world size 1 it is "
                           "nn.BatchNorm)",
            "patched": "main.torchvision.models.resnet50 = NarrowResNet18; projector[0] rebuilt (see model)",
            "not_compared": "bn.running_mean / bn.running_var / bn.num_batches_tracked (the affine-free BN "
                            "before C: clzoo has no such buffers; only batch statistics enter training)",
            "keys": "backbone.*, projector.* as is",
            "views": "torch.randn(8, 3, 32, 32), Generator seed 1234, [step][0 = y1, 1 = y2]",
            "init_seed": SEED,
        },
    }
    with open(os.path.join(out_dir, "barlowtwins.json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
    print(json.dumps({"losses": losses, "lrs": lrs, "tensors": len(tensors)}))


if __name__ == "__main__":
    main()
