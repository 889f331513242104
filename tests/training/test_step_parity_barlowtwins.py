"""Barlow Twins: clzoo's trainer takes the official trainer's 3 optimizer steps (facebookresearch/barlowtwins
main.py: BarlowTwins, its LARS with the bias / BN filters, adjust_learning_rate across the end of the warmup;
fixture from tests/data/step_parity/gen_barlowtwins.py).

clzoo's default `grad_scale: official` is main.py's gradient at every world size (1/W of the global loss's);
at one process it equals `invariant`, which is checked on 2 processes in test_train_distributed5.py."""

from __future__ import annotations

import pytest
from step_parity import assert_matches, assert_setting_detected, clzoo_steps, load_fixture

pytestmark = pytest.mark.step_parity


@pytest.fixture(scope="module")
def fixture():
    return load_fixture("barlowtwins")


def test_barlowtwins_step_parity(fixture, tmp_path):
    meta, tensors = fixture
    losses, state = clzoo_steps(meta, tensors, tmp_path)
    assert_matches(meta, tensors, losses, state)


@pytest.mark.parametrize("flag, value, changed", [
    ("--hparams.lambd", "0.006", r"step 0: loss"),  # the off-diagonal weight
    ("--warmup-epochs", "9", r"step 1: loss"),  # step 9 is then the cosine's first, not warmup's last
    ("--hparams.bias_lr_scale", "0.05", r"step 1: loss"),  # the biases' / BN's own lr
])
def test_barlowtwins_comparison_can_fail(fixture, tmp_path, flag, value, changed):
    assert_setting_detected(*fixture, tmp_path, flag, value, changed)
