"""BYOL, SimSiam, Barlow Twins, SwAV, DeepCluster-v2, MoCo v3 and DINO on tiny inputs.

Losses against independent references: the papers' pseudo-code written out here, hand-computed small
cases, and lightly's losses as oracles where they follow the official definition. Then the methods'
state rules: EMA / center / momentum encoder once per optimizer step (also with gradient accumulation),
frozen prototypes and last layer, k-means targets, the ViT changes of MoCo v3."""

import math

import numpy as np
import pytest
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F

from training.methods import TrainInfo, build_method
from training.modules.heads import DINOHead
from training.modules.losses import (barlow_twins, byol_regression, contrastive_in_batch, dino_cross_entropy,
                                     negative_cosine, swapped_prediction)
from training.modules.momentum import momentum_schedule
from training.modules.multicrop import multicrop_forward
from training.modules.optim import clip_gradients_per_param
from training.modules.sinkhorn import sinkhorn_knopp

from tests.helpers import MeanLinear

INFO = TrainInfo(num_samples=40, total_steps=10, steps_per_epoch=5, global_batch=4, seed=0)


def _randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _backbone():
    torch.manual_seed(0)
    return timm.create_model("test_resnet", num_classes=0)


def _views(n_global=2, n_local=0, B=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return ([torch.randn(B, 3, 32, 32, generator=g) for _ in range(n_global)]
            + [torch.randn(B, 3, 16, 16, generator=g) for _ in range(n_local)])


def _bn_train(h, weight, bias, eps=1e-5):
    """BatchNorm1d in train mode by hand: batch mean and biased variance."""
    return (h - h.mean(0)) / torch.sqrt(h.var(0, unbiased=False) + eps) * weight + bias


# ---------------------------------------------------------------------------------------------- losses

def test_simsiam_paper_pseudocode_and_lightly():
    """SimSiam Algorithm 1: D(p, z) = -(normalize(p) * normalize(z.detach())).sum(dim=1).mean();
    L = D(p1, z2)/2 + D(p2, z1)/2. lightly's NegativeCosineSimilarity is -cos averaged (no detach)."""
    from lightly.loss import NegativeCosineSimilarity

    def D(p, z):
        z = z.detach()
        p = F.normalize(p, dim=1)
        z = F.normalize(z, dim=1)
        return -(p * z).sum(dim=1).mean()

    p1, p2, z1, z2 = (_randn(6, 8, seed=s).requires_grad_() for s in range(4))
    ours = negative_cosine(p1, z2) / 2 + negative_cosine(p2, z1) / 2
    assert ours.item() == pytest.approx((D(p1, z2) / 2 + D(p2, z1) / 2).item(), rel=1e-6)
    lightly = NegativeCosineSimilarity()
    assert ours.item() == pytest.approx((lightly(p1, z2.detach()) / 2 + lightly(p2, z1.detach()) / 2).item(), rel=1e-6)
    ours.backward()
    assert z1.grad is None and z2.grad is None and p1.grad is not None  # stop-gradient


def test_byol_regression_is_two_minus_two_cos():
    p, z = _randn(5, 7, seed=1), _randn(5, 7, seed=2)
    by_hand = sum(float(((F.normalize(p[i], dim=0) - F.normalize(z[i], dim=0)) ** 2).sum()) for i in range(5)) / 5
    assert byol_regression(p, z).item() == pytest.approx(by_hand, rel=1e-6)


def test_byol_loss_and_target_ema_from_the_paper():
    """BYOL (Grill et al. 2020, Alg. 1; byol_experiment.loss_fn): L = mean(2 - 2 cos(p(v1), z'(v2))) + mean(2 - 2
    cos(p(v2), z'(v1))), summed, with p = q(g(f(v))) of the online network and z' = g'(f'(v)) of the target,
    each recomputed here from the weights (Linear-BN(batch statistics)-ReLU-Linear) after the target has been
    moved away from the online network; also against lightly's NegativeCosineSimilarity (2 - 2 cos = 2 + 2 NCS).
    Then xi <- tau_k xi + (1 - tau_k) theta after step k with tau_k = 1 - (1 - tau_base)(cos(pi k / K) + 1) / 2
    computed here (tau_base 0.9, K = 10 steps)."""
    from lightly.loss import NegativeCosineSimilarity
    torch.manual_seed(0)
    m = build_method("byol", MeanLinear(), INFO, tau_base=0.9, hidden_dim=16, dim=8)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # every weight, online and target, moved independently (target != online)
        for p in m.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))
    x1, x2 = (torch.randn(4, 3, 8, 8, generator=g) for _ in range(2))
    loss, logs = m({"views": [x1, x2], "index": torch.arange(4)}, 3)
    sd = {k: v.detach().clone() for k, v in m.state_dict().items()}

    def mlp(h, pre):  # Linear(bias) - BN - ReLU - Linear(no bias)
        h = h @ sd[pre + "0.weight"].T + sd[pre + "0.bias"]
        h = F.relu(_bn_train(h, sd[pre + "1.weight"], sd[pre + "1.bias"]))
        return h @ sd[pre + "3.weight"].T

    def encoder(x, pre):  # MeanLinear
        return x.mean((2, 3)) @ sd[pre + "fc.weight"].T + sd[pre + "fc.bias"]

    def online(x):
        return mlp(mlp(encoder(x, "backbone."), "projector."), "predictor.")

    def target(x):
        return mlp(encoder(x, "target_backbone."), "target_projector.")

    def regression(p, z):  # ||p / |p| - z / |z|||^2 per sample, averaged
        return ((p / p.norm(dim=1, keepdim=True) - z / z.norm(dim=1, keepdim=True)) ** 2).sum(1).mean()

    (p1, p2), (z1, z2) = (online(x1), online(x2)), (target(x1), target(x2))
    assert loss.item() == pytest.approx(float(regression(p1, z2) + regression(p2, z1)), rel=1e-5)
    ncs = NegativeCosineSimilarity()
    assert loss.item() == pytest.approx(float(2 + 2 * ncs(p1, z2) + 2 + 2 * ncs(p2, z1)), rel=1e-5)
    tau = lambda k: 1 - (1 - 0.9) * (math.cos(math.pi * k / 10) + 1) / 2  # noqa: E731
    assert logs["tau"] == pytest.approx(tau(3), rel=1e-9)
    loss.backward()
    assert all(p.grad is None for p in [*m.target_backbone.parameters(), *m.target_projector.parameters()])
    pairs = [("target_backbone", "backbone"), ("target_projector", "projector")]
    for k in (0, 3, 9):
        if k:
            m({"views": [x1, x2], "index": torch.arange(4)}, k)[0].backward()
        _sgd_step(m)  # the online weights move; then the EMA of step k
        old = {t: [p.clone() for p in getattr(m, t).parameters()] for t, _ in pairs}
        online_now = {o: [p.clone() for p in getattr(m, o).parameters()] for _, o in pairs}
        m.after_optimizer_step(k)
        for t, o in pairs:
            for xi, new, theta in zip(old[t], getattr(m, t).parameters(), online_now[o]):
                assert torch.allclose(new, tau(k) * xi + (1 - tau(k)) * theta, atol=1e-6), (k, t)


