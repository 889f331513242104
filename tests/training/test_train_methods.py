"""Method modules on tiny inputs: the combination of terms each paper writes down."""

import math

import pytest
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F

from training.methods import TrainInfo, build_method, method_class
from training.methods.simclrv2 import SimCLRv2

from tests.helpers import MeanLinear

INFO = TrainInfo(num_samples=40, total_steps=10, steps_per_epoch=5, global_batch=4, seed=0)


def _batch(jigsaw=False, B=4, size=32):
    g = torch.Generator().manual_seed(0)
    b = {"views": [torch.randn(B, 3, size, size, generator=g) for _ in range(2)], "index": torch.arange(B) * 7}
    if jigsaw:
        b["jigsaw"] = torch.randn(B, 9, 3, 9, 9, generator=g)
    return b


def _backbone():
    torch.manual_seed(0)
    return timm.create_model("test_resnet", num_classes=0)


def test_simclrv2_momentum_memory_loss_by_hand():
    """At step 0 the momentum encoder equals the online one, so the keys equal the (detached) queries:
    loss = sum_views mean_i CE([z_a,i . k_b / tau, z_a,i . queue / tau], i) (the directions summed, as the
    released NT-Xent sums them; `loss_reduction: mean` halves it)."""
    m = SimCLRv2(_backbone(), INFO, tau=0.5, proj_hidden_dim=16, memory_size=6)
    b = _batch()
    loss, _ = m(b, 0)
    with torch.no_grad():
        z = F.normalize(m.projector(m.backbone(torch.cat(b["views"]))), dim=1)
    z1, z2, queue = z[:4], z[4:], m.queue.queue
    expected = 0.0
    for q, k in ((z1, z2), (z2, z1)):
        for i in range(4):
            logits = [float(q[i] @ k[j]) / 0.5 for j in range(4)] + [float(q[i] @ queue[j]) / 0.5 for j in range(6)]
            expected += -(logits[i] - math.log(sum(math.exp(x) for x in logits))) / 4
    assert loss.item() == pytest.approx(expected, rel=1e-4)
    mean = SimCLRv2(_backbone(), INFO, tau=0.5, proj_hidden_dim=16, memory_size=6, loss_reduction="mean")
    mean.load_state_dict(m.state_dict())
    assert mean(b, 0)[0].item() == pytest.approx(expected / 2, rel=1e-4)
    m.after_optimizer_step(0)
    # keys of view 1 then view 2 enqueued FIFO into 6 slots: view 2 wraps over slots 0-1
    assert torch.allclose(m.queue.queue[[2, 3]], z1[2:], atol=1e-5)
    assert torch.allclose(m.queue.queue[[4, 5, 0, 1]], z2, atol=1e-5) and int(m.queue.ptr) == 8 % 6


