"""CMC: clzoo's trainer takes the official trainer's 3 optimizer steps (HobbitLong/CMC train_CMC.py train with
NCE/NCEAverage.py and NCECriterion.py: L and ab ResNet-18s at width 0.5 with fc -> 128, both memory banks
read with one noise draw, Z_l and Z_ab fixed from the first batch, both NCE terms, the momentum update of both
banks; fixture from tests/data/step_parity/gen_cmc.py). The official batch is skimage's Lab of the images;
clzoo's is the same images as ImageNet-normalised RGB, which its CMCResNet converts to Lab itself. The noise
indices are clzoo's draws, given to the official sampler."""

from __future__ import annotations

import pytest
from step_parity import assert_matches, assert_setting_detected, clzoo_steps, load_fixture

pytestmark = pytest.mark.step_parity


@pytest.fixture(scope="module")
def fixture():
    return load_fixture("cmc")


def test_cmc_step_parity(fixture, tmp_path):
    meta, tensors = fixture
    losses, state = clzoo_steps(meta, tensors, tmp_path)
    assert_matches(meta, tensors, losses, state)


@pytest.mark.parametrize("flag, value, changed", [
    ("--hparams.m", "0.6", r"step 1: loss|banks"),  # the banks' momentum
    ("--hparams.tau", "0.1", r"step 0: loss"),
    ("--hparams.z_momentum", "0.5", r"step [12]: loss|Z"),  # Z kept fixed after the first batch
    ("--model-args.colour", "ydbdr", r"step 0: loss"),  # the views are L and ab of Lab
])
def test_cmc_comparison_can_fail(fixture, tmp_path, flag, value, changed):
    assert_setting_detected(*fixture, tmp_path, flag, value, changed)
