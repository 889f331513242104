"""Regression pins, seed 0: a short run of every contrastive method on the synthetic data, compared with the
same encoder at initialisation (kNN top-1 on the held-out split, and the per-dimension std of the
L2-normalised embedding).

These are not evidence that a method learns. Each margin was measured at one seed, and the random-init kNN
alone moves more than most margins from seed to seed (half-width ResNet-18: 0.107 at seed 0, 0.124 / 0.108 /
0.119 at seeds 1-3; at seed 1 MoCo v2, BYOL and DINO end below their init). What they do catch: a change
that makes a seed-0 run end below its measured level (a broken loss, schedule, momentum update or head
usually sends the kNN to the init or below, or the spread to ~0). A claim that a method learns needs the
margin over >= 3 seeds, larger than 3 standard errors; none is made from these tests, except CMC's and CPC v1 /
v2's (a linear probe, `LEARNS_LINEAR`), whose seeds 1 and 2 were measured beside the pins (see their comments).

Two settings, chosen by measurement (README "Training > Methods" has every number):

* `LEARNS`: the margin over the random-init encoder is asserted. `test_resnet` at 16 px (4x cheaper than
  32 px, so five times the optimizer steps in the same time: 780 steps in ~100 s on one core), the 10 000
  training images, global batch 256, fp32, SGD at a constant learning rate after one warmup epoch (a
  cosine decay over 20 epochs spends half the run at a small rate), MoCo v2's mild colour augmentation,
  kNN on all 2000 held-out images. SimCLR, SimCLR v2 and InvaSpread learn the shapes there: kNN 0.137 ->
  0.26 / 0.23 / 0.24, and MoCo v3 (of the non-contrastive issue's family, here to share the setting) 0.20
  with a momentum starting at 0.5; the margin asserted is about half the measured gain.
* `LEARNS_WIDE`: the margin is asserted too, for methods that do not learn on `test_resnet` in a CI-sized
  run (its random-init features are already at 0.137 and the short runs trade them for colour and
  background: docs/method_search_2026-11-23.tsv). ResNet-18 at half width, 16 px, 12 or 20 epochs
  (the memory-bank methods on 2500 images: InstDisc 80 epochs, PIRL 40) with a cosine decay; its
  random-init kNN is 0.107. ResNet-18 at full width and 32 px (30 epochs, a GPU's work) is
  `test_train_learning_resnet18.py`, marked slow.

DINO's margin is the weakest evidence of the fifteen: see the comment above `LEARNS_WIDE`. Its collapse check
(the teacher's entropies) is in test_train_collapse5.py."""

import json
import math
import os

import pytest

from training import pretrain

from test_train_collapse5 import embedding_std  # noqa: E402  (tests/training is on sys.path)

pytestmark = pytest.mark.long

COMMON = ["--model", "test_resnet", "--image-size", "32", "--batch-size", "256", "--knn.test_samples", "1000",
          "--knn.every", "1000", "--mixed-precision", "no", "--optimizer", "sgd", "--lr-scaling", "none",
          "--lr-schedule", "cosine", "--warmup-epochs", "1", "--weight-decay", "5e-4", "--save-every", "100000"]
MILD_COLOUR = ["--aug.preset", "mocov2", "--aug.scale", "[0.2,1.0]"]

# 16 px, 20 epochs, constant lr after the warmup (min_lr = lr), kNN on all 2000 held-out images.
LEARNS_COMMON = [*COMMON, "--image-size", "16", "--epochs", "20", "--knn.test_samples", "2000", *MILD_COLOUR]
# Measured (this machine, /tmp experiments with these arguments): kNN 0.137 -> simclr 0.259, simclrv2 0.225,
# invaspread 0.241; spreads (std x sqrt(D)) 0.40 initially -> 0.63 / 0.60 / 0.68.
# measured before the recipes took the official loss scale (the sum of both directions) and TF's scaled last BN
SIMCLR_AS_MEASURED = ["--hparams.loss_reduction", "mean", "--hparams.proj_last_bn_scale", "false"]
LEARNS = {  # method: (extra arguments, kNN margin over init, min std x sqrt(D))
    "simclr": (["--lr", "0.5", "--min-lr", "0.5", "--hparams.tau", "0.2", "--hparams.proj_hidden_dim", "512",
                *SIMCLR_AS_MEASURED], 0.06, 0.45),
    "simclrv2": (["--lr", "0.5", "--min-lr", "0.5", "--hparams.tau", "0.2", *SIMCLR_AS_MEASURED], 0.045, 0.45),
    "invaspread": (["--lr", "0.5", "--min-lr", "0.5"], 0.05, 0.45),
    # MoCo v3 (issue 5's family, same setting): with its recipe's m = 0.99 the momentum encoder lags the whole
    # short run (0.122); from m = 0.5 (still raised to 1 by the cosine schedule) 0.137 -> 0.202, spread 0.74.
    # That 0.202 did not survive a change of float rounding alone: the ColorJitter of 3aea114 (the same ops,
    # views within 5e-6 of the old ones) reads 0.1365 -> 0.1475 at seed 0, and seeds 1 / 2 gain 0.005 / 0.069
    # (2026-12-07). The run is that sensitive to its trajectory, so the pin asserts half of today's seed-0 gain.
    "mocov3": (["--lr", "0.5", "--min-lr", "0.5", "--hparams.mlp_dim", "512", "--hparams.tau", "0.2",
                "--hparams.m", "0.5"], 0.005, 0.5),
}