def test_barlow_twins_hand_computed():
    """Two samples, two dimensions: bn(z) = +-1 per column, so C is read off by hand."""
    z1 = torch.tensor([[1.0, 3.0], [3.0, 1.0]], dtype=torch.float64)  # bn: [[-1, 1], [1, -1]]
    z2 = torch.tensor([[0.0, 5.0], [2.0, 5.5]], dtype=torch.float64)  # bn: [[-1, -1], [1, 1]]
    # C = bn(z1)^T bn(z2) / 2 = [[1, 1], [-1, -1]]; (1 - 1)^2 + (1 - (-1))^2 + lambd (1 + 1)
    lambd = 0.25
    expected = 0 + 4 + lambd * 2
    assert barlow_twins(z1, z2, lambd).item() == pytest.approx(expected, rel=1e-4)  # BN eps 1e-5


def test_barlow_twins_matches_lightly():
    from lightly.loss import BarlowTwinsLoss
    z1, z2 = torch.randn(16, 32), torch.randn(16, 32)
    ours = barlow_twins(z1, z2, 0.0051)
    assert ours.item() == pytest.approx(BarlowTwinsLoss(lambda_param=0.0051)(z1, z2).item(), rel=1e-5)


def test_sinkhorn_hand_computed():
    """2 samples x 2 prototypes, eps = 1, one iteration, written out by hand (swav distributed_sinkhorn)."""
    s = torch.tensor([[0.0, math.log(3.0)], [0.0, 0.0]])  # exp: [[1, 3], [1, 1]]
    # Q = exp(s)^T = [[1, 1], [3, 1]] (K x B), / 6 -> rows sums 2/6, 4/6 -> rows / sum / K(2):
    # row 0: [1, 1] / 2 / 2 = [1/4, 1/4]; row 1: [3, 1] / 4 / 2 = [3/8, 1/8]
    # columns: col 0 = [1/4, 3/8] / (5/8) / B(2) = [1/5, 3/10]; col 1 = [1/4, 1/8] / (3/8) / 2 = [1/3, 1/6]
    # x B: col 0 = [2/5, 3/5], col 1 = [2/3, 1/3]; transposed: per sample
    expected = torch.tensor([[2 / 5, 3 / 5], [2 / 3, 1 / 3]])
    assert torch.allclose(sinkhorn_knopp(s, eps=1.0, n_iters=1), expected, atol=1e-6)


