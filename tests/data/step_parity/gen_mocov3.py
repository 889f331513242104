"""Writes <variant>.safetensors + <variant>.json: 3 optimizer steps of the official MoCo v3 trainer
(facebookresearch/moco-v3: moco/builder.py `MoCo_ResNet` / `MoCo_ViT`, main_moco.py `train`,
`adjust_learning_rate`, `adjust_moco_momentum`, moco/optimizer.py `LARS`, vits.py `VisionTransformerMoCo`),
in the format of tests/training/step_parity.py. Variants (main_worker's two set-ups, CONFIG.md's recipes):
  mocov3_resnet  narrow torchvision ResNet-18 (zero_init_residual), LARS lr 0.6 wd 1e-6, T 1.0
  mocov3_vit     vits.VisionTransformerMoCo (patch 8 at 32 px, width 64, depth 2, 4 heads, stop_grad_conv1),
                 AdamW lr 1.5e-4 x 8 wd 0.1, T 0.2

    git --git-dir=MIRROR archive COMMIT | tar -x -C /tmp/mocov3_src
    python tests/data/step_parity/gen_mocov3.py /tmp/mocov3_src COMMIT mocov3_resnet [OUT_DIR]

The official modules are imported from that extracted copy (argv[1]); nothing of them lives in this
repository. Run in the project venv, on CPU: main_worker on a machine without CUDA keeps the model as it is
(no SyncBN, no DDP), and builder.py's `concat_all_gather` needs torch.distributed: one gloo process.
Each epoch has 2 iterations and the loop stops after 3, so lr and m are evaluated at epoch + i / 2 as
main_moco.py does per iteration (warmup 1 epoch: lr 0, lr/2, then the cosine).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import types
from functools import partial

import torch
import torch.nn as nn
from safetensors.torch import save_file

from narrow_resnet import CHANNELS, NarrowResNet18

HERE = os.path.dirname(os.path.abspath(__file__))
VIT = dict(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=4, mlp_ratio=4, qkv_bias=True)
BATCH, SIZE, STEPS, EPOCHS, ITERS, WARMUP = 8, 32, 3, 4, 2, 1
DIM, MLP_DIM, MOCO_M = 32, 64, 0.99
SEED, PORT = 0, 29521
VARIANTS = {  # variant: (optimizer, lr (after main_worker's batch scaling), weight decay, T, dtype)
    "mocov3_resnet": ("lars", 0.6, 1e-6, 1.0, torch.float32),
    # float64: the ViT has parameters whose gradient is 0 but for rounding (the k part of each qkv bias: the
    # softmax ignores a shift of k; the final norm's bias: the projector's BN removes a constant shift).
    # AdamW turns that float32 noise (~1e-10) into steps of ~lr (1e-3) whose sign is the noise's; in float64
    # the noise stays far below AdamW's eps and those parameters move by ~1e-12 on both sides. What remains
    # (~1e-7) is the official code's own: vits.py builds the sin-cos table in float32, so the momentum update
    # of that (frozen, equal) parameter rounds in float32 in the official run.
    "mocov3_vit": ("adamw", 1.5e-4 * 8, 0.1, 0.2, torch.float64),
}


def clzoo_argv(variant: str) -> list:
    optimizer, lr, wd, T, _ = VARIANTS[variant]
    model = (["--model", "resnet18", "--model-args.channels", json.dumps(CHANNELS)] if variant == "mocov3_resnet"
             else ["--model", "vit_small_patch16_224", "--model-args",
                   json.dumps({k: v for k, v in VIT.items() if k not in ("img_size", "qkv_bias")})])
    return ["--method", "mocov3", *model, "--image-size", str(SIZE), "--batch-size", str(BATCH),
            "--epochs", str(EPOCHS), "--seed", str(SEED), "--optimizer", optimizer, "--lr", str(lr),
            "--lr-scaling", "none", "--lr-schedule", "cosine", "--min-lr", "0", "--warmup-epochs", str(WARMUP),
            "--weight-decay", str(wd), "--weight-decay-end", str(wd), "--momentum", "0.9",
            "--mixed-precision", "no", "--channels-last", "false", "--hparams.dim", str(DIM),
            "--hparams.mlp_dim", str(MLP_DIM), "--hparams.m", str(MOCO_M), "--hparams.tau", str(T)]


def clzoo_state(model) -> dict:
    """builder.py's names -> clzoo MoCoV3's (training/methods/mocov3.py): the projector lives in the encoder
    (`fc` of a ResNet, `head` of a ViT)."""
    out = {}
    for name, v in model.state_dict().items():
        enc, rest = name.split(".", 1)
        if enc == "predictor":
            out[name] = v
            continue
        prefix = {"base_encoder": "", "momentum_encoder": "momentum_"}[enc]
        head, _, sub = rest.partition(".")
        if head in ("fc", "head"):
            out[f"{prefix}projector.{sub}"] = v
        else:
            out[f"{prefix}backbone.{rest}"] = v
    return {k: v.detach().clone().contiguous() for k, v in out.items()}


class OneEpochOf:
    """A loader of `batches` whose len() is the epoch's full iteration count (main_moco.py reads
    iters_per_epoch = len(train_loader) for the per-iteration schedules)."""

    def __init__(self, batches, iters_per_epoch):
        self.batches, self.n = batches, iters_per_epoch

    def __len__(self):
        return self.n

    def __iter__(self):
        return iter(self.batches)


class RecordingWriter:
    """The SummaryWriter of main_worker (rank 0): train() logs each iteration's loss through it."""

    def __init__(self):
        self.losses = []

    def add_scalar(self, tag, value, step):
        if tag == "loss":
            self.losses.append(float(value))


