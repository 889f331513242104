"""The dense linear probe (training/eval_dense.py): IoU by hand, the stride-8 feature maps, the probe on an
oracle feature (the mask itself) and on noise, and the CLI."""

import json
import math
import os

import pytest
import timm
import torch
import torch.nn.functional as F

from training import eval_dense
from training.data.synthetic import SyntheticShapes


def test_iou_by_hand():
    pred = torch.tensor([[0, 1, 1], [0, 0, 1]])
    target = torch.tensor([[0, 1, 0], [0, 1, 1]])
    bg, fg = eval_dense.iou(pred, target)
    assert bg == pytest.approx(2 / 4) and fg == pytest.approx(2 / 4)
    assert math.isnan(eval_dense.iou(torch.zeros(2, 2), torch.zeros(2, 2), 3)[2])


def test_stride8_maps_of_a_cnn_and_a_vit():
    fn, stride = eval_dense.dense_features(timm.create_model("resnet18", num_classes=0).eval())
    assert stride == 8 and fn(torch.rand(2, 3, 32, 32)).shape == (2, 128, 4, 4)
    fn, stride = eval_dense.dense_features(timm.create_model("vit_tiny_patch16_224", patch_size=8, img_size=32,
                                                             num_classes=0).eval())
    assert stride == 8 and fn(torch.rand(2, 3, 32, 32)).shape == (2, 192, 4, 4)


def test_the_probe_reads_an_oracle_feature_and_not_noise():
    ds = SyntheticShapes("train", 32, num_samples=300)
    masks = (ds.masks(range(300))[:, 0] >= 128).long()
    oracle = F.avg_pool2d(masks[:, None].float(), 4)  # the mask at stride 4: a perfect feature
    probe = eval_dense.fit_probe(oracle[:200], masks[:200], steps=200)
    good = eval_dense.evaluate(probe, oracle[200:], masks[200:])
    noise = torch.randn_like(oracle)
    bad = eval_dense.evaluate(eval_dense.fit_probe(noise[:200], masks[:200], steps=200), noise[200:], masks[200:])
    assert good["miou"] > 0.85 and bad["miou"] < 0.5 and bad["iou_foreground"] < 0.1


def test_eval_dense_cli(tmp_path):
    out = str(tmp_path / "dense")
    assert eval_dense.main(["--model", "test_resnet", "--random-init", "--image-size", "32", "--train-samples", "200",
                            "--test-samples", "100", "--steps", "50", "--out", out]) == 0
    r = json.load(open(os.path.join(out, "dense.json")))
    assert r["feature_stride"] == 8 and r["feature_grid"] == [4, 4] and 0 <= r["test"]["miou"] <= 1