def test_sinkhorn_equipartition_fp32_and_lightly():
    from lightly.loss.swav_loss import sinkhorn
    g = torch.Generator().manual_seed(0)
    s = F.normalize(torch.randn(32, 8, generator=g), dim=1) @ F.normalize(torch.randn(10, 8, generator=g), dim=1).T
    q = sinkhorn_knopp(s, eps=0.05, n_iters=3)
    assert torch.allclose(q, sinkhorn(s, iterations=3, epsilon=0.05), atol=1e-5)  # lightly: same algorithm
    assert torch.allclose(q.sum(1), torch.ones(32), atol=1e-5)  # each sample's codes sum to 1
    q50 = sinkhorn_knopp(s, eps=0.05, n_iters=50)
    assert torch.allclose(q50.sum(0), torch.full((10,), 32 / 10), rtol=1e-3)  # equal share per prototype
    # bf16 scores whose exp(s / eps) overflows float32 (e^120): float32 with the max subtracted is finite,
    # the plain formula (lightly's, the official one) is not
    big = (s * 6).bfloat16()
    q_big = sinkhorn_knopp(big, eps=0.05)
    assert q_big.dtype == torch.float32 and torch.isfinite(q_big).all()
    assert not torch.isfinite(sinkhorn(big.float(), epsilon=0.05)).all()


def test_swav_loss_matches_lightly():
    """lightly's SwaVLoss computes codes for every high-resolution crop (the official crops_for_assign
    0 1 when there are 2) and predicts them from every other crop, as main_swav.py does."""
    from lightly.loss import SwaVLoss
    g = torch.Generator().manual_seed(3)
    protos = F.normalize(torch.randn(12, 8, generator=g), dim=1)
    scores = [F.normalize(torch.randn(6, 8, generator=g), dim=1) @ protos.T for _ in range(5)]
    codes = {s: sinkhorn_knopp(scores[s]) for s in (0, 1)}
    ours = swapped_prediction(scores, codes, tau=0.1)
    ref = SwaVLoss(temperature=0.1)(scores[:2], scores[2:])
    assert ours.item() == pytest.approx(ref.item(), rel=1e-5)


