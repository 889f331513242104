"""Shared pieces: queue, memory bank, EMA, LARS, schedules, heads, split BN, single-process gathers."""

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from training.modules.dist import gather, gather_no_grad, shuffle_bn_forward
from training.modules.heads import JigsawHead, MLPHead, SplitBatchNorm, convert_split_bn
from training.modules.memory_bank import MemoryBank
from training.modules.momentum import ema_update, momentum_copy
from training.modules.optim import (LARC, LARS, build_optimizer, cosine_schedule, scaled_lr, split_decay,
                                    step_schedule)
from training.modules.queue import Queue


def test_queue_fifo_wraps():
    q = Queue(5, 2)
    assert torch.allclose(q.queue.norm(dim=1), torch.ones(5))
    keys = torch.arange(14, dtype=torch.float32).view(7, 2)
    q.enqueue(keys[:3])
    q.enqueue(keys[3:7])  # 4 more: slots 3, 4, 0, 1
    assert int(q.ptr) == 2
    assert torch.equal(q.queue[[3, 4, 0, 1, 2]], keys[[3, 4, 5, 6, 2]])
    neg = q.negatives()
    neg += 1
    assert not torch.equal(neg, q.queue)  # a copy, as MoCo's queue.clone().detach()


def test_memory_bank_momentum_update():
    bank = MemoryBank(6, 3, generator=torch.Generator().manual_seed(0))
    stdv = 1 / math.sqrt(3 / 3)
    assert bank.bank.abs().max() <= stdv
    old = bank.bank.clone()
    f = F.normalize(torch.randn(2, 3), dim=1)
    bank.update(torch.tensor([4, 1]), f, m=0.5)
    expected = F.normalize(0.5 * old[[4, 1]] + 0.5 * f, dim=1)  # v <- norm(m v + (1 - m) f)
    assert torch.allclose(bank.bank[[4, 1]], expected)
    assert torch.equal(bank.bank[[0, 2, 3, 5]], old[[0, 2, 3, 5]])


@pytest.mark.parametrize("size", [20, 1000])  # 20: one product with the whole bank; 1000: the row gather
def test_memory_bank_similarities_are_the_indexed_dot_products(size):
    bank = MemoryBank(size, 8, generator=torch.Generator().manual_seed(0))
    v = torch.randn(3, 8, requires_grad=True)
    idx = torch.randint(0, size, (3, 5), generator=torch.Generator().manual_seed(1))
    s = bank.similarities(v, idx)
    expected = torch.stack([torch.stack([bank.bank[j] @ v[b] for j in idx[b]]) for b in range(3)])
    assert torch.allclose(s, expected, atol=1e-6)
    w = torch.randn(3, 5)
    (grad,) = torch.autograd.grad((s * w).sum(), v)
    assert torch.allclose(grad, torch.einsum("bj,bjd->bd", w, bank.bank[idx]), atol=1e-6)


def test_memory_bank_softmax_loss_by_hand():
    bank = MemoryBank(6, 4, generator=torch.Generator().manual_seed(0))
    v = F.normalize(torch.randn(2, 4, generator=torch.Generator().manual_seed(1)), dim=1)
    index, noise, tau = torch.tensor([3, 0]), torch.tensor([[1, 5, 5], [2, 3, 4]]), 0.5
    expected_sampled = expected_full = 0.0
    for b in range(2):
        own = float(bank.bank[index[b]] @ v[b]) / tau
        sampled = [own] + [float(bank.bank[j] @ v[b]) / tau for j in noise[b]]
        full = [float(bank.bank[j] @ v[b]) / tau for j in range(6)]
        expected_sampled += (math.log(sum(math.exp(x) for x in sampled)) - own) / 2
        expected_full += (math.log(sum(math.exp(x) for x in full)) - own) / 2
    assert bank.softmax_loss(v, index, tau, noise).item() == pytest.approx(expected_sampled, rel=1e-5)
    assert bank.softmax_loss(v, index, tau).item() == pytest.approx(expected_full, rel=1e-5)


