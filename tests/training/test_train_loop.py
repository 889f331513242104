"""End-to-end runs of training/pretrain.py, in-process: export, resume exactness, NaN stop, gradient
accumulation, --init-from."""

import json
import os

import pytest
import torch
import yaml
from safetensors.torch import load_file

from training import pretrain
from training.methods.mocov1 import MoCo
from training.methods.simclr import SimCLR

TINY = ["--model", "test_resnet", "--image-size", "32", "--batch-size", "32", "--data-args.num_samples", "128",
        "--knn.train_samples", "128", "--knn.test_samples", "64", "--knn.every", "0"]


def run(tmp_path, name, *args):
    out = str(tmp_path / name)
    return pretrain.main([*TINY, "--output", out, *args]), out


def test_cli_run_writes_metrics_checkpoint_and_loadable_export(tmp_path):
    import clzoo
    rc, out = run(tmp_path, "simclr", "--method", "simclr", "--max-steps", "3", "--knn.every", "1")
    assert rc == 0
    records = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
    assert [r["step"] for r in records] == [1, 2, 3]
    assert all({"step", "epoch", "loss", "lr", "pos_sim"} <= set(r) for r in records)
    cfg = json.load(open(os.path.join(out, "config.json")))
    assert cfg["architecture"] == "test_resnet" and cfg["num_classes"] == 0
    assert cfg["pretrained_cfg"]["input_size"] == [3, 32, 32]
    effective = yaml.safe_load(open(os.path.join(out, "run_config.yaml")))
    assert effective["method"] == "simclr" and effective["batch_size"] == 32 and effective["hparams"]["tau"] == 0.1
    results = json.load(open(os.path.join(out, "results.json")))
    assert results["steps"] == 3 and 0 <= results["knn_top1"] <= 1 and 0 <= results["knn_top1_init"] <= 1
    assert os.listdir(os.path.join(out, "tensorboard"))
    model = clzoo.create_model(f"local-dir:{out}", pretrained=True)
    ckpt = torch.load(os.path.join(out, "checkpoint.pt"), weights_only=True)
    exported = load_file(os.path.join(out, "model.safetensors"))
    for k, v in model.state_dict().items():
        assert torch.equal(v, exported[k]) and torch.equal(v, ckpt["method"]["backbone." + k])


def _final_state(out):
    return torch.load(os.path.join(out, "checkpoint.pt"), weights_only=True)


def test_linear_probe_monitor_reports_the_probe_of_the_exported_encoder(tmp_path):
    """--knn.linear true adds linear_top1(_init): the probe of training/linear_probe.py on the features the
    kNN uses, so re-probing the export reproduces it (also when the last epoch was not a monitored one); and the
    probe itself separates a separable set."""
    import clzoo
    from clzoo.knn import knn_accuracy
    from training.data import build_dataset
    from training.monitor import eval_view, extract_features, linear_probe

    g = torch.Generator().manual_seed(0)
    centres = 4 * torch.randn(3, 8, generator=g)
    y = torch.arange(300) % 3
    x = centres[y] + torch.randn(300, 8, generator=g)
    assert linear_probe(x[:200], y[:200], x[200:], y[200:])["linear_top1"] == 1.0
    assert linear_probe(x[:200], y[:200], x[200:], (y[200:] + 1) % 3)["linear_top1"] == 0.0

    # 3 epochs, monitored every 2: the results must still describe the final encoder, not epoch 2's
    rc, out = run(tmp_path, "simclr", "--method", "simclr", "--epochs", "3", "--knn.every", "2",
                  "--knn.linear", "true")
    assert rc == 0
    results = json.load(open(os.path.join(out, "results.json")))
    assert 0 <= results["linear_top1_init"] <= 1
    model = clzoo.create_model(f"local-dir:{out}", pretrained=True)
    bank, bank_labels = extract_features(model, eval_view(build_dataset("synthetic", "train", 32, 0, num_samples=128),
                                                          32, "synthetic"), max_samples=128)
    test, test_labels = extract_features(model, eval_view(build_dataset("synthetic", "test", 32, 0), 32, "synthetic"),
                                         max_samples=64)
    assert results["linear_top1"] == pytest.approx(linear_probe(bank, bank_labels, test, test_labels)["linear_top1"],
                                                   abs=1e-9)
    assert results["knn_top1"] == pytest.approx(knn_accuracy(bank, bank_labels, test, test_labels, k=20,
                                                             temperature=0.07), abs=1e-9)