# The queue methods learn in a wider model: ResNet-18 at half width (channels 32-256, 2.8M parameters, 256
# features) at 16 px, 12 or 20 epochs with a cosine decay to 0, 1.5-6 min on one core. Its random-init features are
# near chance on this data (kNN 0.107; test_resnet's are not: 0.137), and 16 px keeps the run CI-sized.
# Measured (this machine, one thread, two runs at once, /tmp experiments with these arguments; every run in
# docs/method_search_2026-11-23.tsv), kNN 0.107 -> after 12 epochs: mocov1 0.133 (102 s; 0.148 after 20 in
# 172 s), mocov2 0.137 (99 s; 0.154 after 20), infomin 0.150 (361 s: the 9-tile jigsaw branch; 0.151 after
# 20 in 496 s), and of issue 5's family, here to share the setting, byol 0.139 (239 s; 0.146 after 20),
# barlowtwins 0.131 (162 s; 0.128 after 20); after 20 epochs: deepclusterv2 0.135 (287 s; 0.123 after 12),
# simsiam 0.132 (197 s), swav 0.139 (222 s). Spreads 0.37 initially -> 0.62 / 0.79 / 0.77 / 0.78 / 0.61 /
# 0.77 / 0.80 / 0.80. The shorter runs keep CI under 30 minutes (28 min with every run at 20 epochs).
# * SimSiam learns at a constant lr 0.1 (0.118 with a cosine from 0.5); SwAV and Barlow Twins with their
#   recipes' LARS (SGD: 0.126-0.128 and 0.114-0.118; SwAV without the small crops). Barlow Twins is noisy
#   (0.125, 0.137, 0.131 every 4 epochs of the 12; 0.125-0.138 over 20): margin 0.012.
# * InstDisc learns with the exact non-parametric softmax over the memory bank (the paper's eq. 2, which NCE
#   approximates; lemniscate's `--nce-k 0`) on 2500 images for 80 epochs, so that each bank entry is
#   refreshed 80 times: 0.111 (this 2500-image kNN bank) -> 0.132 in 102 s, spread 0.56. With NCE it does
#   not (0.097-0.111, also on 10 000 images, at lr 0.03 or 24 px): at this size K / N is near 1 or above,
#   where NCE's noise terms dominate the loss (hundreds, against ~6 for the softmax).
# * PIRL likewise, with its two terms as softmaxes over the whole bank (`--hparams.loss softmax`, VISSL's
#   `loss_type: cross_entropy` with every entry a negative), tau 0.1, 2500 images x 40 epochs: 0.111 ->
#   0.129 (215 s; 0.119, 0.120, 0.126, 0.129 over the last 16 epochs; since the ColorJitter rounding change of
#   3aea114, 0.1105 -> 0.118, and seeds 1 / 2 gain 0.0005 / 0.0235: margin 0.0035), spread 0.71; tau 0.07: 0.123; on
#   1000 images x 80 epochs: 0.100 -> 0.101. With NCE no run learned (0.104-0.109), and a 10 000-image run
#   takes ~10 min (the 9-tile jigsaw branch).
# * CMC (L | ab, one half-width ResNet-18 per view; its random-init kNN is higher, 0.1585 at seed 0: the L branch
#   alone reads 0.22-0.25): 0.1585 -> 0.1815 in 211 s, spread 0.79; seeds 1 / 2: 0.1575 -> 0.1790, 0.1410 -> 0.1850.
#   Gains 0.0230 / 0.0215 / 0.0440: mean 0.0295, standard error 0.0073 (3 SE 0.0218): the one multi-seed learning
#   claim of this file (measured 2026-12-07 with these arguments and --seed 0 / 1 / 2; the pin is seed 0's, +0.011).
#   With the recipe's crop scale 0.2-1 the loss stays at chance (15.3 against 2 ln 2500 = 15.6) and every run ends
#   below init: the bank entry of an image's other view comes from another crop, and across crops L and ab share
#   only colour; in-batch (same crop) the cross-view loss falls (11.1 -> 6.3 in 300 steps).
# * DINO: 0.107 -> 0.1165 (12 epochs, AdamW 1e-3, teacher temperature 0.02, center momentum 0.5), measured
#   2026-12-06 at b7572d9 and at 2f43b27 alike, and by CI: the 0.136 (159 s, spread 0.81) read when the setting
#   was chosen does not reproduce with today's packages. Margin 0.005: this pin only catches a run that ends
#   at or below its init; a collapsed head also reads ~0.12, so DINO's collapse is caught by the teacher-entropy
#   test (test_train_collapse5.py), not here. The other ~50 settings tried read 0.101-0.127 (LARS, SGD or AdamW; 128-4096
#   prototypes, BN in the head or not; teacher momentum 0.5-0.996, temperature 0.01-0.1; center momentum 0, 0.5,
#   0.9; with or without small crops; batch 64 or 256; 12 or 20 epochs), a range that a run whose head collapsed
#   to uniform also reaches (0.122); this one is above it. It is seed-dependent: seed 1 0.124 -> 0.116, seed 2
#   0.108 -> 0.128, seed 3 0.119 -> 0.108 (MoCo v2 and BYOL at seed 1 also lose: 0.124 -> 0.119 / 0.116).
#   Why DINO learns so little here: `eval_knn.py --target bg_colour` shows that the random-init encoder already clusters the
#   background colour (kNN 0.85 on its 8 octants), which two views share under mild jitter, and DINO's teacher
#   keeps clustering it (0.85 -> 0.85, shape colour 0.19 -> 0.21); MoCo v2 and BYOL turn to the foreground
#   (shape colour 0.19 -> 0.29 / 0.26, background 0.81 / 0.83). With strong jitter the teacher goes uniform.
#   20 epochs of the same setting read 0.127. docs/method_search_2026-11-23.tsv has every run (rows u_ to y_).
HALF_RESNET18 = ["--model", "resnet18", "--model-args.channels", "[32,64,128,256]"]
WIDE_COMMON = [*COMMON, *HALF_RESNET18, "--image-size", "16", "--epochs", "20", "--min-lr", "0",
               "--knn.test_samples", "2000", *MILD_COLOUR]
