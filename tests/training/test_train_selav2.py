"""SeLa-v2 (training/methods/selav2.py): whole-dataset self-labelling against a NumPy Sinkhorn-Knopp, the
equipartition it buys, the schedule (fill epoch, labels, learned normalised prototypes), the CLI and
`--init-from selav2_resnet50`."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import clzoo
from training import pretrain
from training.methods import TrainInfo, build_method

N = 48
INFO = TrainInfo(num_samples=N, total_steps=12, steps_per_epoch=3, global_batch=16, seed=0)


def _sela(**hp):
    torch.manual_seed(0)
    encoder = clzoo.create_model("test_resnet", num_classes=0)
    hp = {"dim": 8, "hidden_mlp": 16, "nmb_prototypes": (6, 4), **hp}
    return build_method("selav2", encoder, INFO, **hp)


def _numpy_self_labels(scores, eps, iters):
    """SeLa's optimal-transport labels, SwAV appendix pseudo-code on the whole N x K matrix, in float64."""
    Q = np.exp((scores - scores.max()) / eps).T
    Q /= Q.sum()
    K, B = Q.shape
    for _ in range(iters):
        Q /= Q.sum(1, keepdims=True) * K
        Q /= Q.sum(0, keepdims=True) * B
    return (Q * B).T.argmax(1)


@torch.no_grad()
def test_self_labels_are_sinkhorn_over_the_whole_dataset_and_equipartition():
    method = _sela(eps=0.05, sinkhorn_iters=10)
    g = torch.Generator().manual_seed(3)
    method.memory.copy_(F.normalize(torch.randn(2, N, 8, generator=g), dim=2))
    for p in method.prototypes:  # every image prefers prototype 0: argmax alone would put all in one cluster
        w = F.normalize(torch.randn(p.out_features, 8, generator=g), dim=1)
        p.weight.copy_(w)
    method.memory[0] = F.normalize(method.memory[0] * 0.3 + method.prototypes[0].weight[0], dim=1)
    method.filled[:] = True
    method.cluster(1)
    for h, p in enumerate(method.prototypes):
        scores = (method.memory[h % 2] @ p.weight.T).double().numpy()
        expected = _numpy_self_labels(scores, 0.05, 10)
        assert np.array_equal(method.assignments[h].numpy(), expected)
    assert (method.memory[0] @ method.prototypes[0].weight.T).argmax(1).eq(0).all()
    counts = torch.bincount(method.assignments[0], minlength=6)
    assert counts.max() <= 2 * N / 6 and counts.min() >= 1  # spread over the clusters, not all in cluster 0


def test_selav2_fills_then_labels_and_learns_normalised_prototypes():
    method = _sela(freeze_prototypes_epochs=2.0)
    opt = torch.optim.SGD(method.parameters(), lr=0.5)
    g = torch.Generator().manual_seed(4)
    start = {k: v.clone() for k, v in method.state_dict().items() if "prototypes" in k or k.startswith("backbone")}
    protos = []
    for step in range(9):
        index = torch.arange(16) + 16 * (step % 3)
        loss, _ = method({"views": [torch.rand(16, 3, 16, 16, generator=g) for _ in range(2)], "index": index}, step)
        opt.zero_grad()
        loss.backward()
        method.before_optimizer_step(step)
        opt.step()
        method.after_optimizer_step(step)
        protos.append(method.prototypes[0].weight.detach().clone())
        if step == 2:  # the fill epoch changed nothing, then labelled every image
            now = method.state_dict()
            for k, v in start.items():
                if "running" not in k and "num_batches" not in k:  # BN statistics do move in a train forward
                    torch.testing.assert_close(now[k], v, rtol=0, atol=1e-7, msg=k)
            assert method.filled.all() and (method.assignments >= 0).all()
    assert torch.equal(protos[3], protos[5])  # frozen for 2 epochs (the fill epoch and one more)
    assert not torch.equal(protos[5], protos[8])  # then learned
    torch.testing.assert_close(protos[8].norm(dim=1), torch.ones(6))


def test_selav2_runs_from_the_cli_and_exports(tmp_path):
    out = str(tmp_path / "run")
    assert pretrain.main(["--method", "selav2", "--model", "test_resnet", "--image-size", "16", "--batch-size", "32",
                          "--data-args.num_samples", "96", "--epochs", "3", "--optimizer", "sgd", "--lr", "0.1",
                          "--hparams.nmb_prototypes", "[8,8]", "--hparams.hidden_mlp", "32",
                          "--aug.local_views", "2", "--aug.local_size", "8", "--mixed-precision", "no",
                          "--knn.every", "0", "--warmup-epochs", "0", "--output", out]) == 0
    model = clzoo.create_model(f"local-dir:{out}", pretrained=True).eval()
    assert model(torch.rand(2, 3, 16, 16)).shape[0] == 2
