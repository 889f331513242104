"""CMC (training/methods/cmc.py): the two-way NCE and softmax losses written out by hand from the paper and
NCECriterion, the core-view and full-graph sums over more than two views, the banks' update after the step,
the trainer's encoder, and a run from the CLI whose export loads. Step parity with the official trainer is
test_step_parity_cmc.py; 1 vs 2 processes is test_train_invariance.py."""

import math

import pytest
import torch
import torch.nn.functional as F

import clzoo
from training import pretrain
from training.methods import TrainInfo, build_method
from training.methods.cmc import CMC, view_pairs

N, K, T = 10, 3, 0.07
INFO = TrainInfo(num_samples=N, total_steps=10, steps_per_epoch=5, global_batch=2, seed=0)


def _cmc(split=((0,), (1, 2)), **hparams):
    torch.manual_seed(0)
    encoder = clzoo.create_model("cmc_resnet18", channels=[8, 16, 32, 64], split=split).eval()
    return build_method("cmc", encoder, INFO, K=K, tau=T, dim=8, **hparams).eval()


def _batch(B=2):
    g = torch.Generator().manual_seed(0)
    return {"views": [torch.rand(B, 3, 16, 16, generator=g)], "index": torch.tensor([3, 7])[:B]}


def _embeddings(method, batch):
    with torch.no_grad():
        feats = method.backbone.forward_branches(batch["views"][0])
        return [F.normalize(p(f), dim=1) for p, f in zip(method.projectors, feats)]


def _nce_by_hand(anchor, bank, index, noise, Z=None):
    """NCECriterion of NCEAverage's scores, element by element: P = exp(s / T) / Z, Pn = 1 / N, m = K,
    -[log P+ / (P+ + m Pn) + sum log m Pn / (P- + m Pn)] / B; Z = mean(exp(s / T)) N when not given."""
    rows = []
    for b in range(len(index)):
        entries = [int(index[b])] + [int(j) for j in noise[b]]
        rows.append([sum(float(anchor[b, d]) * float(bank[e, d]) for d in range(anchor.shape[1])) for e in entries])
    if Z is None:
        Z = sum(math.exp(s / T) for r in rows for s in r) / (len(rows) * len(rows[0])) * N
    m, Pn, eps = K, 1 / N, 1e-7
    total = 0.0
    for r in rows:
        P = [math.exp(s / T) / Z for s in r]
        total += math.log(P[0] / (P[0] + m * Pn + eps)) + sum(math.log(m * Pn / (p + m * Pn + eps)) for p in P[1:])
    return -total / len(rows), Z


def test_cmc_nce_is_both_directions_by_hand():
    method, batch = _cmc(), _batch()
    v = _embeddings(method, batch)
    noise = method.banks[0].sample(batch["index"], K, 0, 2, 0, 0)
    banks = [b.bank.clone() for b in method.banks]
    with torch.no_grad():
        loss, logs = method(batch, 0)
    l_to_ab, Z_l = _nce_by_hand(v[0], banks[1], batch["index"], noise)  # NCEAverage: out_l = bmm(memory_ab, l)
    ab_to_l, Z_ab = _nce_by_hand(v[1], banks[0], batch["index"], noise)
    assert float(logs["loss_01"]) == pytest.approx(l_to_ab, rel=1e-5)
    assert float(logs["loss_10"]) == pytest.approx(ab_to_l, rel=1e-5)
    assert float(loss) == pytest.approx(l_to_ab + ab_to_l, rel=1e-5)
    assert float(method.Z[0, 1]) == pytest.approx(Z_l, rel=1e-5) and float(method.Z[1, 0]) == pytest.approx(Z_ab, rel=1e-5)
    # Z stays the first batch's: a second batch is scored with it
    with torch.no_grad():
        _, logs2 = method(_batch(), 1)
    noise2 = method.banks[0].sample(batch["index"], K, 0, 2, 1, 1)
    assert float(logs2["loss_01"]) == pytest.approx(_nce_by_hand(v[0], banks[1], batch["index"], noise2, Z_l)[0],
                                                    rel=1e-5)


def test_cmc_softmax_is_cross_entropy_over_positive_and_noise():
    method, batch = _cmc(loss="softmax"), _batch()
    v = _embeddings(method, batch)
    noise = method.banks[0].sample(batch["index"], K, 0, 2, 0, 0)
    with torch.no_grad():
        loss, logs = method(batch, 0)
    expected = 0.0
    for a, b in ((0, 1), (1, 0)):
        for i, idx in enumerate(batch["index"].tolist()):
            s = [float(v[a][i] @ method.banks[b].bank[j]) / T for j in [idx, *noise[i].tolist()]]
            expected += (-s[0] + math.log(sum(math.exp(x) for x in s))) / len(batch["index"])
    assert float(loss) == pytest.approx(expected, rel=1e-5)


