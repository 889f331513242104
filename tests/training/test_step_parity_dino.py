"""DINO: clzoo's trainer takes the official trainer's 3 optimizer steps (facebookresearch/dino main_dino.py
train_one_epoch over epoch 0 and the start of epoch 1: the np.linspace warmup, the teacher-temperature epoch
schedule, the last layer frozen in epoch 0, per-parameter clipping, the center and the teacher EMA, with local
crops through the official position-embedding interpolation; fixture from tests/data/step_parity/gen_dino.py).

The official student has drop path 0 here: its masks are random draws that no second implementation replays."""

from __future__ import annotations

import pytest
from step_parity import assert_matches, assert_setting_detected, clzoo_steps, load_fixture

pytestmark = pytest.mark.step_parity


@pytest.fixture(scope="module")
def fixture():
    return load_fixture("dino")


def test_dino_step_parity(fixture, tmp_path):
    meta, tensors = fixture
    losses, state = clzoo_steps(meta, tensors, tmp_path)
    assert_matches(meta, tensors, losses, state)


@pytest.mark.parametrize("flag, value, changed", [
    ("--vit-pos-interpolation", "timm", r"step 0: loss"),  # timm's antialiased resampling for the local crops
    ("--warmup-style", "fraction", r"step [12]: loss"),  # lr x step / warmup instead of np.linspace
    ("--hparams.freeze_last_layer", "0", r"step [12]: loss|last_layer"),  # last layer trained in epoch 0
    ("--clip-grad", "0", r"step [12]: loss|backbone"),  # no per-parameter clipping
    ("--hparams.teacher_temp", "0.04", r"step 2: loss"),  # the teacher temperature of epoch 1
    ("--hparams.momentum_teacher", "0.99", r"step 2: loss|backbone\.|teacher_head"),  # the teacher EMA
])
def test_dino_comparison_can_fail(fixture, tmp_path, flag, value, changed):
    assert_setting_detected(*fixture, tmp_path, flag, value, changed)
