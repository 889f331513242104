"""CLI smoke runs of BYOL, SimSiam, Barlow Twins, SwAV, DeepCluster-v2, MoCo v3 and DINO: each method's paper
recipe (configs/<method>.yaml: its heads, optimizer, augmentation, multi-crop) for 3 steps on ResNet-18 at
32 px, and MoCo v3 / DINO on ViT-tiny, then the exported backbone loads with clzoo.create_model. The brief
command is `python training/pretrain.py --method M --model resnet18 --data synthetic --max-steps 3
--batch-size 16 --image-size 32 --output DIR`; here in-process, with a 64-image data set, no kNN monitor
and 16-px local crops (the recipes' 96-px crops are for 224-px images) to keep it fast."""

import json
import os

import pytest
import torch

from training import pretrain

SMOKE = ["--data", "synthetic", "--max-steps", "3", "--batch-size", "16", "--image-size", "32",
         "--data-args.num_samples", "64", "--knn.every", "0", "--aug.local_size", "16"]

CASES = [("byol", "resnet18"), ("simsiam", "resnet18"), ("barlowtwins", "resnet18"), ("swav", "resnet18"),
         ("deepclusterv2", "resnet18"), ("mocov3", "resnet18"), ("dino", "resnet18"),
         ("mocov3", "vit_tiny_patch16_224"), ("dino", "vit_tiny_patch16_224")]


@pytest.mark.parametrize("method,model", CASES)
def test_cli_smoke_and_export(tmp_path, method, model):
    import clzoo
    out = str(tmp_path / method)
    extra = ["--warmup-epochs", "1"] if method == "simsiam" else []
    assert pretrain.main(["--method", method, "--model", model, *SMOKE, *extra, "--output", out]) == 0
    records = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
    assert [r["step"] for r in records] == [1, 2, 3] and all(torch.isfinite(torch.tensor(r["loss"])) for r in records)
    encoder = clzoo.create_model(f"local-dir:{out}", pretrained=True).eval()
    with torch.no_grad():
        assert encoder(torch.randn(2, 3, 32, 32)).shape == (2, encoder.num_features)
    ckpt = torch.load(os.path.join(out, "checkpoint.pt"), weights_only=True)
    for k, v in encoder.state_dict().items():  # the exported weights are the method's `backbone`
        assert torch.equal(v, ckpt["method"]["backbone." + k]), k
    if method == "simsiam":  # the predictor keeps the peak lr during the warmup (--fix-pred-lr)
        groups = ckpt["optimizer"]["param_groups"]
        peak = 0.05 * 16 / 256  # recipe lr x N / 256
        assert groups[1]["fixed_lr"] and groups[1]["lr"] == pytest.approx(peak) and groups[0]["lr"] < peak
    if model.startswith("vit") and method == "dino":  # 2 global 32-px + 8 local 16-px crops, one model
        cfg = json.load(open(os.path.join(out, "config.json")))
        assert cfg["model_args"]["img_size"] == [32, 32] and cfg["model_args"]["dynamic_img_size"]


def test_grad_accumulation_updates_teacher_and_center_once_per_step(tmp_path, monkeypatch):
    from training.methods.dino import DINO
    calls = []
    original = DINO.after_optimizer_step

    def counting(self, step):
        calls.append((step, len(self._pending)))
        original(self, step)

    monkeypatch.setattr(DINO, "after_optimizer_step", counting)
    out = str(tmp_path / "accum")
    assert pretrain.main(["--method", "dino", "--model", "test_resnet", *SMOKE, "--grad-accum", "2",
                          "--hparams.out_dim", "64", "--model-args", "{}", "--output", out]) == 0
    assert calls == [(0, 2), (1, 2), (2, 2)]  # one EMA + center update per step, from both micro-batches