def test_resume_equals_uninterrupted_run(tmp_path, monkeypatch):
    args = ["--method", "mocov2", "--max-steps", "6", "--save-every", "2", "--hparams.K", "64",
            "--bn-splits", "2", "--lr", "0.3"]
    rc, full = run(tmp_path, "full", *args)
    assert rc == 0

    original = MoCo.after_optimizer_step

    def preempted(self, step):
        original(self, step)
        if step == 4:  # killed after the 5th step; the last checkpoint is from step 4
            raise KeyboardInterrupt

    monkeypatch.setattr(MoCo, "after_optimizer_step", preempted)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, "cut", *args)
    assert _final_state(str(tmp_path / "cut"))["step"] == 4
    monkeypatch.setattr(MoCo, "after_optimizer_step", original)
    rc, cut = run(tmp_path, "cut", *args, "--resume", str(tmp_path / "cut"))
    assert rc == 0
    a, b = _final_state(full), _final_state(cut)
    assert a["step"] == b["step"] == 6
    for k in a["method"]:  # weights, momentum encoder, queue, pointer
        assert torch.equal(a["method"][k], b["method"][k]), k
    losses = [[json.loads(line)["loss"] for line in open(os.path.join(d, "metrics.jsonl"))] for d in (full, cut)]
    assert losses[0] == losses[1] and len(losses[0]) == 6


def test_nan_loss_stops_with_message_and_keeps_checkpoint(tmp_path, monkeypatch, capsys):
    original = SimCLR.forward

    def poisoned(self, batch, step):
        loss, logs = original(self, batch, step)
        return (loss * float("nan") if step == 3 else loss), logs

    monkeypatch.setattr(SimCLR, "forward", poisoned)
    rc, out = run(tmp_path, "nan", "--method", "simclr", "--max-steps", "6", "--save-every", "2")
    assert rc == 1
    assert "loss is nan at step 3" in capsys.readouterr().err
    assert _final_state(out)["step"] == 2
    assert not os.path.exists(os.path.join(out, "model.safetensors"))


def test_grad_accumulation_updates_queue_once_per_optimizer_step(tmp_path, monkeypatch):
    calls = []
    original = MoCo.after_optimizer_step

    def counting(self, step):
        calls.append((step, len(self._pending)))
        original(self, step)

    monkeypatch.setattr(MoCo, "after_optimizer_step", counting)
    rc, out = run(tmp_path, "accum", "--method", "mocov1", "--max-steps", "3", "--grad-accum", "2",
                  "--hparams.K", "128")
    assert rc == 0
    assert calls == [(0, 2), (1, 2), (2, 2)]  # one update per step, with the keys of both micro-batches
    assert int(_final_state(out)["method"]["queue.ptr"]) == (3 * 32) % 128


def test_init_from_starts_from_an_exported_encoder(tmp_path):
    rc, first = run(tmp_path, "first", "--method", "simclr", "--max-steps", "2", "--knn.every", "1")
    rc2, second = run(tmp_path, "second", "--method", "simclr", "--max-steps", "1", "--knn.every", "1",
                      "--init-from", f"local-dir:{first}")
    assert rc == rc2 == 0
    r1, r2 = (json.load(open(os.path.join(d, "results.json"))) for d in (first, second))
    assert r2["knn_top1_init"] == pytest.approx(r1["knn_top1"], abs=1e-9)  # same encoder, same kNN