def test_dino_paper_pseudocode_and_lightly():
    """DINO Algorithm 1 with two crops: loss = H(t1, s2)/2 + H(t2, s1)/2 with
    H(t, s) = -(softmax((t - C)/tpt) * log softmax(s/tps)).sum(1).mean(). With local crops: lightly's
    DINOLoss (the official mean over every (teacher crop, other student crop) pair)."""
    from lightly.loss import DINOLoss
    tps, tpt = 0.1, 0.04
    C = _randn(1, 16, seed=9).float() * 0.1
    s1, s2, t1, t2, l1, l2 = (_randn(4, 16, seed=s).float() for s in range(6))

    def H(t, s):
        t = t.detach()
        s = F.softmax(s / tps, dim=1)
        t = F.softmax((t - C) / tpt, dim=1)
        return -(t * torch.log(s)).sum(dim=1).mean()

    teacher = [F.softmax((t - C) / tpt, dim=1) for t in (t1, t2)]
    ours = dino_cross_entropy([s1 / tps, s2 / tps], teacher)
    assert ours.item() == pytest.approx((H(t1, s2) / 2 + H(t2, s1) / 2).item(), rel=1e-5)
    ref = DINOLoss(output_dim=16, teacher_temp=tpt, warmup_teacher_temp=tpt, student_temp=tps)
    ref.center.copy_(C)
    ours_mc = dino_cross_entropy([x / tps for x in (s1, s2, l1, l2)], teacher)
    assert ours_mc.item() == pytest.approx(ref([t1, t2], [s1, s2, l1, l2]).item(), rel=1e-5)


def test_mocov3_contrastive_pseudocode():
    """MoCo v3 Algorithm 1: ctr(q, k) = CE(q.k^T / tau, range(N)) x 2 tau, q and k normalised; with the
    keys of 2 processes gathered, this process's labels are offset by its rank x N."""
    q, k = _randn(3, 5, seed=1), _randn(6, 5, seed=2)  # keys of two "processes" of 3
    tau, total = 0.2, 0.0
    qn, kn = F.normalize(q, dim=1), F.normalize(k, dim=1)
    for i in range(3):
        logits = [float(qn[i] @ kn[j]) / tau for j in range(6)]
        total += -(logits[3 + i] - math.log(sum(math.exp(x) for x in logits)))
    assert contrastive_in_batch(q, k, tau, offset=3).item() == pytest.approx(total / 3 * 2 * tau, rel=1e-5)


def test_momentum_schedule_and_per_param_clipping():
    m = momentum_schedule(0.996, 100)
    assert m[0] == pytest.approx(0.996) and m[50] == pytest.approx(0.998) and np.all(np.diff(m) > 0) and m[-1] < 1
    a, b = nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(3))
    a.grad, b.grad = torch.tensor([3.0, 4.0]), torch.tensor([0.1, 0.0, 0.0])
    clip_gradients_per_param([a, b], 1.0)  # DINO clip_gradients: each parameter on its own
    assert a.grad.norm().item() == pytest.approx(1.0, rel=1e-5) and torch.equal(b.grad, torch.tensor([0.1, 0.0, 0.0]))


# ----------------------------------------------------------------------------------- pieces and methods

def test_multicrop_forward_groups_by_resolution():
    calls = []

    class Spy(nn.Module):
        def forward(self, x):
            calls.append(tuple(x.shape))
            return x.mean((2, 3))

    views = _views(2, 3)
    out = multicrop_forward(Spy(), views)
    assert calls == [(8, 3, 32, 32), (12, 3, 16, 16)]  # one pass per resolution group, crop-major
    assert torch.allclose(out, torch.cat([v.mean((2, 3)) for v in views]))


