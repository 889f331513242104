"""A short run of every contrastive method on the synthetic data, compared with the same encoder at
initialisation (kNN top-1 on the held-out split, and the per-dimension std of the L2-normalised embedding).

Three settings, chosen by measurement (README "Training > Methods" has every number):

* `LEARNS`: the margin over the random-init encoder is asserted. `test_resnet` at 16 px (4x cheaper than
  32 px, so five times the optimizer steps in the same time: 780 steps in ~100 s on one core), the 10 000
  training images, global batch 256, fp32, SGD at a constant learning rate after one warmup epoch (a
  cosine decay over 20 epochs spends half the run at a small rate), MoCo v2's mild colour augmentation,
  kNN on all 2000 held-out images. SimCLR, SimCLR v2 and InvaSpread learn the shapes there: kNN 0.137 ->
  0.26 / 0.23 / 0.24, and MoCo v3 (of the non-contrastive issue's family, here to share the setting) 0.20
  with a momentum starting at 0.5; the margin asserted is about half the measured gain.
* `LEARNS_WIDE`: the margin is asserted too, for methods that do not learn on `test_resnet` in a CI-sized
  run (its random-init features are already at 0.137 and the short runs trade them for colour and
  background: docs/method_search_2026-11-23.tsv). ResNet-18 at half width, 16 px, 20 epochs with a cosine
  decay; its random-init kNN is 0.107. ResNet-18 at full width and 32 px (30 epochs, a GPU's work) is
  `test_train_learning_resnet18.py`, marked slow.
* `CASES`: the methods that learn in neither CI-sized setting. A cheaper 32 px `test_resnet` run asserts
  that it neither collapsed the embedding nor destroyed the features (kNN within `KNN_FLOOR`)."""

import json
import math
import os

import pytest

from training import pretrain

from test_train_collapse5 import embedding_std  # noqa: E402  (tests/training is on sys.path)

COMMON = ["--model", "test_resnet", "--image-size", "32", "--batch-size", "256", "--knn.test_samples", "1000",
          "--knn.every", "1000", "--mixed-precision", "no", "--optimizer", "sgd", "--lr-scaling", "none",
          "--lr-schedule", "cosine", "--warmup-epochs", "1", "--weight-decay", "5e-4", "--save-every", "100000"]
KNN_FLOOR = 0.05
MILD_COLOUR = ["--aug.preset", "mocov2", "--aug.scale", "[0.2,1.0]"]

# 16 px, 20 epochs, constant lr after the warmup (min_lr = lr), kNN on all 2000 held-out images.
LEARNS_COMMON = [*COMMON, "--image-size", "16", "--epochs", "20", "--knn.test_samples", "2000", *MILD_COLOUR]
# Measured (this machine, /tmp experiments with these arguments): kNN 0.137 -> simclr 0.259, simclrv2 0.225,
# invaspread 0.241; spreads (std x sqrt(D)) 0.40 initially -> 0.63 / 0.60 / 0.68.
LEARNS = {  # method: (extra arguments, kNN margin over init, min std x sqrt(D))
    "simclr": (["--lr", "0.5", "--min-lr", "0.5", "--hparams.tau", "0.2", "--hparams.proj_hidden_dim", "512"], 0.06, 0.45),
    "simclrv2": (["--lr", "0.5", "--min-lr", "0.5", "--hparams.tau", "0.2"], 0.045, 0.45),
    "invaspread": (["--lr", "0.5", "--min-lr", "0.5"], 0.05, 0.45),
    # MoCo v3 (issue 5's family, same setting): with its recipe's m = 0.99 the momentum encoder lags the whole
    # short run (0.122); from m = 0.5 (still raised to 1 by the cosine schedule) 0.137 -> 0.202, spread 0.74.
    "mocov3": (["--lr", "0.5", "--min-lr", "0.5", "--hparams.mlp_dim", "512", "--hparams.tau", "0.2",
                "--hparams.m", "0.5"], 0.03, 0.5),
}