def test_grad_accumulation_equals_one_big_batch(tmp_path):
    """Two micro-batches of 16 make the same optimizer steps as one batch of 32, when nothing in the model
    sees the micro-batch: InstDisc's exact softmax over the memory bank (K=0, a per-sample loss) on a ViT
    (LayerNorm only). The bank update of each step uses the features of both micro-batches."""
    args = ["--method", "instdisc", "--model", "vit_tiny_patch16_224", "--hparams.loss", "softmax",
            "--hparams.K", "0", "--max-steps", "3", "--save-every", "1", "--threads", "1"]
    rc1, one = run(tmp_path, "one", *args)
    rc2, two = run(tmp_path, "two", *args, "--grad-accum", "2")
    assert rc1 == rc2 == 0
    a, b = _final_state(one), _final_state(two)
    for k, v in a["method"].items():
        torch.testing.assert_close(b["method"][k], v, rtol=0, atol=1e-5, msg=k)
    # the last step moved the weights far more than the tolerance, so the comparison can fail
    before = torch.load(os.path.join(one, "checkpoint.prev.pt"), weights_only=True)["method"]
    assert max((a["method"][k] - before[k]).abs().max() for k in before if k.startswith("backbone.")) > 3e-4
    la, lb = ([json.loads(line)["loss"] for line in open(os.path.join(d, "metrics.jsonl"))] for d in (one, two))
    assert la == pytest.approx(lb, abs=1e-5) and len(la) == 3


@pytest.mark.parametrize("data", ["synthetic", "folder"])
def test_monitor_sees_the_pixels_and_features_of_eval_knn(tmp_path, data):
    """One eval transform: the trainer's kNN monitor (training.monitor.eval_view) and eval_knn.py /
    clzoo.features (the exported model's data config through clzoo.features.eval_transform) give the same
    tensors for the same images, and the monitor's features are the exported encoder's."""
    import numpy as np
    from PIL import Image

    import clzoo
    from clzoo.features import eval_transform
    from training.data import build_dataset
    from training.eval_common import image_size, load_split
    from training.monitor import eval_view, extract_features

    spec = "synthetic"
    if data == "folder":  # photos of other sizes and aspect ratios: resize to 32 / 0.875 and centre-crop
        spec = str(tmp_path / "photos")
        rng = np.random.default_rng(0)
        for split in ("train", "val"):
            for c in ("a", "b"):
                os.makedirs(os.path.join(spec, split, c))
                for i in range(32):
                    Image.fromarray(rng.integers(0, 255, (40 + i, 57 - i, 3), dtype=np.uint8)).save(
                        os.path.join(spec, split, c, f"{i}.png"))
    rc, out = run(tmp_path, "run", "--method", "simclr", "--max-steps", "1", "--data", spec,
                  *(["--data-args", "{}"] if data == "folder" else []))
    assert rc == 0
    model = clzoo.create_model(f"local-dir:{out}", pretrained=True).eval()
    cfg = json.load(open(os.path.join(out, "config.json")))["pretrained_cfg"]
    assert cfg["crop_pct"] == (1.0 if data == "synthetic" else 0.875) and image_size(model) == 32
    evaluated = load_split(spec, "train", eval_transform(model), 32, 0)  # as eval_knn.main builds it
    monitored = eval_view(build_dataset(spec, "train", 32, 0), 32, "synthetic" if data == "synthetic" else spec)
    for i in (0, 1, 37, len(evaluated) - 1):
        assert torch.equal(evaluated[i][0], monitored[i][0]) and evaluated[i][1] == monitored[i][1], i
    feats, labels = extract_features(model, monitored, batch_size=16, max_samples=40, channels_last=False)
    with torch.no_grad():
        direct = model(torch.stack([evaluated[i][0] for i in range(40)]))
    torch.testing.assert_close(feats, direct, rtol=1e-5, atol=1e-5)
    assert labels.tolist() == [evaluated[i][1] for i in range(40)]
