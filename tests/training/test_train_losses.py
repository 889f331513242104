"""Each loss against an independent reference: lightly's NTXentLoss, hand-written loops of the papers'
formulas, and the official code's arithmetic transcribed step by step."""

import math

import pytest
import torch
import torch.nn.functional as F

from training.methods.invaspread import batch_criterion
from training.modules.losses import info_nce, nce_binary, nce_z_estimate, nt_xent


def _unit(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g, dtype=torch.float64), dim=-1)


@pytest.mark.parametrize("B,tau", [(2, 0.5), (8, 0.1), (32, 0.2)])
def test_nt_xent_matches_lightly(B, tau):
    from lightly.loss import NTXentLoss
    a, b = torch.randn(B, 16), torch.randn(B, 16)
    ours = nt_xent(F.normalize(a, dim=1), F.normalize(b, dim=1), tau)
    assert torch.allclose(ours, NTXentLoss(temperature=tau)(a, b), atol=1e-5)


def test_nt_xent_hand_loop():
    """SimCLR eq. (1): l(i, j) = -log exp(s_ij/t) / sum_{k != i} exp(s_ik/t), averaged over the 2N anchors."""
    z1, z2 = _unit(3, 4, seed=1), _unit(3, 4, seed=2)
    z = torch.cat((z1, z2))
    tau, n, total = 0.3, 3, 0.0
    for i in range(2 * n):
        j = (i + n) % (2 * n)
        denom = sum(math.exp(float(z[i] @ z[k]) / tau) for k in range(2 * n) if k != i)
        total += -math.log(math.exp(float(z[i] @ z[j]) / tau) / denom)
    assert nt_xent(z1, z2, tau).item() == pytest.approx(total / (2 * n), rel=1e-6)


def test_nt_xent_gathered_slices_average_to_global_loss():
    """Two 'processes', each with its local rows against the whole batch: the mean equals the global loss."""
    z1, z2 = _unit(6, 8, seed=3), _unit(6, 8, seed=4)
    parts = [nt_xent(z1[r * 3:(r + 1) * 3], z2[r * 3:(r + 1) * 3], 0.2, z1, z2, offset=3 * r) for r in range(2)]
    assert (sum(parts) / 2).item() == pytest.approx(nt_xent(z1, z2, 0.2).item(), rel=1e-9)


def test_info_nce_moco_pseudocode():
    """MoCo Algorithm 1: l_pos = q.k, l_neg = q.queue, CE(logits / t, 0)."""
    q, k, queue = _unit(4, 8, seed=5), _unit(4, 8, seed=6), _unit(10, 8, seed=7)
    t = 0.07
    expected = 0.0
    for i in range(4):
        logits = [float(q[i] @ k[i]) / t] + [float(q[i] @ queue[j]) / t for j in range(10)]
        expected += -(logits[0] - math.log(sum(math.exp(x) for x in logits)))
    assert info_nce(q, k, queue, t).item() == pytest.approx(expected / 4, rel=1e-5)


def test_nce_binary_lemniscate_arithmetic():
    """lemniscate NCECriterion: -(log Pmt/(Pmt + K Pn + eps) + sum log K Pn/(Pon + K Pn + eps)) / B."""
    s = torch.tensor([[0.9, 0.1, -0.2], [0.5, 0.3, 0.0]], dtype=torch.float64)
    tau, n, Z = 0.1, 50, 123.0
    K, Pn, eps = 2, 1 / 50, 1e-7
    expected = 0.0
    for row in s.tolist():
        p = [math.exp(x / tau) / Z for x in row]
        expected += math.log(p[0] / (p[0] + K * Pn + eps)) + sum(math.log(K * Pn / (x + K * Pn + eps)) for x in p[1:])
    got = nce_binary(s[:, 0], s[:, 1:], tau, n, torch.tensor(Z, dtype=torch.float64))
    assert got.item() == pytest.approx(-expected / 2, rel=1e-5)
    # Z, the Monte-Carlo normaliser of InstDisc eq. (6): mean(exp(s / tau)) * n
    assert nce_z_estimate(s, tau, n).item() == pytest.approx(s.div(tau).exp().mean().item() * n, rel=1e-6)


def test_invaspread_paper_formula_and_detach():
    """InvaSpread eq. (7)-(8) written with loops: J = -sum_i log P(i|x^_i) - sum_i sum_{j != i} log(1 - P(i|x_j)),
    P over the 2B - 1 other embeddings, divided by 2B; gradients flow only through the anchor side."""
    B, tau = 3, 0.1
    f = _unit(2 * B, 5, seed=8).requires_grad_()
    x = f.detach()
    total = 0.0
    for a in range(2 * B):  # anchor row a (an augmented or original embedding)
        p = a + B if a < B else a - B
        denom = sum(math.exp(float(x[a] @ x[k]) / tau) for k in range(2 * B) if k != a)
        total += math.log(math.exp(float(x[a] @ x[p]) / tau) / denom)
        for j in range(2 * B):
            if j not in (a, p):
                total += math.log(1 - math.exp(float(x[a] @ x[j]) / tau) / denom)
    loss = batch_criterion(f, f, 0, tau)
    assert loss.item() == pytest.approx(-total / (2 * B), rel=1e-6)
    # the weight side is detached: d loss / d f equals the gradient with the columns held constant
    loss.backward()
    g_ref = torch.autograd.grad(batch_criterion(f, x, 0, tau), f)[0]
    assert torch.allclose(f.grad, g_ref)


def test_invaspread_sharded_sum_equals_global():
    f = _unit(8, 6, seed=9)  # [view1 (4); view2 (4)]
    full = batch_criterion(f, f, 0, 0.1)
    shards = []
    for r in range(2):  # 2 processes of 2 images: local [v1; v2] rows, global columns
        local = torch.cat((f[2 * r:2 * r + 2], f[4 + 2 * r:4 + 2 * r + 2]))
        shards.append(batch_criterion(local, f, 2 * r, 0.1))
    assert sum(shards).item() == pytest.approx(full.item(), rel=1e-9)
