"""Writes <variant>.safetensors + <variant>.json: 3 optimizer steps of the official SimSiam trainer
(facebookresearch/simsiam: simsiam/builder.py `SimSiam`, main_simsiam.py `train` and `adjust_learning_rate`,
its SGD parameter groups with and without `--fix-pred-lr`), in the format of tests/training/step_parity.py.
Variants:
  simsiam         `--fix-pred-lr` (the recipe: the predictor keeps the initial lr)
  simsiam_cos_pred  without it (every group follows the cosine)

    git --git-dir=MIRROR archive COMMIT | tar -x -C /tmp/simsiam_src
    python tests/data/step_parity/gen_simsiam.py /tmp/simsiam_src COMMIT simsiam [OUT_DIR]

The official modules are imported from that extracted copy (argv[1]); nothing of them lives in this
repository. Run in the project venv, on CPU, in one gloo process: main_simsiam.py trains only under
DistributedDataParallel, so the model is wrapped in it too. The model is a narrow torchvision ResNet-18
(stem 64, stages CHANNELS), the architecture of timm's `resnet18 --model-args.channels CHANNELS`, built by
the builder as `base_encoder(num_classes=dim, zero_init_residual=True)`. One batch per epoch, so the
official per-epoch cosine equals clzoo's per-step one with total_steps = epochs.
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
DIM, PRED_DIM = 32, 8
BATCH, SIZE, STEPS, EPOCHS = 8, 32, 3, 4
LR, MOMENTUM, WD = 1.6, 0.9, 1e-4  # main_simsiam.py: init_lr = lr x batch / 256 = 0.05, the recipe's lr at 256
SEED = 0
PORT = 29519
VARIANTS = {"simsiam": True, "simsiam_cos_pred": False}  # variant: fix_pred_lr


def clzoo_argv(fix_pred_lr: bool) -> list:
    return ["--method", "simsiam", "--model", "resnet18", "--model-args.channels", json.dumps(CHANNELS),
            "--image-size", str(SIZE), "--batch-size", str(BATCH), "--epochs", str(EPOCHS), "--seed", str(SEED),
            "--optimizer", "sgd", "--lr", str(LR), "--lr-scaling", "linear", "--lr-schedule", "cosine",
            "--min-lr", "0", "--warmup-epochs", "0", "--weight-decay", str(WD), "--momentum", str(MOMENTUM),
            "--mixed-precision", "no", "--channels-last", "false", "--hparams.dim", str(DIM),
            "--hparams.pred_dim", str(PRED_DIM), "--hparams.proj_layers", "3",
            "--hparams.fix_pred_lr", json.dumps(fix_pred_lr)]


def clzoo_state(model) -> dict:
    """builder.py's names -> clzoo SimSiam's (training/methods/simsiam.py): encoder.fc -> projector, the
    frozen bias of fc.6 folded into the running mean of the affine-free BN fc.7 that follows it (as clzoo's
    `_fold_frozen_bias` does for released checkpoints: BN(x + b) with running mean r = BN(x) with r - b)."""
    sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    bias = sd.pop("encoder.fc.6.bias")
    sd["encoder.fc.7.running_mean"] = sd["encoder.fc.7.running_mean"] - bias
    out = {}
    for name, v in sd.items():
        if name.startswith("encoder.fc."):
            out["projector." + name[len("encoder.fc."):]] = v
        elif name.startswith("encoder."):
            out["backbone." + name[len("encoder."):]] = v
        else:
            out[name] = v  # predictor.*
    return {k: v.contiguous() for k, v in out.items()}


class RecordingCosine(nn.CosineSimilarity):
    """main_simsiam.py's criterion; the loss of each step is read back from its calls (two per step)."""

    def __init__(self):
        super().__init__(dim=1)
        self.calls = []

    def forward(self, a, b):
        out = super().forward(a, b)
        self.calls.append(out.detach())
        return out


