"""Writes <variant>.safetensors + <variant>.json: 3 optimizer steps of the official MoCo trainer
(facebookresearch/moco: moco/builder.py `MoCo`, main_moco.py `train` and `adjust_learning_rate`), in the
format of tests/training/step_parity.py. Variants:
  mocov2  `--mlp --moco-t 0.2 --cos`            (the MoCo v2 recipe)
  mocov1  no MLP, T 0.07, `--schedule 1 2`      (the v1 defaults; the step schedule's milestones at epochs 1, 2)

    git --git-dir=MIRROR archive COMMIT   # 7397dfe1: the repository's HEAD is an empty tree | tar -x -C /tmp/moco_src
    python tests/data/step_parity/gen_moco.py /tmp/moco_src COMMIT mocov2
    python tests/data/step_parity/gen_moco.py /tmp/moco_src COMMIT mocov1

The official modules are imported from that extracted copy (argv[1]); nothing of them lives in this
repository. Run in the project venv, on CPU, in one gloo process (the builder's `concat_all_gather` and
shuffle-BN need torch.distributed; main_moco.py only runs under DistributedDataParallel, so the model is
wrapped in it too). The builder calls `.cuda()` on two index tensors (the shuffle permutation and the
labels): `torch.Tensor.cuda` is patched here to return the tensor itself (recorded in the JSON).

The model is a narrow torchvision ResNet-18 (stem 64, stages CHANNELS, BasicBlocks; a downsample in
layer1 because 64 != CHANNELS[0]), the architecture of timm's `resnet18 --model-args.channels CHANNELS`.
clzoo runs NCHW (`--channels-last false`) as main_moco.py does: with channels_last the convolutions' other
summation order, amplified over 3 steps, already moves the backbone by ~5e-4. One step per epoch, so the official per-epoch cosine lr equals clzoo's per-step one with
total_steps = epochs.
"""

from __future__ import annotations

import json
import os
import sys

import torch
import torch.nn as nn
from safetensors.torch import save_file

from narrow_resnet import CHANNELS, NarrowResNet18

HERE = os.path.dirname(os.path.abspath(__file__))
DIM, K, M = 32, 32, 0.99
VARIANTS = {  # variant: (mlp, T, cos, schedule (epochs), clzoo schedule arguments, dtype)
    "mocov2": (True, 0.2, True, [], ["--lr-schedule", "cosine", "--min-lr", "0"], torch.float32),
    # float64: at T 0.07 float32 rounding alone moves the official losses by 1.7e-5 by step 3 (the official code
    # against itself, 1 thread vs 2), above the 1e-5 the test asserts
    "mocov1": (False, 0.07, False, [1, 2], ["--lr-schedule", "step", "--lr-milestones", "[0.25,0.5]",
                                          "--lr-gamma", "[0.1,0.01]"], torch.float64),
}
BATCH, SIZE, STEPS, EPOCHS = 8, 32, 3, 4
LR, MOMENTUM, WD = 0.03, 0.9, 1e-4
SEED = 0
PORT = 29517



def clzoo_argv(variant: str) -> list:
    T, schedule_args = VARIANTS[variant][1], VARIANTS[variant][4]
    return ["--method", variant, "--model", "resnet18", "--model-args.channels", json.dumps(CHANNELS),
            "--image-size", str(SIZE), "--batch-size", str(BATCH), "--epochs", str(EPOCHS), "--seed", str(SEED),
            "--optimizer", "sgd", "--lr", str(LR), "--lr-scaling", "none", *schedule_args,
            "--warmup-epochs", "0", "--weight-decay", str(WD), "--momentum", str(MOMENTUM),
            "--mixed-precision", "no", "--channels-last", "false", "--hparams.dim", str(DIM), "--hparams.K", str(K),
            "--hparams.m", str(M), "--hparams.tau", str(T), "--bn-splits", "1"]


def clzoo_key(name: str) -> str:
    """builder.py's state_dict names -> clzoo MoCo's (training/methods/mocov1.py)."""
    enc, rest = name.split(".", 1)
    online = {"encoder_q": "", "encoder_k": "momentum_"}[enc]
    if rest.startswith("fc."):  # v1: fc = Linear -> projector.0; --mlp: Sequential(Linear, ReLU, Linear) -> 0 / 2
        rest = rest[3:] if "." in rest[3:] else "0." + rest[3:]
        return f"{online}projector.{rest}"
    return f"{online}backbone.{rest}"


def clzoo_state(model) -> dict:
    out = {}
    for name, v in model.state_dict().items():
        if name == "queue":
            out["queue.queue"] = v.T  # (dim, K) in builder.py, (K, dim) in modules/queue.py
        elif name == "queue_ptr":
            out["queue.ptr"] = v.reshape(())
        else:
            out[clzoo_key(name)] = v
    return {k: v.detach().clone().contiguous() for k, v in out.items()}


class RecordingCE(nn.CrossEntropyLoss):
    """main_moco.py's criterion, keeping each step's loss."""

    def __init__(self):
        super().__init__()
        self.losses = []

    def forward(self, output, target):
        loss = super().forward(output, target)
        self.losses.append(float(loss.detach()))
        return loss