@pytest.mark.parametrize("loss_type,K", [("nce", 8), ("softmax", 8), ("softmax", 0)])
def test_pirl_loss_from_the_paper_written_out(loss_type, K):
    """PIRL eq. 5, L = lambd L(m_I, g(v_I^t)) + (1 - lambd) L(m_I, f(v_I)), recomputed here with plain torch
    ops from the module's weights and bank, not from its forward: f = norm(W_f enc(I) + b_f); g = norm(W_2
    concat_p(W_1 enc(patch_p) + b_1) + b_2), the 9 patch embeddings concatenated in the order the batch gives
    them (the augmentation's shuffle). L is lemniscate's NCE (Z = mean(exp(s / tau)) n from the first batch,
    h = P / (P + K / n + eps)) or the cross-entropy over m_I and the same K noise rows, or (K = 0) over the whole
    bank. With K noise rows the bank holds one vector e on every row but the batch's, so the expected value does
    not depend on which rows were drawn (10^5 rows: no draw hits the batch). Then m_I <- norm(m m_I + (1 - m) f)."""
    n = 100_000 if K else 40
    info = TrainInfo(num_samples=n, total_steps=10, steps_per_epoch=5, global_batch=4, seed=0)
    torch.manual_seed(0)
    m = build_method("pirl", MeanLinear(), info, K=K, lambd=0.3, dim=5, loss=loss_type, tau=0.2)
    g = torch.Generator().manual_seed(0)
    index = torch.tensor([0, 7, 14, 21])
    with torch.no_grad():
        if K:
            m.bank.bank.copy_(F.normalize(torch.randn(1, 5, generator=g), dim=1).expand(n, 5))
            m.bank.bank[index] = F.normalize(torch.randn(4, 5, generator=g), dim=1)
        bank = m.bank.bank.clone()
    batch = {"views": [torch.randn(4, 3, 8, 8, generator=g)], "index": index,
             "jigsaw": torch.randn(4, 9, 3, 4, 4, generator=g)}
    loss, logs = m(batch, 0)

    sd = {k: v.detach() for k, v in m.state_dict().items()}
    W_b, b_b = sd["backbone.fc.weight"], sd["backbone.fc.bias"]
    enc = lambda x: x.mean((2, 3)) @ W_b.T + b_b  # noqa: E731
    f = F.normalize(enc(batch["views"][0]) @ sd["image_head.0.weight"].T + sd["image_head.0.bias"], dim=1)
    per_patch = [[enc(batch["jigsaw"][b, p][None])[0] @ sd["jigsaw_head.fc1.0.weight"].T + sd["jigsaw_head.fc1.0.bias"]
                  for p in range(9)] for b in range(4)]
    concat = torch.stack([torch.cat(per_patch[b]) for b in range(4)])  # (4, 9 * 5), patch 0 first
    g_emb = F.normalize(concat @ sd["jigsaw_head.fc2.weight"].T + sd["jigsaw_head.fc2.bias"], dim=1)

    def term(v):
        pos = (v * bank[index]).sum(1)
        if loss_type == "softmax" and K == 0:  # -log softmax over every bank row, own row the target
            logits = v @ bank.T / 0.2
            return (-logits[torch.arange(4), index] + logits.exp().sum(1).log()).mean()
        neg = (v @ bank[-1]).unsqueeze(1).expand(4, K)  # every noise row is e
        if loss_type == "softmax":
            return (-pos / 0.2 + (torch.cat((pos[:, None], neg), 1) / 0.2).exp().sum(1).log()).mean()
        Z = torch.cat((pos[:, None], neg), 1).div(0.2).exp().mean() * n
        Pn, eps = 1 / n, 1e-7
        p_pos, p_neg = (pos / 0.2).exp() / Z, (neg / 0.2).exp() / Z
        return -((p_pos / (p_pos + K * Pn + eps)).log().sum() + (K * Pn / (p_neg + K * Pn + eps)).log().sum()) / 4

    L_jig, L_img = term(g_emb), term(f)
    assert float(logs["loss_jigsaw"]) == pytest.approx(float(L_jig), rel=1e-5)
    assert float(logs["loss_image"]) == pytest.approx(float(L_img), rel=1e-5)
    assert loss.item() == pytest.approx(float(0.3 * L_jig + 0.7 * L_img), rel=1e-5)
    m.after_optimizer_step(0)  # memory momentum 0.5, with the image branch's embedding
    assert torch.allclose(m.bank.bank[index], F.normalize(0.5 * bank[index] + 0.5 * f, dim=1), atol=1e-6)


def test_infomin_weights_its_two_terms():
    """InfoMin (PyContrast learning/contrast_trainer.py): L = (1 - beta) L_image + beta L_jigsaw, checked against
    the two logged terms (the weighting only; the terms themselves are the InfoNCE of modules.losses)."""
    m = build_method("infomin", _backbone(), INFO, K=8, beta=0.3)
    loss, logs = m(_batch(jigsaw=True), 0)
    assert loss.item() == pytest.approx(float(0.7 * logs["loss_image"] + 0.3 * logs["loss_jigsaw"]), rel=1e-5)


def test_moco_updates_after_the_step_only():
    m = build_method("mocov2", _backbone(), INFO, K=16, m=0.5)
    queue0 = m.queue.queue.clone()
    loss, _ = m(_batch(), 0)
    assert torch.equal(m.queue.queue, queue0)  # the current keys are not their own negatives
    loss.backward()
    with torch.no_grad():
        for p in m.backbone.parameters():
            p.add_(1.0)
    m.after_optimizer_step(0)
    assert int(m.queue.ptr) == 4
    p_q, p_k = next(m.backbone.parameters()), next(m.momentum_backbone.parameters())
    assert torch.allclose(p_k, 0.5 * (p_q - 1.0) + 0.5 * p_q)


def test_build_method_rejects_unknown_hyper_parameters():
    with pytest.raises(ValueError, match="Did you mean tau"):
        build_method("mocov1", _backbone(), INFO, taus=0.1)
    with pytest.raises(ValueError, match="unknown method 'moco'.*Did you mean"):
        method_class("moco")