def main():
    src, commit, variant = os.path.abspath(sys.argv[1]), sys.argv[2], sys.argv[3]
    out_dir = sys.argv[4] if len(sys.argv) > 4 else HERE
    fix_pred_lr = VARIANTS[variant]
    sys.path.insert(0, src)
    import main_simsiam
    import simsiam.builder

    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{PORT}", rank=0, world_size=1)
    torch.manual_seed(SEED)
    model = simsiam.builder.SimSiam(NarrowResNet18, DIM, PRED_DIM)
    init = clzoo_state(model)
    frozen_bias = model.encoder.fc[6].bias.detach().clone()
    model = torch.nn.parallel.DistributedDataParallel(model)  # main_simsiam.py: DDP only

    gen = torch.Generator().manual_seed(1234)
    views = [[torch.randn(BATCH, 3, SIZE, SIZE, generator=gen) for _ in range(2)] for _ in range(STEPS)]

    # main_worker's optimizer set-up, with its argument values
    args = argparse.Namespace(lr=LR, batch_size=BATCH, epochs=EPOCHS, gpu=None, print_freq=10 ** 9,
                              fix_pred_lr=fix_pred_lr)
    init_lr = args.lr * args.batch_size / 256
    if args.fix_pred_lr:
        optim_params = [{"params": model.module.encoder.parameters(), "fix_lr": False},
                        {"params": model.module.predictor.parameters(), "fix_lr": True}]
    else:
        optim_params = model.parameters()
    optimizer = torch.optim.SGD(optim_params, init_lr, momentum=MOMENTUM, weight_decay=WD)
    criterion = RecordingCosine()
    lrs = []
    for epoch in range(STEPS):  # main_worker's epoch loop, one batch per epoch, stopped after STEPS
        main_simsiam.adjust_learning_rate(optimizer, init_lr, epoch, args)
        lrs.append([g["lr"] for g in optimizer.param_groups])
        loader = [(views[epoch], torch.zeros(BATCH, dtype=torch.long))]
        main_simsiam.train(loader, model, criterion, optimizer, epoch, args)
    assert torch.equal(model.module.encoder.fc[6].bias, frozen_bias)  # requires_grad False: never updated
    final = clzoo_state(model.module)
    torch.distributed.destroy_process_group()
    # main_simsiam.py: loss = -(criterion(p1, z2).mean() + criterion(p2, z1).mean()) * 0.5
    losses = [float(-(a.mean() + b.mean()) * 0.5) for a, b in zip(criterion.calls[0::2], criterion.calls[1::2])]

    tensors = {f"init/{k}": v for k, v in init.items()}
    for s, (x1, x2) in enumerate(views):
        tensors[f"views/{s}/0"] = x1.contiguous()
        tensors[f"views/{s}/1"] = x2.contiguous()
    tensors.update({f"final/{k}": v for k, v in final.items()})
    save_file(tensors, os.path.join(out_dir, f"{variant}.safetensors"))
    meta = {
        "argv": clzoo_argv(fix_pred_lr),
        "losses": losses,
        "total_steps": EPOCHS,
        "steps_per_epoch": 1,
        "num_samples": BATCH,
        "repo": "facebookresearch/simsiam",
        "commit": commit,
        "atol": 1e-5,
        "dtype": "float32",
        "official": {
            "files": ["simsiam/builder.py", "main_simsiam.py"],
            "builder": f"simsiam.builder.SimSiam(NarrowResNet18, dim={DIM}, pred_dim={PRED_DIM})",
            "encoder": f"torchvision ResNet(BasicBlock, [2,2,2,2], zero_init_residual=True), stem 64, stage "
                       f"widths {CHANNELS}",
            "args": {"lr": LR, "init_lr": init_lr, "batch_size": BATCH, "epochs": EPOCHS, "momentum": MOMENTUM,
                     "weight_decay": WD, "fix_pred_lr": fix_pred_lr},
            "lrs": lrs,
            "loop": "main_worker's `for epoch: adjust_learning_rate; train` with one batch per epoch, 3 epochs; "
                    "main_simsiam.train and adjust_learning_rate called as they are; the optimizer's parameter "
                    "groups as main_worker builds them",
            "distributed": "1 gloo process (world_size 1), model in DistributedDataParallel",
            "patched": "none; the criterion is nn.CosineSimilarity(dim=1) subclassed only to record its outputs",
            "keys": "encoder.fc.* -> projector.* (fc.6.bias, frozen, folded into fc.7.running_mean), "
                    "encoder.* -> backbone.*, predictor.* as is",
            "views": "torch.randn(8, 3, 32, 32), Generator seed 1234, [step][0 = x1, 1 = x2]",
            "init_seed": SEED,
        },
    }
    with open(os.path.join(out_dir, f"{variant}.json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
    print(json.dumps({"losses": losses, "lrs": lrs, "tensors": len(tensors)}))


if __name__ == "__main__":
    main()