def main():
    src, commit, variant = os.path.abspath(sys.argv[1]), sys.argv[2], sys.argv[3]
    mlp, T, cos, schedule, _, dtype = VARIANTS[variant]
    sys.path.insert(0, src)
    import argparse

    import main_moco
    import moco.builder

    torch.Tensor.cuda = lambda self, *a, **k: self  # CPU: builder.py's randperm(...).cuda(), labels.cuda()
    # main_moco.accuracy (logged top-1/5 only) fails on current PyTorch: `correct[:k].view(-1)` of a
    # transposed tensor; it takes no part in the step, so it is replaced by zeros.
    main_moco.accuracy = lambda output, target, topk=(1,): [torch.zeros(1) for _ in topk]
    torch.set_num_threads(1)
    torch.set_default_dtype(dtype)  # the model, the queue and the views
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{PORT}", rank=0, world_size=1)

    torch.manual_seed(SEED)
    model = moco.builder.MoCo(NarrowResNet18, DIM, K, M, T, mlp)
    init = clzoo_state(model)
    model = torch.nn.parallel.DistributedDataParallel(model)  # main_moco.py: DDP only

    gen = torch.Generator().manual_seed(1234)
    views = [[torch.randn(BATCH, 3, SIZE, SIZE, generator=gen) for _ in range(2)] for _ in range(STEPS)]

    args = argparse.Namespace(lr=LR, cos=cos, epochs=EPOCHS, schedule=schedule, gpu=None, print_freq=10 ** 9)
    criterion = RecordingCE()
    optimizer = torch.optim.SGD(model.parameters(), args.lr, momentum=MOMENTUM, weight_decay=WD)
    lrs = []
    for epoch in range(STEPS):  # main_worker's epoch loop, one batch per epoch, stopped after STEPS
        main_moco.adjust_learning_rate(optimizer, epoch, args)
        lrs.append(optimizer.param_groups[0]["lr"])
        loader = [(views[epoch], torch.zeros(BATCH, dtype=torch.long))]  # (images=[im_q, im_k], labels)
        main_moco.train(loader, model, criterion, optimizer, epoch, args)
    final = clzoo_state(model.module)
    torch.distributed.destroy_process_group()

    tensors = {f"init/{k}": v for k, v in init.items()}
    for s, (v_q, v_k) in enumerate(views):  # clzoo MoCo: views[0] query (im_q), views[1] key (im_k)
        tensors[f"views/{s}/0"] = v_q.contiguous()
        tensors[f"views/{s}/1"] = v_k.contiguous()
    tensors.update({f"final/{k}": v for k, v in final.items()})
    save_file(tensors, os.path.join(HERE, f"{variant}.safetensors"))

    meta = {
        "argv": clzoo_argv(variant),
        "losses": criterion.losses,
        "total_steps": EPOCHS,
        "steps_per_epoch": 1,
        "num_samples": BATCH,
        "repo": "facebookresearch/moco",
        "commit": commit,
        "atol": 1e-5,
        "dtype": str(dtype).replace("torch.", ""),
        "official": {
            "files": ["moco/builder.py", "main_moco.py"],
            "builder": f"moco.builder.MoCo(NarrowResNet18, dim={DIM}, K={K}, m={M}, T={T}, mlp={mlp})",
            "encoder": f"torchvision ResNet(BasicBlock, [2,2,2,2]), stem 64, stage widths {CHANNELS}",
            "args": {"lr": LR, "cos": cos, "schedule": schedule, "epochs": EPOCHS, "momentum": MOMENTUM, "weight_decay": WD,
                     "batch_size": BATCH, "moco_dim": DIM, "moco_k": K, "moco_m": M, "moco_t": T, "mlp": mlp},
            "lrs": lrs,
            "loop": "main_worker's `for epoch: adjust_learning_rate; train` with one batch per epoch, "
                    "3 epochs; main_moco.train and main_moco.adjust_learning_rate called as they are",
            "distributed": "1 gloo process (world_size 1), model in DistributedDataParallel",
            "patched": "torch.Tensor.cuda = identity (builder.py: torch.randperm(batch_size_all).cuda(), "
                       "labels .cuda()); main_moco.accuracy = zeros (its `correct[:k].view(-1)` raises on a "
                       "non-contiguous tensor in PyTorch >= 1.13; logging only, not used by the step); criterion built on CPU instead of .cuda(args.gpu); args.gpu None",
            "final_state": "as main_moco.train left it after the 3rd step: the key encoder has NOT had the "
                           "momentum update with the 3rd step's query weights (builder.py applies it at the "
                           "start of the next forward)",
            "views": "torch.randn(8, 3, 32, 32), Generator seed 1234, [step][0 = im_q, 1 = im_k]",
            "init_seed": SEED,
            "keys": "encoder_q.* -> backbone.* (fc.0/fc.2 -> projector.0/2), encoder_k.* -> momentum_*, "
                    "queue (dim, K) -> queue.queue transposed (K, dim), queue_ptr (1,) -> queue.ptr ()",
        },
    }
    with open(os.path.join(HERE, f"{variant}.json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
    print(json.dumps({"losses": meta["losses"], "lrs": lrs, "tensors": len(tensors)}))


if __name__ == "__main__":
    main()
