"""Writes deepclusterv2.safetensors + deepclusterv2.json: 3 optimizer steps of the official DeepCluster-v2
trainer (facebookresearch/swav main_deepclusterv2.py: its own `init_memory`, `train` (with `cluster_memory`'s
spherical k-means at each epoch start, the cross-entropy on the assignments of every crop, the memory update
after each step), src/resnet50.py `ResNet` with `MultiPrototypes`, apex `LARC`), in the format of
tests/training/step_parity.py.

    (the SwAV and apex sources as for gen_swav.py; scipy, which main_deepclusterv2.py imports, on PYTHONPATH)
    python tests/data/step_parity/gen_deepclusterv2.py /tmp/swav_src COMMIT /tmp/apex_LARC.py APEX_COMMIT [float32|float64] [OUT_DIR]

Nothing of the official code lives in this repository. Run in the project venv, on CPU, in one gloo process.
The network, its stem and the LARC loading are gen_swav.py's; 3 prototype heads of 6, 5 and 4 clusters,
16 images (2 batches of 8), crops 2 x 32 px + 2 x 16 px.

The official run: init_memory (a no-gradient pass over the 16 images, its own views), then train(epoch 0):
cluster_memory, 2 steps; train(epoch 1): cluster_memory on the memory that epoch 0 updated, 1 step.
clzoo's DeepClusterV2 fills its memory in a first epoch of its own (every gradient cancelled) and clusters at
the end of each epoch, so official epoch e is clzoo's epoch e + 1: the fixture's init/ is the official state
right after epoch 0's cluster_memory (weights after init_memory's BN updates, the memory, the assignments,
the centroids as prototypes), and its steps are clzoo's global steps 2, 3, 4 ("first_step" 2); clzoo's k-means
after step 3 is compared with the official cluster_memory of epoch 1. The k-means starts from random memory
rows: `torch.randperm` in cluster_memory is given clzoo's counter-based generator for (seed, 3000, clzoo
epoch, head), the one draw two implementations cannot otherwise share. The lr is constant (base_lr =
final_lr, no warmup): clzoo's memory-filling epoch takes one epoch of its schedule (see README), which a
constant schedule makes immaterial here. The prototypes are frozen, as in the released recipe.

float64 (the default; `float32` writes the other): the projector's first bias feeds a BatchNorm, so its
gradient is rounding noise, which LARC's trust ratio ||w|| / (||g|| + wd ||w||) scales up to a real step; in
float32 that bias lands 1.1e-4 away (clzoo vs official, the same in SwAV's float32 runs), in float64 both
sides agree.
"""

from __future__ import annotations

import json
import os
import sys

import torch
import torch.nn as nn
from safetensors.torch import save_file

from recording import loss_recording_meter

from gen_swav import _stub_modules, widen_stem

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
BATCH, N, SIZES, NMB_CROPS, ITERS, EPOCHS = 8, 16, (32, 16), (2, 2), 2, 4
LAYERS, WIDTH, STEM, HIDDEN, DIM, KS = [1, 1, 1, 1], 16, 64, 32, 16, [6, 5, 4]
LR, WD, SEED, PORT = 4.8, 1e-6, 0, 29535


def clzoo_argv() -> list:
    return ["--method", "deepclusterv2", "--model", "resnet50", "--model-args.layers", json.dumps(LAYERS),
            "--model-args.channels", json.dumps([WIDTH * 2 ** i for i in range(4)]),
            "--model-args.base_width", str(WIDTH), "--image-size", str(SIZES[0]), "--batch-size", str(BATCH),
            "--epochs", str(EPOCHS + 1), "--seed", str(SEED), "--lr", repr(LR * 256 / BATCH), "--min-lr", repr(LR),
            "--warmup-epochs", "0", "--weight-decay", repr(WD), "--sync-bn", "false", "--mixed-precision", "no",
            "--channels-last", "false", "--aug.local_views", str(NMB_CROPS[1]), "--aug.local_size", str(SIZES[1]),
            "--hparams.dim", str(DIM), "--hparams.hidden_mlp", str(HIDDEN),
            "--hparams.nmb_prototypes", json.dumps(KS), "--hparams.kmeans_iters", "10"]