def test_cmc_more_views_core_and_full_graph():
    assert view_pairs(2, "core") == view_pairs(2, "full") == [(0, 1), (1, 0)]
    assert view_pairs(3, "core") == [(0, 1), (1, 0), (0, 2), (2, 0)]
    assert sorted(view_pairs(3, "full")) == [(0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1)]
    for graph, terms in (("core", 4), ("full", 6)):
        method = _cmc(split=((0,), (1,), (2,)), graph=graph)
        assert method.backbone.branch_names == ["view0", "view1", "view2"] and len(method.banks) == 3
        with torch.no_grad():
            loss, logs = method(_batch(), 0)
        assert len(logs) == terms
        assert float(loss) == pytest.approx(sum(float(x) for x in logs.values()), rel=1e-6)
        v = _embeddings(method, _batch())
        noise = method.banks[0].sample(_batch()["index"], K, 0, 2, 0, 0)
        by_hand = _nce_by_hand(v[2], method.banks[1].bank, _batch()["index"], noise)[0]
        assert ("loss_21" in logs) == (graph == "full")
        if graph == "full":
            assert float(logs["loss_21"]) == pytest.approx(by_hand, rel=1e-5)


def test_cmc_banks_update_after_the_step_only():
    method, batch = _cmc(), _batch()
    before = [b.bank.clone() for b in method.banks]
    v = _embeddings(method, batch)
    with torch.no_grad():
        method(batch, 0)
    assert all(torch.equal(b.bank, o) for b, o in zip(method.banks, before))
    method.after_optimizer_step(0)
    for bank, old, f in zip(method.banks, before, v):
        expected = F.normalize(old[batch["index"]] * 0.5 + f * 0.5, dim=1)
        torch.testing.assert_close(bank.bank[batch["index"]], expected)
        keep = torch.ones(N, dtype=torch.bool)
        keep[batch["index"]] = False
        assert torch.equal(bank.bank[keep], old[keep])


def test_cmc_two_crops_give_each_view_its_own_crop():
    """PyContrast's CMC: with one crop per view, view i's channels come from crop i (and the loss sees them)."""
    method = _cmc()
    g = torch.Generator().manual_seed(1)
    c1, c2 = torch.rand(2, 3, 16, 16, generator=g), torch.rand(2, 3, 16, 16, generator=g)
    enc = method.backbone
    with torch.no_grad():
        two = enc.forward_branches([c1, c2])
        L = enc.branches[0].forward_features(enc.split_views(c1)[0]).mean((2, 3))
        ab = enc.branches[1].forward_features(enc.split_views(c2)[1]).mean((2, 3))
        torch.testing.assert_close(two[0], L, rtol=0, atol=0)
        torch.testing.assert_close(two[1], ab, rtol=0, atol=0)
        assert not torch.allclose(two[1], enc.forward_branches(c1)[1])
        one, _ = method({"views": [c1], "index": torch.tensor([3, 7])}, 0)
        both, _ = method({"views": [c1, c2], "index": torch.tensor([3, 7])}, 0)
    assert not torch.isclose(one, both)
    with pytest.raises(ValueError, match="3 crops for 2 views"):
        enc.forward_branches([c1, c2, c1])


def test_cmc_encoder_and_errors():
    name, args = CMC.encoder_spec("resnet18", {"channels": [8, 16, 32, 64]})
    assert name == "cmc_resnet18" and args["zero_init_last"] is False and args["input_std"] == (0.229, 0.224, 0.225)
    assert CMC.encoder_spec("cmc_resnet50half.pycontrast", {})[0] == "cmc_resnet50half.pycontrast"
    with pytest.raises(ValueError, match="cmc needs a CMC encoder.*resnet18"):
        build_method("cmc", clzoo.create_model("test_resnet", num_classes=0), INFO)
    with pytest.raises(ValueError, match="graph must be 'core' or 'full'"):
        _cmc(graph="star")
    with pytest.raises(ValueError, match="disjoint"):
        clzoo.create_model("cmc_resnet18", split=[[0, 1], [1, 2]])
    # the encoder undoes its input normalisation: ImageNet-normalised input = the same image in [0, 1]
    x = torch.rand(2, 3, 16, 16)
    plain = clzoo.create_model("cmc_resnet18", channels=[8, 16, 32, 64])
    normed = clzoo.create_model("cmc_resnet18", channels=[8, 16, 32, 64], input_mean=(0.485, 0.456, 0.406),
                                input_std=(0.229, 0.224, 0.225))
    normed.load_state_dict(plain.state_dict())
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(normed.eval()((x - mean) / std), plain.eval()(x), atol=1e-5, rtol=1e-5)


def test_cmc_runs_from_the_cli_and_its_export_loads(tmp_path):
    out = tmp_path / "run"
    assert pretrain.main(["--method", "cmc", "--model", "resnet18", "--model-args", '{"channels": [16,32,64,128]}',
                          "--image-size", "32", "--batch-size", "16", "--max-steps", "3", "--data-args.num_samples",
                          "64", "--knn.every", "0", "--hparams.K", "8", "--output", str(out)]) == 0
    with open(out / "metrics.jsonl") as f:
        metrics = f.readlines()
    assert len(metrics) == 3 and '"loss_01"' in metrics[0] and '"loss_10"' in metrics[0]
    model = clzoo.create_model(f"local-dir:{out}", pretrained=True).eval()
    assert type(model).__name__ == "CMCResNet" and model.num_features == 2 * 128
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():  # the official linear evaluation's feature: both views' pooled features, concatenated
        torch.testing.assert_close(model(x), torch.cat(model.forward_branches(x), 1))
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True, map_location="cpu")
    state = ckpt["method"] if "method" in ckpt else ckpt["model"]
    trained = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, trained[k])
