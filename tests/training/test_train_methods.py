"""Method modules on tiny inputs: the combination of terms each paper writes down."""

import math

import pytest
import timm
import torch
import torch.nn.functional as F

from training.methods import TrainInfo, build_method, method_class
from training.methods.simclrv2 import SimCLRv2

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
    loss = 1/2 sum_views mean_i CE([z_a,i . k_b / tau, z_a,i . queue / tau], i)."""
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
            expected += -(logits[i] - math.log(sum(math.exp(x) for x in logits))) / 4 / 2
    assert loss.item() == pytest.approx(expected, rel=1e-4)
    m.after_optimizer_step(0)
    # keys of view 1 then view 2 enqueued FIFO into 6 slots: view 2 wraps over slots 0-1
    assert torch.allclose(m.queue.queue[[2, 3]], z1[2:], atol=1e-5)
    assert torch.allclose(m.queue.queue[[4, 5, 0, 1]], z2, atol=1e-5) and int(m.queue.ptr) == 8 % 6


@pytest.mark.parametrize("name,weights,loss_type", [("pirl", ("lambd", 0.5), "nce"),
                                                    ("pirl", ("lambd", 0.5), "softmax"), ("infomin", ("beta", 0.5), None)])
def test_jigsaw_methods_combine_their_two_terms(name, weights, loss_type):
    key, w = weights
    kw = {"K": 8, key: 0.3, **({"loss": loss_type} if loss_type else {})}
    m = build_method(name, _backbone(), INFO, **kw)
    batch = _batch(jigsaw=True)
    loss, logs = m(batch, 0)
    if loss_type == "softmax":  # each term: cross-entropy over m_I and the same K = 8 sampled entries
        with torch.no_grad():
            f = F.normalize(m.image_head(m.backbone(batch["views"][0])), dim=1)
            noise = m.bank.sample(batch["index"], 8, INFO.seed, 2, 0, 0)
            s = torch.cat([m.bank.bank[batch["index"]][:, None], m.bank.bank[noise]], 1) @ f[:, :, None]
        expected_image = F.cross_entropy(s.squeeze(2) / 0.07, torch.zeros(4, dtype=torch.long))
        assert float(logs["loss_image"]) == pytest.approx(float(expected_image), rel=1e-5)
    if name == "pirl":  # L = lambd L(m_I, g(v_I^t)) + (1 - lambd) L(m_I, f(v_I))
        expected = 0.3 * logs["loss_jigsaw"] + 0.7 * logs["loss_image"]
    else:  # L = (1 - beta) L_image + beta L_jigsaw
        expected = 0.7 * logs["loss_image"] + 0.3 * logs["loss_jigsaw"]
    assert loss.item() == pytest.approx(float(expected), rel=1e-5)


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