QUEUE = ["--lr", "0.3", "--hparams.K", "4096", "--hparams.m", "0.99", "--bn-splits", "8"]
LEARNS_WIDE = {  # method: (extra arguments, kNN margin over init, min std x sqrt(D))
    "mocov1": ([*QUEUE, "--epochs", "12"], 0.013, 0.45),
    "mocov2": ([*QUEUE, "--epochs", "12"], 0.015, 0.5),
    "infomin": ([*QUEUE, "--epochs", "12"], 0.02, 0.5),
    "byol": (["--optimizer", "lars", "--lr", "1.0", "--weight-decay", "1e-5", "--hparams.tau_base", "0.99",
              "--epochs", "12"], 0.02, 0.5),
    "deepclusterv2": (["--lr", "0.6", "--hparams.nmb_prototypes", "[100,100,100]", "--aug.local_views", "2",
                       "--aug.local_size", "8", "--aug.local_scale", "[0.1,0.4]", "--aug.scale", "[0.4,1.0]"], 0.014, 0.5),
    "simsiam": (["--lr", "0.1", "--min-lr", "0.1", "--hparams.dim", "512", "--hparams.pred_dim", "128"], 0.012, 0.5),
    "swav": (["--optimizer", "lars", "--lr", "0.6", "--weight-decay", "1e-6", "--hparams.nmb_prototypes", "100",
              "--aug.local_views", "0"], 0.015, 0.5),
    "instdisc": (["--lr", "0.3", "--hparams.K", "0", "--hparams.loss", "softmax", "--aug.num_views", "1",
                  "--data-args.num_samples", "2500", "--epochs", "80"], 0.01, 0.4),
    "barlowtwins": (["--optimizer", "lars", "--lr", "0.3", "--weight-decay", "1e-4", "--hparams.proj_dims",
                     "[1024,1024,1024]", "--epochs", "12"], 0.012, 0.45),
    "pirl": (["--lr", "0.3", "--hparams.K", "0", "--hparams.loss", "softmax", "--hparams.tau", "0.1",
              "--data-args.num_samples", "2500", "--epochs", "40"], 0.0035, 0.5),
    # CMC: the whole-bank softmax, 2500 images x 120 epochs, crop + flip only with crops of 0.8-1 (the recipe's 0.2-1
    # leaves the L and ab banks nothing in common but colour: every such run ended below init, README).
    "cmc": (["--hparams.K", "0", "--hparams.loss", "softmax", "--data-args.num_samples", "2500", "--epochs", "120",
             "--aug.preset", "cmc", "--aug.scale", "[0.8,1.0]", "--aug.num_views", "1", "--lr", "0.03"], 0.011, 0.5),
    # DINO: AdamW, a 0.02 teacher and a center that follows the batch (center momentum 0.5, not 0.9).
    "dino": (["--model-args", "{}", *HALF_RESNET18[2:], "--optimizer", "adamw", "--lr", "1e-3", "--weight-decay",
              "0.04", "--weight-decay-end", "0.04", "--clip-grad", "3.0", "--warmup-epochs", "3", "--aug.local_views",
              "0", "--hparams.out_dim", "1024", "--hparams.hidden_dim", "512", "--hparams.bottleneck_dim", "128",
              "--hparams.momentum_teacher", "0.99", "--hparams.center_momentum", "0.5", "--hparams.teacher_temp",
              "0.02", "--hparams.warmup_teacher_temp", "0.02", "--epochs", "12"], 0.005, 0.5),
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
def test_seed0_pin_short_run_ends_above_its_init(tmp_path, setting, method):
    common, cases = SETTINGS[setting]
    extra, margin, min_spread = cases[method]
    r, spread = _run(tmp_path, method, [*common, *extra], 16)
    assert spread >= min_spread
    assert r["knn_top1"] >= r["knn_top1_init"] + margin, r


# CPC v1 / v2 are judged, as in their papers, by a linear classifier on the pooled patch grid (`--knn.linear
# true`: training/monitor.py's L-BFGS probe on the kNN's features, fitted on the 2500-image bank). Their cosine
# kNN shows no margin in the CPU-sized runs (README: it falls at some seeds and rises at others), while the probe rises. Half-width ResNet-18 on 8-px
# patches every 4 px of 24-px images (5 x 5 grid), 3 rows ahead, global batch 64 (the logits are (64 x 25)^2 per
# step), AdamW 1e-3 with a cosine, 2500 images x 10 epochs (CPC v1: 20), crop (0.5-1) + flip. Measured 2026-12-07
# with these arguments and --seed 0 / 1 / 2, probe init -> trained (kNN init -> trained):
# * cpcv2, 10 epochs (~300 s): 0.1485 -> 0.1630, 0.1425 -> 0.1665, 0.1465 -> 0.1560 (kNN 0.1320 -> 0.1245, 0.1285 ->
#   0.1285, 0.1305 -> 0.1235): gain 0.0160, standard error 0.0043 (3 SE 0.0128). Pin: half of seed 0's; spread 0.23.
# * cpc, 20 epochs (~400 s): 0.1355 -> 0.1905, 0.1390 -> 0.1805, 0.1535 -> 0.1810 (kNN 0.1300 -> 0.1280, 0.1180 ->
#   0.1330, 0.1195 -> 0.1230): gain 0.0413, standard error 0.0079 (3 SE 0.0238). Pin: about half of seed 0's;
#   spread 0.71. At 10 epochs: +0.0215 / +0.0145 / -0.0075 (seed 2: 0.1535 -> 0.1460), no claim.
CPC_COMMON = [*COMMON, *HALF_RESNET18, "--image-size", "24", "--batch-size", "64", "--epochs", "10",
              "--data-args.num_samples", "2500", "--knn.test_samples", "2000", "--knn.linear", "true",
              "--optimizer", "adamw", "--lr", "1e-3", "--min-lr", "0", "--weight-decay", "0", "--aug.preset", "cmc",
              "--aug.scale", "[0.5,1.0]", "--aug.num_views", "1", "--model-args.patch", "8", "--model-args.stride",
              "4", "--hparams.steps", "3"]
LEARNS_LINEAR = {"cpc": (["--epochs", "20"], 0.025, 0.5), "cpcv2": ([], 0.007, 0.15)}  # extra arguments, probe margin, min std x sqrt(D)


@pytest.mark.parametrize("method", sorted(LEARNS_LINEAR))
def test_seed0_pin_cpc_linear_probe_ends_above_its_init(tmp_path, method):
    extra, margin, min_spread = LEARNS_LINEAR[method]
    r, spread = _run(tmp_path, method, [*CPC_COMMON, *extra], 24)
    print(f"{method}: linear probe {r['linear_top1_init']:.4f} -> {r['linear_top1']:.4f}")
    assert spread >= min_spread
    assert r["linear_top1"] >= r["linear_top1_init"] + margin, r
