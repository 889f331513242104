"""PCL (training/methods/pcl.py): the concentration and ProtoNCE against element-by-element computations of
main_pcl.py `run_kmeans` and pcl/builder.py `forward`, the clustering schedule, and the CLI."""

import json
import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import clzoo
from training import pretrain
from training.methods import TrainInfo, build_method
from training.modules.kmeans import concentration

N = 40
INFO = TrainInfo(num_samples=N, total_steps=20, steps_per_epoch=5, global_batch=8, seed=0)


def test_concentration_is_run_kmeans_phi_by_hand():
    g = torch.Generator().manual_seed(0)
    x = F.normalize(torch.randn(30, 4, generator=g, dtype=torch.float64), dim=1)
    assign = torch.tensor([0] * 12 + [1] * 9 + [2] * 5 + [3] * 3 + [4] * 1)  # cluster 4: one member
    centroids = F.normalize(torch.randn(5, 4, generator=g, dtype=torch.float64), dim=1)  # unused but for K
    tau = 0.2
    phi = concentration(x, centroids, assign, tau)
    # main_pcl.py: D = squared L2 to faiss's centroid (the mean); phi = mean(sqrt(D)) / log(n + 10);
    # one-member clusters take the max; clip to the 10th / 90th percentiles; scale to mean tau
    d = np.zeros(5)
    for c in range(5):
        members = x[assign == c].numpy()
        if len(members) > 1:
            mean = members.mean(0)
            d[c] = np.mean([np.sqrt(((v - mean) ** 2).sum()) for v in members]) / np.log(len(members) + 10)
    d[4] = d.max()
    d = d.clip(np.percentile(d, 10), np.percentile(d, 90))
    expected = tau * d / d.mean()
    np.testing.assert_allclose(phi.numpy(), expected, rtol=1e-12)


def _pcl(**hp):
    torch.manual_seed(0)
    encoder = clzoo.create_model("test_resnet", num_classes=0)
    hp = {"K": 16, "dim": 8, "num_cluster": (6, 9), "warmup_epochs": 1, **hp}
    return build_method("pcl", encoder, INFO, **hp)


def test_proto_nce_is_builder_forward_by_hand():
    method = _pcl(r=4)
    g = torch.Generator().manual_seed(1)
    for h, k in enumerate(method.num_cluster):
        getattr(method, f"prototypes{h}").copy_(F.normalize(torch.randn(k, 8, generator=g), dim=1))
        getattr(method, f"density{h}").copy_(0.1 + torch.rand(k, generator=g))
        method.assignments[h] = torch.randint(0, k, (N,), generator=g)
    q = F.normalize(torch.randn(5, 8, generator=g), dim=1)
    index = torch.tensor([3, 17, 4, 29, 11])
    loss, _ = method.proto_nce(q, index, step=7)
    # builder.py, per clustering: columns = positives of the batch (one per sample, duplicates kept) + r
    # prototypes that no sample of the batch has; logits / the columns' density; target b = column b
    total = 0.0
    from training.data.rng import generator
    from training.methods.pcl import PROTO_KEY
    for h, k in enumerate(method.num_cluster):
        protos, density = getattr(method, f"prototypes{h}"), getattr(method, f"density{h}")
        pos = [int(method.assignments[h][i]) for i in index]
        candidates = [c for c in range(k) if c not in pos]
        draw = torch.randperm(len(candidates), generator=generator(0, PROTO_KEY, 7, h))[:4].tolist()
        neg = [candidates[d] for d in draw]
        assert len(neg) == min(4, len(candidates)) and not set(neg) & set(pos)
        cols = pos + neg
        term = 0.0
        for b in range(len(index)):
            logits = [sum(float(q[b, d]) * float(protos[c, d]) for d in range(8)) / float(density[c]) for c in cols]
            term += -logits[b] + math.log(sum(math.exp(v) for v in logits))
        total += term / len(index)
    assert loss.item() == pytest.approx(total / 2, rel=1e-5)


def test_pcl_clusters_the_memory_after_the_warmup_and_then_adds_protonce():
    method = _pcl(warmup_epochs=1)
    g = torch.Generator().manual_seed(2)
    steps_seen = []
    for step in range(10):  # epochs 0 and 1 (5 steps each, 8 images a step = the 40 images)
        index = torch.arange(8) + 8 * (step % 5)
        batch = {"views": [torch.rand(8, 3, 16, 16, generator=g) for _ in range(2)], "index": index}
        loss, logs = method(batch, step)
        steps_seen.append("loss_proto" in logs)
        loss.backward()
        method.after_optimizer_step(step)
        if step == 4:  # end of epoch 0 = the warmup: the memory holds every key, then k-means ran
            assert method.filled.all() and method.clustered
            for h, k in enumerate(method.num_cluster):
                protos = getattr(method, f"prototypes{h}")
                assign = method.assignments[h]
                # every image sits in its nearest prototype, and the prototypes are unit vectors
                assert torch.equal(assign, (method.memory @ protos.T).argmax(1))
                torch.testing.assert_close(protos.norm(dim=1), torch.ones(k))
                assert getattr(method, f"density{h}").mean().item() == pytest.approx(method.tau, rel=1e-5)
    assert steps_seen == [False] * 5 + [True] * 5
    with pytest.raises(ValueError, match="more clusters than the 40 training images"):
        _pcl(num_cluster=(10, 50))


def test_pcl_and_pclv2_run_from_the_cli_and_export(tmp_path):
    for method, head in (("pcl", 1), ("pclv2", 2)):
        out = str(tmp_path / method)
        assert pretrain.main(["--method", method, "--model", "test_resnet", "--image-size", "16", "--batch-size", "32",
                              "--data-args.num_samples", "128", "--epochs", "2", "--hparams.num_cluster", "[8,16]",
                              "--hparams.warmup_epochs", "1", "--hparams.K", "64", "--mixed-precision", "no",
                              "--knn.every", "0", "--output", out]) == 0
        rows = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
        assert [("loss_proto" in r) for r in rows] == [False] * 4 + [True] * 4
        model = clzoo.create_model(f"local-dir:{out}", pretrained=True).eval()
        assert model(torch.rand(2, 3, 16, 16)).shape[0] == 2
        state = torch.load(os.path.join(out, "checkpoint.pt"), weights_only=True)["method"]
        assert sum(k.startswith("projector.") and k.endswith("weight") for k in state) == head