def test_ema_update_parameters_only():
    online = nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3))
    target = momentum_copy(online)
    assert all(not p.requires_grad for p in target.parameters())
    with torch.no_grad():
        for p in online.parameters():
            p.add_(1.0)
    online.train()(torch.randn(8, 3))  # moves the online BN buffers
    before = [p.clone() for p in target.parameters()]
    ema_update(target, online, m=0.9)
    for b, t, o in zip(before, target.parameters(), online.parameters()):
        assert torch.allclose(t, 0.9 * b + 0.1 * o)
    assert torch.equal(target[1].running_mean, torch.zeros(3))  # buffers are not averaged


def test_lars_step_by_hand():
    w = nn.Parameter(torch.tensor([3.0, 4.0]))
    b = nn.Parameter(torch.tensor([1.0]))
    opt = LARS([{"params": [w], "lars": True}, {"params": [b], "lars": False, "weight_decay": 0.0}],
               lr=0.1, weight_decay=0.5, momentum=0.9, eta=0.001)
    w.grad, b.grad = torch.tensor([1.0, 0.0]), torch.tensor([2.0])
    opt.step()
    g = torch.tensor([1.0, 0.0]) + 0.5 * torch.tensor([3.0, 4.0])  # grad + wd * w
    q = 0.001 * 5.0 / g.norm()  # eta |w| / |g|
    assert torch.allclose(w.data, torch.tensor([3.0, 4.0]) - 0.1 * q * g)
    assert torch.allclose(b.data, torch.tensor([1.0 - 0.1 * 2.0]))  # plain SGD for the excluded group


def test_lars_lr_in_momentum_is_simclrs_tf_lars():
    """SimCLR's TF LARSOptimizer (lars_optimizer.py:106-115, classic_momentum): v <- m v + lr q g,
    w <- w - v. With a changing lr (warmup) it differs from the lr-outside form, w <- w - lr (m mu + q g)."""
    w0 = torch.tensor([3.0, 4.0])
    grads, lrs = [torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0])], [0.1, 0.3]
    out = {}
    for inside in (True, False):
        w = nn.Parameter(w0.clone())
        opt = LARS([{"params": [w], "lars": True}], weight_decay=0.0, momentum=0.9, eta=0.001, lr_in_momentum=inside)
        for g, lr in zip(grads, lrs):
            opt.param_groups[0]["lr"] = lr
            w.grad = g.clone()
            opt.step()
        out[inside] = w.detach().clone()
    v, w_ref, mu, w_out = torch.zeros(2), w0.clone(), torch.zeros(2), w0.clone()
    for g, lr in zip(grads, lrs):
        v = 0.9 * v + lr * (0.001 * w_ref.norm() / g.norm()) * g  # TF: trust ratio on the current weights
        w_ref = w_ref - v
        mu = 0.9 * mu + (0.001 * w_out.norm() / g.norm()) * g
        w_out = w_out - lr * mu
    torch.testing.assert_close(out[True], w_ref)
    torch.testing.assert_close(out[False], w_out)
    assert (out[True] - out[False]).abs().max() > 1e-5  # the two forms part at the lr change


