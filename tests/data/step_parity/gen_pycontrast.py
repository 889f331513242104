"""Writes infomin.* and pirl.* (.safetensors + .json): 3 optimizer steps of the official PyContrast trainer
(HobbitLong/PyContrast, `--method InfoMin` and `--method PIRL`: main_contrast.py main_worker's model / memory
/ criterion / optimizer, ContrastTrainer.adjust_learning_rate and ContrastTrainer.train itself: `_train_moco`
with RGBMultiHeads, JigsawHead, RGBMoCo, shuffle-BN and momentum_update for InfoMin, `_train_mem` with
RGBMultiHeads ('linear') and the RGBMem memory bank for PIRL), in the format of tests/training/step_parity.py.

    git --git-dir=MIRROR archive COMMIT | tar -x -C /tmp/pyc
    python tests/data/step_parity/gen_pycontrast.py /tmp/pyc COMMIT [float64|float32] [OUT_DIR] [infomin|pirl]

pycontrast/ is imported from that extracted copy (argv[1]); nothing of it lives in this repository. Run in the
project venv, on CPU, in one gloo process (the official trainer is DDP-only).

What is set instead of the InfoMin defaults, and why:
- the network: `resnet50` at width 0.125 (RGBSingleHead._parse_width is given 0.125 for the name; the
  official ResNet keeps a 64-wide stem, `max(int(64 * width), 64)`, and stages 8-16-32-64, 256 features, which
  is timm's `resnet50 --model-args.channels [8, 16, 32, 64]`); the heads are InfoMin's ('mlp', feat_dim 128).
- InfoMin: nce_k 24 (3 batches of 8: the queue is full after step 2, and its pointer wraps). PIRL: nce_k 16
  noise entries of a 32-image bank, each step's 8 indices drawn at random. Batch 8, 32 px views, 16 px
  jigsaw patches.
- PIRL's noise indices: RGBMem draws them from AliasMethod over a uniform distribution; its `draw` is given
  clzoo's counter-based draw for (seed, 2, step, 0) per sample (training/modules/memory_bank.py `sample`),
  the one random draw two implementations cannot otherwise share.
- the CUDA calls: `Tensor.cuda` returns the tensor (the official code moves every index / label tensor to
  the GPU); in a float64 run `Tensor.float` keeps float64 (_train_moco casts its inputs with `.float()`); `tensorboard_logger` is a stub (imported, unused in the loop); DDP without device_ids.
- epochs 10 with one batch per epoch, cosine (lr 0.03, eta_min lr x 0.1^3, per epoch, evaluated at epochs
  1..10), no warm-up (batch <= 256): the 3 steps are epochs 1, 2, 3, clzoo's steps 1, 2, 3 of 10 (the JSON's
  "first_step"; PyContrast's first epoch already runs at cos(pi / epochs), see README).
- the jigsaw shuffle: JigsawHead draws its patch order with torch.randperm inside the forward; the generator
  records it and writes the patches in that order (clzoo's views carry the shuffle; the head's fc1 acts on
  each patch alone, so shuffling before it is the same function).
- float64 (the default; `float32` writes the other): see the JSON and README for the official code's own
  float32 rounding.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import types

import torch
from safetensors.torch import save_file

from recording import detached, generator_args

BATCH, SIZE, PATCH, STEPS, EPOCHS = 8, 32, 16, 3, 10
WIDTH, BETA, LR, WD = 0.125, 0.5, 0.03, 1e-4
SEED, VIEW_SEED, PORT = 0, 1234, 29531
CHANNELS = [8, 16, 32, 64]
HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
# PyContrast's override_dict entries (options/base_options.py) and the sizes set here
METHODS = {
    "infomin": dict(method="InfoMin", modal="RGB", jigsaw=True, mem="moco", aug="D", head="mlp", nce_t=0.15,
                    nce_k=24, alpha=0.999, num_samples=BATCH),
    "pirl": dict(method="PIRL", modal="RGB", jigsaw=True, mem="bank", aug="A", head="linear", nce_t=0.07,
                 nce_k=16, nce_m=0.5, num_samples=32),
}


def clzoo_argv(name: str) -> list:
    o = METHODS[name]
    argv = ["--method", name, "--model", "resnet50", "--model-args.channels", json.dumps(CHANNELS),
            "--image-size", str(SIZE), "--batch-size", str(BATCH), "--epochs", str(EPOCHS), "--seed", str(SEED),
            "--lr", str(LR), "--lr-scaling", "none", "--min-lr", repr(LR * 0.1 ** 3), "--warmup-epochs", "0",
            "--weight-decay", str(WD), "--mixed-precision", "no", "--channels-last", "false",
            "--hparams.K", str(o["nce_k"]), "--hparams.tau", str(o["nce_t"])]
    if name == "infomin":
        return argv + ["--hparams.m", str(o["alpha"]), "--hparams.beta", str(BETA)]
    return argv + ["--hparams.m", str(o["nce_m"]), "--hparams.lambd", str(BETA), "--hparams.loss", "softmax",
                   "--hparams.decay_bias_and_norm", "true"]


def clzoo_state(model, model_ema, contrast) -> dict:
    """PyContrast's names as clzoo's: encoder -> backbone, head -> projector (InfoMin) / image_head (PIRL),
    head_jig -> jigsaw_head (a 'linear' fc1 as MLPHead's fc1.0); InfoMin's momentum encoder's encoder / head ->
    momentum_backbone / momentum_projector (its head_jig, never used, is left out), RGBMoCo's memory and
    pointer -> queue.queue / queue.ptr; PIRL's RGBMem memory -> bank.bank, with clzoo's NCE normaliser Z at
    its "not estimated" value (the softmax loss never reads it)."""
    out = {}
    head = "projector." if model_ema is not None else "image_head."
    renames = {"encoder.": "backbone.", "head.": head, "head_jig.fc1.weight": "jigsaw_head.fc1.0.weight",
               "head_jig.fc1.bias": "jigsaw_head.fc1.0.bias", "head_jig.": "jigsaw_head."}
    for k, v in model.state_dict().items():
        new = next(n + k[len(o):] for o, n in renames.items() if k.startswith(o))
        out[new] = v
    if model_ema is None:
        out["bank.bank"] = contrast.memory
        out["Z"] = torch.tensor([-1.0, -1.0], dtype=contrast.memory.dtype)
        return detached(out)
    for k, v in model_ema.state_dict().items():
        if k.startswith("encoder."):
            out["momentum_backbone." + k[len("encoder."):]] = v
        elif k.startswith("head."):
            out["momentum_projector." + k[len("head."):]] = v
    out["queue.queue"] = contrast.memory
    out["queue.ptr"] = torch.tensor(contrast.index, dtype=torch.long)
    return detached(out)


def main():
    src, commit, dtype_name, out_dir, dtype = generator_args()
    name = sys.argv[5] if len(sys.argv) > 5 else "infomin"
    spec = dict(METHODS[name])
    n_data = spec.pop("num_samples")
    sys.modules["tensorboard_logger"] = types.ModuleType("tensorboard_logger")
    sys.path.insert(0, os.path.join(src, "pycontrast"))
    from learning.contrast_trainer import ContrastTrainer
    from memory.build_memory import build_mem
    from networks import build_backbone

    torch.Tensor.cuda = lambda self, *a, **k: self  # CPU: every .cuda() in the official loop is a no-op
    if dtype != torch.float32:  # _train_moco casts its inputs with .float(): keep the run's dtype
        to_float = torch.Tensor.float
        torch.Tensor.float = lambda self, *a, **k: self.to(dtype) if self.is_floating_point() else to_float(self)
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{PORT}", rank=0, world_size=1)
    args = argparse.Namespace(
        **spec, arch="resnet50", feat_dim=128, beta=BETA, learning_rate=LR, lr_decay_rate=0.1, cosine=True,
        epochs=EPOCHS, warm=False, momentum=0.9, weight_decay=WD, amp=False, batch_size=BATCH, gpu=0,
        local_rank=0, node_rank=0, ngpus_per_node=1, rank=0, world_size=1, print_freq=10 ** 9)
    build_backbone.RGBSingleHead._parse_width = staticmethod(lambda name: (name, WIDTH))

    torch.manual_seed(SEED)
    # main_worker, in its order
    model, model_ema = build_backbone.build_model(args)
    contrast = build_mem(args, n_data)
    criterion = torch.nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=args.learning_rate, momentum=args.momentum,
                                weight_decay=args.weight_decay)
    model, contrast = model.to(dtype), contrast.to(dtype)
    trainer = ContrastTrainer(args)
    trainer.local_group = torch.distributed.group.WORLD
    model = torch.nn.parallel.DistributedDataParallel(model)  # wrap_up, without amp / device_ids
    if model_ema is not None:
        model_ema = model_ema.to(dtype)
        trainer.momentum_update(model.module, model_ema, 0)
    init = clzoo_state(model.module, model_ema, contrast)

    shuffles = []
    draw = model.module.head_jig.get_shuffle_ids

    def recorded_shuffle(bsz):
        ids = draw(bsz)
        shuffles.append(ids.clone())
        return ids

    model.module.head_jig.get_shuffle_ids = recorded_shuffle

    gen = torch.Generator().manual_seed(VIEW_SEED)
    batches = []
    views = 2 if model_ema is not None else 1
    for _ in range(STEPS):
        inputs = torch.randn(BATCH, 3 * views, SIZE, SIZE, generator=gen).to(dtype)  # InfoMin: x1, x2 along C
        jig = torch.randn(BATCH, 9, 3, PATCH, PATCH, generator=gen).to(dtype)
        index = torch.randperm(n_data, generator=gen)[:BATCH] if model_ema is None else torch.arange(BATCH)
        batches.append((inputs, index, jig))

    if model_ema is None:  # PIRL: the bank's noise from clzoo's counter-based draw (module docstring)
        sys.path.insert(1, REPO)
        from training.data.rng import randint
        draws = iter(range(1, STEPS + 1))  # clzoo's global steps 1, 2, 3

        def clzoo_draw(n):  # idx = draw(B (K + 1)).view(B, -1); column 0 is then overwritten with the positive
            step = next(draws)
            index = batches[step - 1][1]
            noise = randint(index, args.nce_k, n_data, SEED, 2, step, 0)
            return torch.cat((index[:, None], noise), 1).flatten()

        contrast.multinomial.draw = clzoo_draw

    losses, lrs = [], []
    for epoch in range(1, STEPS + 1):
        trainer.adjust_learning_rate(optimizer, epoch)  # main_worker's epoch loop
        lrs.append(optimizer.param_groups[0]["lr"])
        loss_image, _, loss_jigsaw, _ = trainer.train(epoch, [batches[epoch - 1]], model, model_ema, contrast,
                                                      criterion, optimizer)
        losses.append((1 - BETA) * loss_image + BETA * loss_jigsaw)  # train's `loss`
    final = clzoo_state(model.module, model_ema, contrast)
    torch.distributed.destroy_process_group()

    tensors = {f"init/{k}": v for k, v in init.items()}
    for s, (inputs, index, jig) in enumerate(batches):
        for i, x in enumerate(torch.split(inputs, 3, dim=1)):
            tensors[f"views/{s}/{i}"] = x.contiguous()
        ids = shuffles[s]  # into the flattened (B x 9) patches, image by image
        tensors[f"jigsaw/{s}"] = jig.flatten(0, 1)[ids].view_as(jig).contiguous()
        tensors[f"index/{s}"] = index
    tensors.update({f"final/{k}": v for k, v in final.items()})
    save_file(tensors, os.path.join(out_dir, f"{name}.safetensors"))
    loop = ("_train_moco (shuffle-BN key, RGBMultiHeads query and jigsaw query, RGBMoCo logits and enqueue, "
            "(1 - beta) CE + beta CE, SGD step, momentum_update)" if model_ema is not None else
            "_train_mem (RGBMultiHeads image and jigsaw embeddings, RGBMem logits over the positive's entry "
            "and K noise entries, its momentum update of the bank, (1 - beta) CE + beta CE, SGD step)")
    meta = {
        "argv": clzoo_argv(name),
        "losses": losses,
        "total_steps": EPOCHS,
        "steps_per_epoch": 1,
        "first_step": 1,
        "num_samples": n_data,
        "repo": "HobbitLong/PyContrast",
        "commit": commit,
        "atol": 1e-5,
        "dtype": dtype_name,
        "official": {
            "files": ["pycontrast/main_contrast.py", "pycontrast/learning/contrast_trainer.py",
                      "pycontrast/learning/base_trainer.py", "pycontrast/networks/build_backbone.py",
                      "pycontrast/networks/resnet.py", "pycontrast/networks/util.py",
                      "pycontrast/memory/mem_moco.py" if model_ema is not None else "pycontrast/memory/mem_bank.py"],
            "args": vars(args),
            "width": WIDTH,
            "lrs": lrs,
            "loop": "main_worker's epoch loop for epochs 1, 2, 3 (one batch each): adjust_learning_rate, "
                    "ContrastTrainer.train -> " + loop,
            "distributed": "1 gloo process (world_size 1), DistributedDataParallel, the WORLD group as the "
                           "shuffle-BN local group",
            "patched": "Tensor.cuda -> identity; Tensor.float -> the run's dtype (float64 runs); "
                       f"tensorboard_logger stubbed; RGBSingleHead._parse_width -> width {WIDTH}; "
                       "JigsawHead.get_shuffle_ids wrapped to record its draws"
                       + ("" if model_ema is not None else "; RGBMem.multinomial.draw = clzoo's noise draw"),
            "not_compared": "the momentum encoder's head_jig (updated by momentum_update, never used)"
                            if model_ema is not None else "nothing",
            "views": f"torch.randn(8, {3 * views}, 32, 32) (InfoMin: x1 = channels 0-2, x2 = 3-5), "
                     f"randn(8, 9, 3, 16, 16) jigsaw patches, Generator seed {VIEW_SEED} (PIRL: then the "
                     "step's indices, randperm(32)[:8]); jigsaw/<step> holds the patches in the official "
                     "head's shuffled order",
            "init_seed": SEED,
        },
    }
    with open(os.path.join(out_dir, f"{name}.json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
    print(json.dumps({"losses": losses, "lrs": lrs, "tensors": len(tensors)}))


if __name__ == "__main__":
    main()
