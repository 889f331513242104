"""Run by test_train_distributed.py (and, with the argument `methods5`, test_train_distributed5.py), once as
a plain single process and once under `accelerate launch --multi_gpu --num_processes 2` (gloo on CPU).
Every process takes its slice of the same global batch; the outputs are saved (rank 0) for the test to
compare between the two runs."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from training.data.synthetic import render  # noqa: E402
from training.data.transforms import build_views  # noqa: E402
from training.methods import TrainInfo  # noqa: E402
from training.methods.instdisc import InstDisc  # noqa: E402
from training.methods.invaspread import InvaSpread  # noqa: E402
from training.methods.mocov1 import MoCo  # noqa: E402
from training.modules.dist import gather, gather_no_grad, rank, world_size  # noqa: E402
from training.modules.losses import nt_xent  # noqa: E402

N = 8  # global batch


class Flat(nn.Module):
    """A BatchNorm-free encoder, so that one process on the global batch is the exact reference."""

    def __init__(self, dim=16):
        super().__init__()
        self.num_features = dim
        self.fc = nn.Linear(3 * 8 * 8, dim)

    def forward(self, x):
        return self.fc(F.adaptive_avg_pool2d(x, 8).flatten(1))


def averaged_grads(model):  # what DDP does: mean of the per-process gradients
    grads = []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        g = p.grad.clone()
        if world_size() > 1:
            dist.all_reduce(g)
            g /= world_size()
        grads.append(g)
    return grads


def mean_over_processes(x):
    return gather_no_grad(x.detach()[None]).mean()


def methods5(out, out_path, sl, W):
    """Barlow Twins (global BN + cross-correlation), SwAV (distributed Sinkhorn), DINO (all-reduced center)
    and MoCo v3 (gathered keys): two optimizer steps each with DDP-averaged gradients, BN-free heads."""
    from training.methods.barlowtwins import BarlowTwins
    from training.methods.dino import DINO
    from training.methods.mocov3 import MoCoV3
    from training.methods.swav import SwAV
    from training.modules.momentum import momentum_copy

    info = TrainInfo(num_samples=4 * N, total_steps=4, steps_per_epoch=2, global_batch=N, seed=0)

    def views_of(seed, n_local):
        g = torch.Generator().manual_seed(seed)
        v = [torch.randn(N, 3, 16, 16, generator=g) for _ in range(2)]
        v += [torch.randn(N, 3, 8, 8, generator=g) for _ in range(n_local)]
        return {"views": [t[sl] for t in v], "index": torch.arange(N)[sl]}

    def two_steps(name, method, n_local):
        params = [p for p in method.parameters() if p.requires_grad]
        opt = torch.optim.SGD(params, lr=0.5)
        losses = []
        for step in range(2):
            loss, _ = method(views_of(40 + step, n_local), step)
            loss.backward()
            grads = averaged_grads(method)
            for p, g in zip(params, grads):
                p.grad = g
            if hasattr(method, "before_optimizer_step"):
                method.before_optimizer_step(step)
            if step == 0:
                out[f"{name}_grads"] = [p.grad.clone() if p.grad is not None else None for p in params]
            opt.step()
            opt.zero_grad()
            method.after_optimizer_step(step)
            losses.append(mean_over_processes(loss))
        out[f"{name}_losses"], out[f"{name}_state"] = losses, method.state_dict()

    torch.manual_seed(4)
    two_steps("barlow", BarlowTwins(Flat(), info, lambd=0.05, proj_dims=(12,), grad_scale="invariant"), 0)
    torch.manual_seed(4)
    two_steps("barlow_official", BarlowTwins(Flat(), info, lambd=0.05, proj_dims=(12,)), 0)
    torch.manual_seed(5)
    swav = SwAV(Flat(), info, dim=8, hidden_mlp=0, nmb_prototypes=6, freeze_prototypes_epochs=0.5)
    two_steps("swav", swav, 2)
    torch.manual_seed(6)
    dino = DINO(Flat(), info, out_dim=10, hidden_dim=16, bottleneck_dim=8, freeze_last_layer=0)
    two_steps("dino", dino, 2)
    torch.manual_seed(7)
    moco = MoCoV3(Flat(), info, tau=0.2, m=0.9, dim=8, mlp_dim=16)
    moco.projector, moco.predictor = nn.Linear(16, 8), nn.Linear(8, 8)  # BN-free heads: exact reference
    moco.momentum_projector = momentum_copy(moco.projector)
    two_steps("mocov3", moco, 0)

    if W > 1:  # the trainer itself: DINO's center and per-parameter clipping under DDP
        from training import pretrain
        rc = pretrain.main(["--method", "dino", "--model", "test_resnet", "--image-size", "32", "--batch-size", "16",
                            "--max-steps", "2", "--data-args.num_samples", "64", "--knn.every", "0",
                            "--hparams.out_dim", "64", "--hparams.hidden_dim", "32", "--aug.local_views", "2",
                            "--aug.local_size", "16", "--model-args", "{}",
                            "--output", os.path.join(os.path.dirname(out_path), "dino")])
        assert rc == 0


def main(out_path, group="contrastive"):
    from accelerate import Accelerator
    acc = Accelerator()
    W, r = acc.num_processes, acc.process_index
    assert W == world_size() and r == rank()
    B = N // W
    sl = slice(r * B, (r + 1) * B)
    out = {"world_size": W}
    if group == "methods5":
        methods5(out, out_path, sl, W)
        if r == 0:
            torch.save(out, out_path)
        acc.wait_for_everyone()
        return

    # Views: the same per-sample views whatever the number of processes.
    images = render(torch.arange(N), 32)
    views = build_views("simclr", 32, seed=1)(images[sl], torch.arange(N)[sl], 0)
    out["views"] = [gather_no_grad(v) for v in views["views"]]

    # SimCLR negatives gathered with gradient.
    torch.manual_seed(0)
    head = nn.Linear(12, 6).double()
    x1, x2 = torch.randn(N, 12, dtype=torch.float64), torch.randn(N, 12, dtype=torch.float64)
    z1, z2 = F.normalize(head(x1[sl]), dim=1), F.normalize(head(x2[sl]), dim=1)
    loss = nt_xent(z1, z2, 0.2, gather(z1), gather(z2), offset=r * B)
    loss.backward()
    out["simclr_loss"], out["simclr_grads"] = mean_over_processes(loss), averaged_grads(head)

    def batch_of(seed):
        g = torch.Generator().manual_seed(seed)
        v = [torch.randn(N, 3, 16, 16, generator=g) for _ in range(2)]
        return {"views": [t[sl] for t in v], "index": torch.arange(N)[sl] * 3}

    # InvaSpread (one encoder, in-batch negatives, detached weight side).
    torch.manual_seed(1)
    inva = InvaSpread(Flat(), tau=0.1)
    loss, _ = inva(batch_of(10), 0)
    loss.backward()
    out["inva_loss"], out["inva_grads"] = mean_over_processes(loss), averaged_grads(inva)

    # MoCo: queue and momentum encoder, shuffle-BN across processes; two optimizer steps.
    torch.manual_seed(2)
    moco = MoCo(Flat(), tau=0.2, K=32, m=0.9, dim=8, mlp=True)
    opt = torch.optim.SGD([p for p in moco.parameters() if p.requires_grad], lr=0.5)
    moco_losses = []
    for step in range(2):
        loss, _ = moco(batch_of(20 + step), step)
        loss.backward()
        for p, g in zip([p for p in moco.parameters() if p.requires_grad], averaged_grads(moco)):
            p.grad = g
        opt.step()
        opt.zero_grad()
        moco.after_optimizer_step(step)
        moco_losses.append(mean_over_processes(loss))
    out["moco_losses"], out["moco_state"] = moco_losses, moco.state_dict()

    # InstDisc: the memory bank is updated with the features and indices of every process.
    torch.manual_seed(3)
    info = TrainInfo(num_samples=30, total_steps=1, steps_per_epoch=1, global_batch=N, seed=0)
    inst = InstDisc(Flat(), info, K=5, dim=8)
    loss, _ = inst({"views": batch_of(30)["views"][:1], "index": batch_of(30)["index"]}, 0)
    inst.after_optimizer_step(0)
    out["bank"], out["Z"], out["inst_loss"] = inst.bank.bank.clone(), inst.Z.clone(), mean_over_processes(loss)

    if W > 1:  # the trainer itself under 2 processes
        from training import pretrain
        for method in ("simclr", "mocov2", "instdisc"):
            extra = ["--hparams.K", "32"] if method != "simclr" else []
            rc = pretrain.main(["--method", method, "--model", "test_resnet", "--image-size", "32", "--batch-size", "16",
                                "--max-steps", "2", "--data-args.num_samples", "64", "--knn.every", "0", *extra,
                                "--output", os.path.join(os.path.dirname(out_path), method)])
            assert rc == 0, method
    if r == 0:
        torch.save(out, out_path)
    acc.wait_for_everyone()
    if W > 1:  # an orderly gloo shutdown: exiting with a live group aborted once ("terminate called without an
        dist.destroy_process_group()  # active exception", SIGABRT after all runs had finished)


if __name__ == "__main__":
    main(*sys.argv[1:])