def test_larc_step_by_hand():
    """apex LARC(clip=False) around SGD: trust ||w|| / (||g|| + wd ||w||) on g + wd w, then momentum SGD; a
    zero-norm weight (SwAV's zero-initialised residual BN) takes its raw gradient and no weight decay."""
    w = nn.Parameter(torch.tensor([3.0, 4.0]))
    z = nn.Parameter(torch.tensor([0.0, 0.0]))
    opt = LARC([{"params": [w, z], "weight_decay": 0.5}], lr=0.1, momentum=0.9, trust=0.001, eps=0.0)
    grads = [torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0])]
    w_ref, z_ref, mu_w, mu_z = torch.tensor([3.0, 4.0]), torch.tensor([0.0, 0.0]), 0.0, 0.0
    for g in grads:  # two steps: the momentum buffer carries the first
        w.grad, z.grad = g.clone(), g.clone()
        opt.step()
        rate = 0.001 * w_ref.norm() / (g.norm() + 0.5 * w_ref.norm())  # not ||g + wd w|| as in LARS
        mu_w = 0.9 * mu_w + rate * (g + 0.5 * w_ref)
        w_ref = w_ref - 0.1 * mu_w
        rate_z = 1.0 if z_ref.norm() == 0 else 0.001 * z_ref.norm() / (g.norm() + 0.5 * z_ref.norm())
        mu_z = 0.9 * mu_z + rate_z * (g + (0.5 * z_ref if z_ref.norm() > 0 else 0.0))
        z_ref = z_ref - 0.1 * mu_z
        assert torch.allclose(w.data, w_ref, atol=1e-7) and torch.allclose(z.data, z_ref, atol=1e-7)
    assert opt.param_groups[0]["weight_decay"] == 0.5  # restored after the wrapped SGD step


def test_param_groups_and_optimizer_flags():
    m = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    groups = split_decay(m)
    assert [p.ndim for p in groups[0]["params"]] == [2]
    assert len(groups[1]["params"]) == 3 and groups[1]["weight_decay"] is False and groups[1]["lars"] is False
    opt = build_optimizer(groups, "lars", weight_decay=1e-4)
    assert [g["wd_scale"] for g in opt.param_groups] == [1.0, 0.0]
    assert [g["lars"] for g in opt.param_groups] == [True, False]
    with pytest.raises(ValueError, match="unknown optimizer"):
        build_optimizer(groups, "adam", weight_decay=0)


def test_schedules():
    s = cosine_schedule(1.0, 0.1, total_steps=10, warmup_steps=2)
    assert len(s) == 10 and s[0] == 0.0 and s[1] == 0.5 and s[2] == 1.0
    assert s[-1] == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi * 7 / 8)))  # DINO: last value before 'final'
    assert np.all(np.diff(s[2:]) <= 0)
    # np.linspace warmup (DINO, SwAV): from the start lr, at the peak on the last warmup step
    s = cosine_schedule(4.8, 0.0048, total_steps=10, warmup_steps=3, start_warmup=0.3, warmup_endpoint=True)
    assert list(s[:4]) == pytest.approx([0.3, 2.55, 4.8, 4.8]) and s[-1] > 0.0048
    st = step_schedule(1.0, 10, [0.5], [0.1], warmup_steps=2, start_warmup=0.2)
    assert list(st[:3]) == pytest.approx([0.2, 0.6, 1.0]) and st[5] == pytest.approx(0.1)
    st = step_schedule(0.03, 200, [0.6, 0.8], [0.1, 0.01])
    assert st[119] == 0.03 and st[120] == pytest.approx(0.003) and st[160] == pytest.approx(0.0003)
    assert scaled_lr(0.3, 4096, "linear") == pytest.approx(4.8)
    assert scaled_lr(0.1, 4096, "sqrt") == pytest.approx(6.4)


def test_simclr_head_bn_placement():
    head = MLPHead(16, [16], 8, bn=True, last_bn=True)
    kinds = [type(m).__name__ for m in head]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d"]
    assert head[0].bias is None and head[3].bias is None and not head[4].affine
    assert [type(m).__name__ for m in MLPHead(16, [16], 8)] == ["Linear", "ReLU", "Linear"]


def test_jigsaw_head_concatenates_patches_in_order():
    head = JigsawHead(6, 4)
    x = torch.randn(2 * 9, 6)
    out = head(x)
    manual = head.fc2(head.fc1(x).reshape(2, 36))
    assert torch.allclose(out, manual) and out.shape == (2, 4)