def test_dino_head_architecture():
    head = DINOHead(32, out_dim=50, hidden_dim=24, bottleneck_dim=8)
    kinds = [type(m).__name__ for m in head.mlp]
    assert kinds == ["Linear", "GELU", "Linear", "GELU", "Linear"]
    assert not head.last_layer.weight_g.requires_grad and torch.equal(head.last_layer.weight_g, torch.ones(50, 1))
    x = torch.randn(3, 32)
    w = head.last_layer.weight_v / head.last_layer.weight_v.norm(dim=1, keepdim=True)
    assert torch.allclose(head(x), F.normalize(head.mlp(x), dim=-1) @ w.T, atol=1e-6)


def _sgd_step(method, lr=0.5):
    with torch.no_grad():
        for p in method.parameters():
            if p.grad is not None:
                p.add_(p.grad, alpha=-lr)
                p.grad = None


@pytest.mark.parametrize("name,kw,pairs", [
    ("byol", dict(hidden_dim=16, dim=8), [("target_backbone", "backbone"), ("target_projector", "projector")]),
    ("mocov3", dict(mlp_dim=16, dim=8), [("momentum_backbone", "backbone"), ("momentum_projector", "projector")]),
    ("dino", dict(out_dim=20, hidden_dim=16, bottleneck_dim=8), [("backbone", "student_backbone"),
                                                                   ("teacher_head", "student_head")]),
])
def test_ema_and_center_update_once_per_optimizer_step(name, kw, pairs):
    """Two micro-batches (gradient accumulation): the forward passes leave the target / momentum encoder /
    center alone; after the step, each is updated once, with the whole step's batch for the center."""
    m = build_method(name, _backbone(), INFO, **kw)
    targets = {t: [p.clone() for p in getattr(m, t).parameters()] for t, _ in pairs}
    teacher_out = []
    for a in range(2):
        views = _views(2, 1 if name == "dino" else 0, seed=a)
        loss, _ = m({"views": views, "index": torch.arange(4)}, 0)
        (loss / 2).backward()
        if name == "dino":
            with torch.no_grad():
                teacher_out.append(m.teacher_head(m.backbone(torch.cat(views[:2]))))
        for t, _ in pairs:
            assert all(torch.equal(p, q) for p, q in zip(getattr(m, t).parameters(), targets[t]))
    if name == "dino":
        assert torch.equal(m.center, torch.zeros_like(m.center))
        m.before_optimizer_step(0)
    _sgd_step(m)
    m.after_optimizer_step(0)
    # BYOL: tau_0 = 1 - (1 - tau_base)(cos(0) + 1) / 2 = tau_base, by hand; MoCo v3: next step's m
    mom = m.momentum[0] if name == "dino" else 1 - (1 - 0.996) * (math.cos(0) + 1) / 2 if name == "byol" else m.m[1]
    for t, o in pairs:
        for old, new, online in zip(targets[t], getattr(m, t).parameters(), getattr(m, o).parameters()):
            assert torch.allclose(new, mom * old + (1 - mom) * online, atol=1e-6)
    if name == "dino":  # c = 0.9 c + 0.1 mean(teacher outputs of both micro-batches)
        assert torch.allclose(m.center, 0.1 * torch.cat(teacher_out).mean(0, keepdim=True), atol=1e-5)


def test_dino_freezes_last_layer_in_first_epoch_and_teacher_has_no_drop_path():
    bb = timm.create_model("vit_tiny_patch16_224", num_classes=0, img_size=32, patch_size=8, dynamic_img_size=True,
                           drop_path_rate=0.1)
    m = build_method("dino", bb, INFO, out_dim=20, hidden_dim=16, bottleneck_dim=8, norm_last_layer=False)
    assert all(getattr(x, "drop_prob", 0.0) == 0.0 for x in m.backbone.modules())
    assert any(getattr(x, "drop_prob", 0.0) > 0 for x in m.student_backbone.modules())
    for step, frozen in ((4, True), (5, False)):  # 5 steps per epoch
        loss, _ = m({"views": _views(2, 2), "index": torch.arange(4)}, step)
        loss.backward()
        m.before_optimizer_step(step)
        last = list(m.student_head.last_layer.parameters())
        assert all((p.grad is None) == frozen for p in last)
        m.zero_grad()