class Loader:
    """An epoch of the 16 images: len() batches, yielding (index, crops) as MultiCropDataset's loader does
    (only the first `stop` of them: the fixture ends in epoch 1)."""

    def __init__(self, batches, stop=None):
        self.batches, self.stop, self.dataset = batches, stop, list(range(N))

    def __len__(self):
        return len(self.batches)

    def __iter__(self):
        return iter(self.batches[:self.stop])


def clzoo_state(model, memory, assignments) -> dict:
    out = {}
    for k, v in model.state_dict().items():
        if k.startswith("projection_head."):
            out["projector." + k[len("projection_head."):]] = v
        elif k.startswith("prototypes.prototypes"):
            out["prototypes." + k[len("prototypes.prototypes"):]] = v
        else:
            out["backbone." + k] = v
    out["memory"], out["filled"], out["assignments"] = memory, torch.ones(N, dtype=torch.bool), assignments
    return {k: v.detach().clone().contiguous() for k, v in out.items()}


def main():
    src, commit, larc_file, apex_commit = os.path.abspath(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    dtype_name = sys.argv[5] if len(sys.argv) > 5 else "float64"
    out_dir = sys.argv[6] if len(sys.argv) > 6 else HERE
    dtype = getattr(torch, dtype_name)
    torch.set_default_dtype(dtype)  # init_memory's and cluster_memory's own buffers (torch.zeros / empty)
    _stub_modules(larc_file)
    sys.path.insert(0, src)
    sys.path.insert(1, REPO)
    import main_deepclusterv2 as dc
    import src.resnet50 as resnet_models

    from training.data.rng import generator

    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{PORT}", rank=0, world_size=1)
    args = dc.parser.parse_args([
        "--nmb_crops", *map(str, NMB_CROPS), "--size_crops", *map(str, SIZES), "--crops_for_assign", "0", "1",
        "--temperature", "0.1", "--feat_dim", str(DIM), "--nmb_prototypes", *map(str, KS),
        "--epochs", str(EPOCHS), "--batch_size", str(BATCH), "--base_lr", str(LR), "--final_lr", str(LR),
        "--wd", str(WD), "--warmup_epochs", "0", "--hidden_mlp", str(HIDDEN), "--sync_bn", "none"])
    args.world_size, args.rank = 1, 0
    dc.args = args

    torch.manual_seed(SEED)
    model = resnet_models.ResNet(resnet_models.Bottleneck, LAYERS, width_per_group=WIDTH, normalize=True,
                                 hidden_mlp=HIDDEN, output_dim=DIM, nmb_prototypes=list(KS))
    widen_stem(model, STEM)
    model = model.to(dtype)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.base_lr, momentum=0.9, weight_decay=args.wd)
    optimizer = dc.LARC(optimizer=optimizer, trust_coefficient=0.001, clip=False)
    lr_schedule = [args.base_lr] * (ITERS * args.epochs)  # main(): warmup 0, cosine from base_lr to final_lr = base_lr
    model = nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)

    gen = torch.Generator().manual_seed(1234)

    def crops():
        return [torch.randn(BATCH, 3, s, s, generator=gen).to(dtype) for s, n in zip(SIZES, NMB_CROPS) for _ in range(n)]

    index = [torch.arange(b * BATCH, (b + 1) * BATCH) for b in range(ITERS)]
    init_views = [(index[b], crops()) for b in range(ITERS)]
    steps = [(index[0], crops()), (index[1], crops()), (index[0], crops())]  # epoch 0: 2 batches; epoch 1: 1

    # cluster_memory: its randperm from clzoo's generator; the state after epoch 0's clustering is init/
    states, kmeans = [], {"epoch": 0, "head": 0}
    randperm, cluster_memory = torch.randperm, dc.cluster_memory

    def clzoo_randperm(n, *a, **k):
        g = generator(SEED, 3000, kmeans["epoch"] + 1, kmeans["head"])
        kmeans["head"] += 1
        return randperm(n, generator=g)

    def recording_cluster_memory(model, local_memory_index, local_memory_embeddings, size_dataset, *a, **k):
        kmeans["head"] = 0
        torch.randperm = clzoo_randperm
        try:
            assignments = cluster_memory(model, local_memory_index, local_memory_embeddings, size_dataset, *a, **k)
        finally:
            torch.randperm = randperm
        assert torch.equal(local_memory_index.cpu(), torch.arange(N)), local_memory_index  # rows = dataset order
        states.append(clzoo_state(model.module, local_memory_embeddings, assignments))
        kmeans["epoch"] += 1
        return assignments

    dc.cluster_memory = recording_cluster_memory
    losses = []

    dc.AverageMeter = loss_recording_meter(dc.AverageMeter, losses)
    torch.Tensor.cuda = lambda self, *a, **k: self
    local_memory_index, local_memory_embeddings = dc.init_memory(Loader(init_views), model)
    local_memory_embeddings = local_memory_embeddings.to(dtype)
    for epoch, (first, last) in enumerate(((0, 2), (2, 3))):
        batches = steps[first:last] + ([steps[2]] if epoch == 1 else [])  # epoch 1 has 2 batches, 1 taken
        _, local_memory_index, local_memory_embeddings = dc.train(
            Loader(batches, stop=last - first), model, optimizer, epoch, lr_schedule, local_memory_index,
            local_memory_embeddings)
    torch.distributed.destroy_process_group()
    assert len(losses) == 3 and len(states) == 2, (losses, len(states))
    init = states[0]
    final = clzoo_state(model.module, local_memory_embeddings, states[1]["assignments"])

    tensors = {f"init/{k}": v for k, v in init.items()}
    for s, (idx, views) in enumerate(steps):
        tensors[f"index/{s}"] = idx.clone()
        for i, v in enumerate(views):
            tensors[f"views/{s}/{i}"] = v.contiguous()
    tensors.update({f"final/{k}": v for k, v in final.items()})
    save_file(tensors, os.path.join(out_dir, "deepclusterv2.safetensors"))
    meta = {
        "argv": clzoo_argv(),
        "losses": losses,
        "total_steps": (EPOCHS + 1) * ITERS,
        "steps_per_epoch": ITERS,
        "first_step": ITERS,
        "num_samples": N,
        "repo": "facebookresearch/swav",
        "commit": commit,
        "atol": 1e-5,
        "dtype": dtype_name,
        "official": {
            "files": ["main_deepclusterv2.py", "src/resnet50.py", "src/utils.py (AverageMeter)",
                      f"NVIDIA/apex @ {apex_commit} apex/parallel/LARC.py"],
            "model": f"src.resnet50.ResNet(Bottleneck, {LAYERS}, width_per_group={WIDTH}, normalize=True, "
                     f"hidden_mlp={HIDDEN}, output_dim={DIM}, nmb_prototypes={KS}); stem widened to {STEM} "
                     f"channels as in gen_swav.py",
            "args": {k: v for k, v in vars(args).items() if not k.startswith(("dump", "data", "dist"))},
            "loop": "init_memory(loader), train(epoch 0, 2 batches), train(epoch 1, first of 2 batches), as "
                    "main() calls them; before them main()'s SGD + LARC + DDP(find_unused_parameters) set-up; "
                    "lr constant (warmup 0, final_lr = base_lr)",
            "distributed": "1 gloo process (world_size 1), DistributedDataParallel",
            "patched": "the stem's width; stub apex (LARC from its file) and pandas; torch.Tensor.cuda = "
                       "identity; main_deepclusterv2.args set; cluster_memory wrapped to record the state after "
                       "each clustering, with torch.randperm seeded by clzoo's generator(seed, 3000, epoch + 1, "
                       "head); AverageMeter subclassed to record each step's loss",
            "mapping": "official epoch e = clzoo epoch e + 1 (clzoo's epoch 0 fills the memory); init/ = the "
                       "state after epoch 0's cluster_memory; clzoo's steps 2, 3, 4",
            "keys": "conv1/bn1/layerN.* -> backbone.*, projection_head.* -> projector.*, "
                    "prototypes.prototypesH -> prototypes.H, local_memory_embeddings -> memory (rows in "
                    "dataset order: local_memory_index = arange), assignments, filled (all True)",
            "views": "torch.randn per crop, Generator seed 1234: init_memory's 2 batches first (not saved), "
                     "then [step][0, 1 = 32 px, 2, 3 = 16 px]; index/<step> the batch's image indices",
            "init_seed": SEED,
        },
    }
    with open(os.path.join(out_dir, "deepclusterv2.json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
    print(json.dumps({"losses": losses, "tensors": len(tensors)}))


if __name__ == "__main__":
    main()