@pytest.mark.parametrize("shape", [(8, 3, 4, 4), (12, 5)])
def test_split_batchnorm_equals_per_process_bn(shape):
    """bn_splits S in one process = S processes with their own BN on contiguous slices (the trainer's
    per-process slices): outputs, gradients and the running statistics averaged over the processes."""
    torch.manual_seed(0)
    x = torch.randn(*shape) * 3 + 1
    bn = nn.BatchNorm2d(shape[1]) if len(shape) == 4 else nn.BatchNorm1d(shape[1])
    nn.init.normal_(bn.weight), nn.init.normal_(bn.bias)
    per_process = [copy.deepcopy(bn) for _ in range(2)]
    model = convert_split_bn(nn.Sequential(copy.deepcopy(bn)), 2)
    assert isinstance(model[0], SplitBatchNorm) and model[0].bn_class is type(bn)
    xs = x.clone().requires_grad_()
    out = model(xs)
    ref = torch.cat([m(c) for m, c in zip(per_process, x.chunk(2))])
    assert torch.allclose(out, ref, atol=1e-5)
    g = torch.randn_like(out)
    out.backward(g)
    xr = x.clone().requires_grad_()
    grad_copies = [copy.deepcopy(bn) for _ in range(2)]
    torch.cat([m(c) for m, c in zip(grad_copies, xr.chunk(2))]).backward(g)
    assert torch.allclose(xs.grad, xr.grad, atol=1e-5)
    assert torch.allclose(model[0].weight.grad, sum(m.weight.grad for m in grad_copies), atol=1e-4)
    for name in ("running_mean", "running_var"):
        avg = sum(getattr(m, name) for m in per_process) / 2
        assert torch.allclose(getattr(model[0], name), avg, atol=1e-6), name
        assert not torch.allclose(getattr(model[0], name), getattr(per_process[0], name), atol=1e-3)
    with pytest.raises(ValueError, match="does not divide"):
        model(torch.randn(3, *shape[1:]))


def test_single_process_gathers_and_shuffle_bn_are_identity():
    x = torch.randn(4, 3, requires_grad=True)
    assert gather(x) is x and gather_no_grad(x) is x
    enc = nn.Linear(3, 2)
    out = shuffle_bn_forward(enc, x.detach(), torch.Generator().manual_seed(0))
    assert torch.allclose(out, enc(x.detach()))  # un-shuffled back to the caller's order


def test_dino_pos_interpolation_is_dinos_and_follows_copies():
    """Local crops get vision_transformer.py's interpolate_pos_encoding (bicubic by scale factor (grid + 0.1)
    / grid, no antialias), not timm's antialiased resampling; a deep copy (DINO's teacher) uses its own table."""
    import copy

    import timm
    from training.modules.multicrop import use_dino_pos_interpolation
    vit = timm.create_model("vit_tiny_patch16_224", img_size=64, patch_size=16, depth=1, num_classes=0,
                            dynamic_img_size=True)
    use_dino_pos_interpolation(vit)
    x = torch.randn(1, 2, 2, vit.embed_dim)  # a 32-px crop's 2 x 2 patch tokens (trained grid 4 x 4)
    grid = vit.pos_embed[:, 1:].reshape(1, 4, 4, -1).permute(0, 3, 1, 2)
    expected = F.interpolate(grid, scale_factor=(2.1 / 4, 2.1 / 4), mode="bicubic").permute(0, 2, 3, 1).reshape(1, 4, -1)
    out = vit._pos_embed(x)
    torch.testing.assert_close(out[:, 1:], x.reshape(1, 4, -1) + expected)
    torch.testing.assert_close(out[:, :1], vit.cls_token + vit.pos_embed[:, :1])
    antialiased = F.interpolate(grid, size=(2, 2), mode="bicubic", antialias=True).permute(0, 2, 3, 1).reshape(1, 4, -1)
    assert (expected - antialiased).abs().max() > 1e-3  # timm's would be another embedding
    teacher = copy.deepcopy(vit)
    with torch.no_grad():
        teacher.pos_embed.zero_()
        teacher.cls_token.zero_()
    torch.testing.assert_close(teacher._pos_embed(x)[:, 1:], x.reshape(1, 4, -1))
    with pytest.raises(ValueError, match="dynamic_img_size"):
        use_dino_pos_interpolation(timm.create_model("vit_tiny_patch16_224", img_size=64, depth=1, num_classes=0))