def test_dino_teacher_temperature_warmup_per_epoch():
    info = TrainInfo(num_samples=40, total_steps=50, steps_per_epoch=5, global_batch=8, seed=0)
    m = build_method("dino", _backbone(), info, out_dim=8, hidden_dim=8, bottleneck_dim=4,
                     warmup_teacher_temp=0.04, teacher_temp=0.07, warmup_teacher_temp_epochs=4)
    assert np.allclose(m.teacher_temp, [0.04, 0.05, 0.06, 0.07] + [0.07] * 6)


def test_dino_collapse_monitor_reads_both_collapses():
    """The paper's Fig. 7 monitor: uniform teacher -> entropy ln(K), batch-mean entropy ln(K); every sample
    one-hot on the same dimension -> both 0; one-hot on different dimensions -> 0 and ln(#dimensions used)."""
    from training.methods.dino import _collapse_monitor
    K = 16
    assert _collapse_monitor(torch.full((4, K), 1 / K)) == pytest.approx(
        {"teacher_entropy": math.log(K), "teacher_mean_entropy": math.log(K)}, rel=1e-6)
    same = F.one_hot(torch.tensor([3, 3, 3, 3]), K).float()
    assert _collapse_monitor(same) == pytest.approx({"teacher_entropy": 0.0, "teacher_mean_entropy": 0.0}, abs=1e-6)
    spread = F.one_hot(torch.tensor([0, 1, 2, 3]), K).float()
    assert _collapse_monitor(spread) == pytest.approx(
        {"teacher_entropy": 0.0, "teacher_mean_entropy": math.log(4)}, abs=1e-6)


def test_swav_prototypes_normalised_frozen_first_epoch_and_queue():
    info = TrainInfo(num_samples=40, total_steps=20, steps_per_epoch=5, global_batch=4, seed=0)
    m = build_method("swav", _backbone(), info, nmb_prototypes=6, hidden_mlp=16, dim=8, queue_length=8,
                     epoch_queue_starts=0)
    assert torch.allclose(m.prototypes.weight.norm(dim=1), torch.ones(6))
    for step in range(6):
        loss, logs = m({"views": _views(2, 2, seed=step), "index": torch.arange(4)}, step)
        assert logs["queue_used"] == float(step >= 2)  # 8 rows = 2 steps of 4, then used
        loss.backward()
        m.before_optimizer_step(step)
        assert (m.prototypes.weight.grad is None) == (step < 5)  # frozen during the first epoch
        _sgd_step(m)
        m.after_optimizer_step(step)
        assert torch.allclose(m.prototypes.weight.norm(dim=1), torch.ones(6), atol=1e-6)


def _flat(colours, size):
    """Images of one flat colour each: (B, 3) -> (B, 3, size, size)."""
    return colours[:, :, None, None].expand(-1, -1, size, size).contiguous()