# The queue methods learn in a wider model: ResNet-18 at half width (channels 32-256, 2.8M parameters, 256
# features) at 16 px, 20 epochs with a cosine decay to 0, ~3 min on one core. Its random-init features are
# near chance on this data (kNN 0.107; test_resnet's are not: 0.137), and 16 px keeps the run CI-sized.
# Measured (this machine, one thread, two runs at once, /tmp experiments with these arguments): kNN 0.107 ->
# mocov1 0.148 (172 s), mocov2 0.154 (181 s), infomin 0.151 (496 s: the 9-tile jigsaw branch), byol 0.146
# (368 s) and deepclusterv2 0.135 (287 s; these two of issue 5's family, here to share the setting);
# spreads 0.37 initially -> 0.68 / 0.79 / 0.76 / 0.78 / 0.77. No margin there: SimSiam (lr 0.5, wd 1e-5)
# 0.118, Barlow Twins (lr 0.1, 2048-d projector) 0.114, SwAV 0.127, DINO (LARS) 0.119, InstDisc 0.111.
HALF_RESNET18 = ["--model", "resnet18", "--model-args.channels", "[32,64,128,256]"]
WIDE_COMMON = [*COMMON, *HALF_RESNET18, "--image-size", "16", "--epochs", "20", "--min-lr", "0",
               "--knn.test_samples", "2000", *MILD_COLOUR]
QUEUE = ["--lr", "0.3", "--hparams.K", "4096", "--hparams.m", "0.99", "--hparams.bn_splits", "8"]
LEARNS_WIDE = {  # method: (extra arguments, kNN margin over init, min std x sqrt(D))
    "mocov1": (QUEUE, 0.02, 0.45),
    "mocov2": (QUEUE, 0.02, 0.5),
    "infomin": (QUEUE, 0.02, 0.5),
    "byol": (["--optimizer", "lars", "--lr", "1.0", "--weight-decay", "1e-5", "--hparams.tau_base", "0.99"], 0.02, 0.5),
    "deepclusterv2": (["--lr", "0.6", "--hparams.nmb_prototypes", "[100,100,100]", "--aug.local_views", "2",
                       "--aug.local_size", "8", "--aug.local_scale", "[0.1,0.4]", "--aug.scale", "[0.4,1.0]"], 0.014, 0.5),
}

# Measured spreads of the 8-epoch 32 px runs: 0.40 initially; instdisc 0.21, mocov1 0.75, mocov2 0.79, pirl
# 0.12, infomin 0.80 (memory-bank methods spread less: their bank, not the encoder, holds the instance codes).
CASES = {  # method: (epochs, extra arguments, min std x sqrt(D))
    "instdisc": (8, ["--lr", "0.1", "--hparams.K", "256", "--hparams.tau", "0.1"], 0.1),
    "pirl": (8, ["--lr", "0.1", "--hparams.K", "1024"], 0.06),
}


def _run(tmp_path, method, args, image_size):
    out = str(tmp_path / method)
    assert pretrain.main(["--method", method, *args, "--output", out]) == 0
    r = json.load(open(os.path.join(out, "results.json")))
    std, D = embedding_std(out, image_size=image_size)
    print(f"{method}: kNN {r['knn_top1_init']:.4f} -> {r['knn_top1']:.4f}, std x sqrt(D) {std * math.sqrt(D):.3f}, "
          f"{r['wall_time_s']} s")
    return r, std * math.sqrt(D)


SETTINGS = {"test_resnet": (LEARNS_COMMON, LEARNS), "half_resnet18": (WIDE_COMMON, LEARNS_WIDE)}


@pytest.mark.parametrize("setting,method", [(s, m) for s, (_, cases) in SETTINGS.items() for m in cases])
def test_short_run_beats_random_init(tmp_path, setting, method):
    common, cases = SETTINGS[setting]
    extra, margin, min_spread = cases[method]
    r, spread = _run(tmp_path, method, [*common, *extra], 16)
    assert spread >= min_spread
    assert r["knn_top1"] >= r["knn_top1_init"] + margin, r


@pytest.mark.parametrize("method", list(CASES))
def test_short_run_keeps_features(tmp_path, method):
    epochs, extra, min_spread = CASES[method]
    r, spread = _run(tmp_path, method, [*COMMON, "--epochs", str(epochs), *extra], 32)
    assert spread >= min_spread
    assert r["knn_top1"] >= r["knn_top1_init"] - KNN_FLOOR, r
