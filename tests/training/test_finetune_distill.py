"""SimCLR v2's stages 2 and 3 (training/finetune.py, training/distill.py): the labelled subset, the neck taken
from the projection head, the distillation loss by hand, and both CLIs with their exports."""

import json
import math
import os

import pytest
import torch

import clzoo
from training import distill, finetune, pretrain

TINY = ["--image-size", "16", "--data-args", "{num_samples: 200}", "--batch-size", "50", "--threads", "1"]


@pytest.fixture(scope="module")
def simclrv2_run(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("pre") / "simclrv2")
    assert pretrain.main(["--method", "simclrv2", "--model", "test_resnet", "--image-size", "16", "--batch-size", "50",
                          "--data-args.num_samples", "200", "--epochs", "1", "--hparams.proj_hidden_dim", "48",
                          "--mixed-precision", "no", "--knn.every", "0", "--output", out]) == 0
    return out


def test_label_subset_is_a_seeded_fraction_of_every_class():
    targets = torch.arange(1000) % 10
    targets[:100] = 3  # class 3: 190 images, the others 90
    subset = finetune.label_subset(targets, 0.1, seed=0)
    counts = torch.bincount(targets[subset], minlength=10)
    assert counts[3] == 19 and (counts[torch.arange(10) != 3] == 9).all()
    assert torch.equal(subset, finetune.label_subset(targets, 0.1, seed=0))
    assert not torch.equal(subset, finetune.label_subset(targets, 0.1, seed=1))
    assert (torch.bincount(targets[finetune.label_subset(targets, 0.001, 0)]) == 1).all()  # at least one a class
    with pytest.raises(ValueError, match="label-fraction"):
        finetune.label_subset(targets, 0.0, 0)


@torch.no_grad()
def test_the_neck_is_the_projection_heads_first_layer(simclrv2_run):
    model = finetune.build_classifier(simclrv2_run, 10, head_layers=1).eval()
    state = torch.load(os.path.join(simclrv2_run, "checkpoint.pt"), weights_only=True)["method"]
    encoder = clzoo.create_model(f"local-dir:{simclrv2_run}", pretrained=True).eval()
    x = torch.rand(4, 3, 16, 16)
    h = encoder(x)
    lin, bn = state["projector.0.weight"], {k[len("projector.1."):]: v for k, v in state.items() if k.startswith("projector.1.")}
    expected = torch.relu((h @ lin.T - bn["running_mean"]) / torch.sqrt(bn["running_var"] + 1e-5) * bn["weight"] + bn["bias"])
    torch.testing.assert_close(model.forward_head(model.forward_features(x), pre_logits=True), expected, rtol=1e-4, atol=1e-5)
    assert model.fc.in_features == 48
    with pytest.raises(ValueError, match="3 layers, 2 hidden"):
        finetune.build_classifier(simclrv2_run, 10, head_layers=3)
    with pytest.raises(ValueError, match="needs a training run directory"):
        finetune.build_classifier("test_resnet", 10, head_layers=1, random_init=True)


def test_distillation_loss_by_hand():
    s = torch.tensor([[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])
    t = torch.tensor([[2.0, 0.0, 1.0], [1.0, 1.0, 1.0]])
    tau = 2.0
    total = 0.0
    for row_s, row_t in zip(s.tolist(), t.tolist()):
        zt = sum(math.exp(v / tau) for v in row_t)
        zs = sum(math.exp(v / tau) for v in row_s)
        total += -sum(math.exp(a / tau) / zt * (b / tau - math.log(zs)) for a, b in zip(row_t, row_s))
    assert distill.distillation_loss(s, t, tau).item() == pytest.approx(total / 2, rel=1e-6)


def test_finetune_then_distill_from_the_cli(simclrv2_run, tmp_path):
    ft = str(tmp_path / "ft")
    assert finetune.main(["--model", simclrv2_run, "--from-head-layer", "1", "--label-fraction", "0.5", "--epochs", "2",
                          *TINY, "--output", ft]) == 0
    r = json.load(open(os.path.join(ft, "results.json")))
    assert r["labelled_images"] == len(json.load(open(os.path.join(ft, "labelled.json")))["indices"]) >= 95
    assert 0.0 <= r["test_top1"] <= 1.0 and len(r["loss"]) == 2
    model = clzoo.create_model(f"local-dir:{ft}", pretrained=True).eval()
    assert model(torch.rand(2, 3, 16, 16)).shape == (2, 10)
    # the export is the fine-tuned network: its test top-1 is the one reported
    from training.data import build_dataset
    test_set = build_dataset("synthetic", "test", 16, 0)
    assert finetune.top1(model, test_set, 16, "synthetic") == pytest.approx(r["test_top1"])
    out = str(tmp_path / "student")
    assert distill.main(["--teacher", ft, "--epochs", "1", "--label-weight", "0.5", *TINY, "--output", out]) == 0
    d = json.load(open(os.path.join(out, "results.json")))
    assert d["teacher_test_top1"] == pytest.approx(r["test_top1"]) and d["stage"] == "distill"
    student = clzoo.create_model(f"local-dir:{out}", pretrained=True).eval()
    assert student(torch.rand(2, 3, 16, 16)).shape == (2, 10)
    small = str(tmp_path / "small")
    assert distill.main(["--teacher", ft, "--student", "test_resnet", "--epochs", "1", *TINY, "--output", small]) == 0
    assert clzoo.create_model(f"local-dir:{small}", pretrained=True).neck_widths == []