def test_deepclusterv2_kmeans_targets_and_loss_on_a_hand_made_memory():
    """main_deepclusterv2.py on 6 images whose embeddings are chosen by hand (identity encoder and projector:
    z = norm(colour of a flat image)). Epoch 0 only fills the memory (loss 0, no update); its end clusters
    crop 0's memory for heads 0 and 2 (h % 2) into {0, 1, 2} around e_x and {3, 4, 5} around e_y, crop 1's for
    head 1 into {0, 2, 4} around e_z and {1, 3, 5} around e_x: two tight clusters 90 degrees apart, which
    spherical k-means finds from any initial pair, the centroids (the new prototypes) being the normalised
    means, e_x, e_y, e_z by symmetry. The epoch-1 loss is then written out: the mean over heads of
    mean_crops,i -log softmax(z_i . centroids / 0.1)[cluster of image i]."""
    info = TrainInfo(num_samples=6, total_steps=4, steps_per_epoch=2, global_batch=3, seed=0)
    m = build_method("deepclusterv2", MeanLinear(3), info, nmb_prototypes=(2, 2, 2), hidden_mlp=0, dim=3)
    with torch.no_grad():
        for lin in (m.backbone.fc, m.projector[0]):
            lin.weight.copy_(torch.eye(3))
            lin.bias.zero_()
    t = (-0.1, 0.0, 0.1)
    crop0 = torch.tensor([[1, d, 0] for d in t] + [[0, 1, d] for d in t])  # images 0-2 ~ e_x, 3-5 ~ e_y
    crop1 = torch.tensor([[t[i // 2], 0, 1] if i % 2 == 0 else [1, 0, t[i // 2]] for i in range(6)])  # even ~ e_z
    trained = [p for n, p in m.named_parameters() if not n.startswith("prototypes.")]  # k-means sets those
    before = [p.clone() for p in trained]
    for step, rows in enumerate((torch.arange(3), torch.arange(3, 6))):  # epoch 0
        views = [_flat(crop0[rows], 4), _flat(crop1[rows], 4), _flat(torch.ones(3, 3), 2)]
        loss, _ = m({"views": views, "index": rows}, step)
        assert loss.item() == 0.0
        loss.backward()
        m.before_optimizer_step(step)
        _sgd_step(m)
        m.after_optimizer_step(step)
    assert all(torch.equal(a, b) for a, b in zip(before, trained))
    assert torch.allclose(m.memory[0], F.normalize(crop0, dim=1))
    assert torch.allclose(m.memory[1], F.normalize(crop1, dim=1))
    e = torch.eye(3)
    clusters = {0: ([0, 1, 2], [3, 4, 5], e[0], e[1]), 1: ([0, 2, 4], [1, 3, 5], e[2], e[0])}
    for h in range(3):
        a, b, ca, cb = clusters[h % 2]
        assign = m.assignments[h]  # one cluster id per hand-made cluster (which id is k-means' choice)
        assert len(set(assign[a].tolist())) == 1 and len(set(assign[b].tolist())) == 1
        assert assign[a[0]] != assign[b[0]]
        assert torch.allclose(m.prototypes[h].weight[assign[a[0]]], ca, atol=1e-6)
        assert torch.allclose(m.prototypes[h].weight[assign[b[0]]], cb, atol=1e-6)

    index = torch.tensor([4, 0, 3])
    g = torch.Generator().manual_seed(0)
    colours = [torch.randn(3, 3, generator=g) for _ in range(3)]
    loss, _ = m({"views": [_flat(colours[0], 4), _flat(colours[1], 4), _flat(colours[2], 2)], "index": index}, 2)
    z = F.normalize(torch.cat(colours), dim=1)  # 3 crops x 3 images, crop-major
    expected = 0.0
    for h in range(3):
        a, b, ca, cb = clusters[h % 2]
        target = torch.tensor([0 if i in a else 1 for i in index.tolist()]).repeat(3)  # 0: cluster a, 1: b
        logits = z @ torch.stack([ca, cb]).T / 0.1
        expected += (-logits[torch.arange(9), target] + logits.exp().sum(1).log()).mean() / 3
    assert loss.item() == pytest.approx(float(expected), rel=1e-5)
    m.after_optimizer_step(2)  # the batch's memory rows := its crop-0 / crop-1 embeddings
    assert torch.allclose(m.memory[0, index], z[:3]) and torch.allclose(m.memory[1, index], z[3:6])


def test_mocov3_vit_fixed_sincos_and_frozen_patch_projection():
    from clzoo.models._archs import mocov3_sincos_pos_embed
    bb = timm.create_model("vit_tiny_patch16_224", num_classes=0, img_size=32, patch_size=8)
    m = build_method("mocov3", bb, INFO, mlp_dim=16, dim=8)
    assert torch.equal(m.backbone.pos_embed, mocov3_sincos_pos_embed((4, 4), 192))
    frozen = {id(p) for p in (m.backbone.pos_embed, *m.backbone.patch_embed.proj.parameters())}
    trained = {id(p) for g in m.param_groups() for p in g["params"]}
    assert not frozen & trained
    assert len(m.param_groups()) == 1  # the ViT recipe's AdamW decays every parameter
    assert [type(x).__name__ for x in m.projector][-1] == "BatchNorm1d" and len(m.projector) == 8  # 3 layers
    assert [type(x).__name__ for x in m.predictor][-1] == "BatchNorm1d"  # ViT predictor: last BN
    r = build_method("mocov3", _backbone(), INFO, mlp_dim=16, dim=8)
    assert [type(x).__name__ for x in r.predictor][-1] == "Linear" and r.predictor[-1].bias is None


def test_param_groups_of_the_recipes():
    bt = build_method("barlowtwins", _backbone(), INFO, proj_dims=(16, 16))
    weights, biases = bt.param_groups()
    assert all(p.ndim > 1 for p in weights["params"]) and biases["lr_scale"] == pytest.approx(0.0048 / 0.2)
    assert biases["weight_decay"] is False and biases["lars"] is False
    ss = build_method("simsiam", _backbone(), INFO, dim=16, pred_dim=4)
    enc, pred = ss.param_groups()
    assert pred["fixed_lr"] and len(pred["params"]) == len(list(ss.predictor.parameters()))
    kinds = [type(x).__name__ for x in ss.projector]
    assert kinds[-2:] == ["Linear", "BatchNorm1d"] and not ss.projector[-1].affine  # no BN on the predictor out
    assert type(ss.predictor[-1]).__name__ == "Linear"


def test_mocov3_random_vit_gets_the_vits_py_initialisation(tmp_path):
    """vits.py's init (VisionTransformerMoCo.__init__) on a random ViT, not timm's trunc-normal: qkv as three
    D x D Xavier-uniform blocks, every other Linear Xavier-uniform, zero biases, cls token N(0, 1e-6), patch
    projection Xavier-uniform (initial_method skips it for --init-from and --resume)."""
    import math

    from training.config import load_config
    from training.pretrain import initial_method
    cfg = load_config(["--method", "mocov3", "--model", "vit_tiny_patch16_224", "--image-size", "32",
                       "--hparams.mlp_dim", "16", "--hparams.dim", "8", "--output", str(tmp_path)])
    vit = initial_method(cfg, INFO, log=lambda *_: None).backbone
    D = vit.embed_dim
    qkv = vit.blocks[0].attn.qkv.weight
    bound = math.sqrt(6 / (D + D))
    assert qkv.abs().max() <= bound and qkv.abs().max() > 0.98 * bound  # timm's trunc-normal(0.02) is < 0.04
    assert abs(qkv.std().item() - bound / math.sqrt(3)) < 0.05 * bound
    fc1 = vit.blocks[0].mlp.fc1.weight
    xavier = math.sqrt(6 / (fc1.shape[0] + fc1.shape[1]))
    assert fc1.abs().max() <= xavier and fc1.abs().max() > 0.98 * xavier
    assert all(m.bias.abs().max() == 0 for m in vit.modules() if isinstance(m, torch.nn.Linear))
    assert vit.cls_token.abs().max() < 1e-5
    proj = vit.patch_embed.proj.weight
    assert proj.abs().max() <= math.sqrt(6 / (3 * 16 * 16 + D)) and vit.patch_embed.proj.bias.abs().max() == 0