def main():
    src, commit, variant = os.path.abspath(sys.argv[1]), sys.argv[2], sys.argv[3]
    out_dir = sys.argv[4] if len(sys.argv) > 4 else HERE
    optimizer_name, lr, wd, T, dtype = VARIANTS[variant]
    import timm.layers
    import timm.models.vision_transformer as timm_vit
    # vits.py imports `timm.models.layers.helpers.to_2tuple` (a path of timm 0.4) and reads
    # `VisionTransformer.num_tokens` (timm >= 0.9: num_prefix_tokens)
    sys.modules["timm.models.layers.helpers"] = types.SimpleNamespace(to_2tuple=timm.layers.to_2tuple)
    timm_vit.VisionTransformer.num_tokens = property(lambda self: self.num_prefix_tokens)
    sys.path.insert(0, src)
    import main_moco
    import moco.builder
    import moco.optimizer
    import vits

    torch.Tensor.cuda = lambda self, *a, **k: self  # builder.py: labels (...).cuda()
    torch.set_num_threads(1)
    torch.set_default_dtype(dtype)  # the model and the views
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{PORT}", rank=0, world_size=1)
    torch.manual_seed(SEED)
    if variant == "mocov3_resnet":  # main_worker's two branches, with the small encoders
        model = moco.builder.MoCo_ResNet(partial(NarrowResNet18, zero_init_residual=True), DIM, MLP_DIM, T)
    else:
        vit = partial(vits.VisionTransformerMoCo, norm_layer=partial(nn.LayerNorm, eps=1e-6), **VIT)
        model = moco.builder.MoCo_ViT(partial(vit, stop_grad_conv1=True), DIM, MLP_DIM, T)
    init = clzoo_state(model)
    if optimizer_name == "lars":
        optimizer = moco.optimizer.LARS(model.parameters(), lr, weight_decay=wd, momentum=0.9)
    else:
        optimizer = torch.optim.AdamW(model.parameters(), lr, weight_decay=wd)
    scaler = torch.cuda.amp.GradScaler(enabled=False)  # main_worker's GradScaler; inactive on CPU
    writer = RecordingWriter()

    gen = torch.Generator().manual_seed(1234)
    views = [[torch.randn(BATCH, 3, SIZE, SIZE, generator=gen) for _ in range(2)] for _ in range(STEPS)]
    batches = [(v, torch.zeros(BATCH, dtype=torch.long)) for v in views]
    args = argparse.Namespace(lr=lr, warmup_epochs=WARMUP, epochs=EPOCHS, moco_m=MOCO_M, moco_m_cos=True,
                              gpu=None, rank=0, print_freq=10 ** 9)
    lrs, ms = [], []
    for epoch in range(EPOCHS):
        todo = batches[epoch * ITERS:(epoch + 1) * ITERS]
        if not todo:
            break
        for i in range(len(todo)):
            e = epoch + i / ITERS
            lrs.append(lr * e / WARMUP if e < WARMUP else None)
            ms.append(main_moco.adjust_moco_momentum(e, args))
        main_moco.train(OneEpochOf(todo, ITERS), model, optimizer, scaler, writer, epoch, args)
    # the momentum update the official loop would apply at the start of step STEPS (builder.py forward)
    pending_m = main_moco.adjust_moco_momentum(STEPS / ITERS, args)
    final = clzoo_state(model)
    torch.distributed.destroy_process_group()

    tensors = {f"init/{k}": v for k, v in init.items()}
    for s, (x1, x2) in enumerate(views):
        tensors[f"views/{s}/0"] = x1.contiguous()
        tensors[f"views/{s}/1"] = x2.contiguous()
    tensors.update({f"final/{k}": v for k, v in final.items()})
    save_file(tensors, os.path.join(out_dir, f"{variant}.safetensors"))
    meta = {
        "argv": clzoo_argv(variant),
        "losses": writer.losses,
        "total_steps": EPOCHS * ITERS,
        "steps_per_epoch": ITERS,
        "num_samples": BATCH * ITERS,
        "repo": "facebookresearch/moco-v3",
        "commit": commit,
        "atol": 1e-5,
        "dtype": str(dtype).replace("torch.", ""),
        "pending_m": pending_m,
        "official": {
            "files": ["moco/builder.py", "main_moco.py", "moco/optimizer.py", "vits.py"],
            "builder": ("MoCo_ResNet(partial(NarrowResNet18, zero_init_residual=True), "
                        if variant == "mocov3_resnet" else
                        f"MoCo_ViT(partial(vits.VisionTransformerMoCo, {VIT}, LayerNorm eps 1e-6, stop_grad_conv1=True), ")
                       + f"dim={DIM}, mlp_dim={MLP_DIM}, T={T})",
            "optimizer": f"{optimizer_name} over model.parameters(), lr {lr}, weight_decay {wd}"
                         + (", momentum 0.9" if optimizer_name == "lars" else ", betas (0.9, 0.999)"),
            "args": vars(args),
            "momentum_per_step": ms,
            "loop": f"main_worker's epoch loop calling main_moco.train, {ITERS} iterations per epoch "
                    f"(lr and m at epoch + i / {ITERS}), stopped after {STEPS} iterations",
            "distributed": "1 gloo process (world_size 1) for concat_all_gather; no DDP (main_worker on CPU)",
            "patched": "torch.Tensor.cuda = identity (builder.py's labels); sys.modules "
                       "'timm.models.layers.helpers' = {to_2tuple: timm.layers.to_2tuple} and "
                       "VisionTransformer.num_tokens = num_prefix_tokens (vits.py was written for timm 0.4); "
                       "GradScaler(enabled=False) (main_worker's scaler is a no-op without CUDA)",
            "final_state": "as main_moco.train left it after the 3rd step: the momentum encoder lacks the "
                           "update with the 3rd step's weights (builder.py applies it at the start of the next "
                           "forward, with m = pending_m)",
            "keys": "base_encoder.fc|head.* -> projector.*, base_encoder.* -> backbone.*, momentum_encoder.* "
                    "-> momentum_projector.* / momentum_backbone.*, predictor.* as is",
            "views": "torch.randn(8, 3, 32, 32), Generator seed 1234, [step][0 = x1, 1 = x2]",
            "init_seed": SEED,
        },
    }
    with open(os.path.join(out_dir, f"{variant}.json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
    print(json.dumps({"losses": writer.losses, "ms": ms, "lrs": [g["lr"] for g in optimizer.param_groups],
                      "tensors": len(tensors)}))


if __name__ == "__main__":
    main()
