"""DeepCluster-v2: clzoo's trainer takes the official trainer's 3 optimizer steps and its k-means
(facebookresearch/swav main_deepclusterv2.py: train over epoch 0 and the start of epoch 1, cluster_memory's
spherical k-means on the memory at the start of epoch 1, LARC; fixture from
tests/data/step_parity/gen_deepclusterv2.py).

clzoo fills the memory in an epoch of its own, so the official epoch e is clzoo's e + 1: the fixture starts
from the official state after epoch 0's clustering, at clzoo's step 2; the final assignments and prototypes
are clzoo's k-means (after step 3) against the official cluster_memory of epoch 1."""

from __future__ import annotations

import pytest
from step_parity import assert_matches, assert_setting_detected, clzoo_steps, load_fixture

pytestmark = pytest.mark.step_parity


@pytest.fixture(scope="module")
def fixture():
    return load_fixture("deepclusterv2")


def test_deepclusterv2_step_parity(fixture, tmp_path):
    meta, tensors = fixture
    losses, state = clzoo_steps(meta, tensors, tmp_path)
    assert_matches(meta, tensors, losses, state)


@pytest.mark.parametrize("flag, value, changed", [
    ("--hparams.kmeans_iters", "0", r"step 2: loss|assignments|prototypes"),  # k-means of epoch 1: no M step
    ("--hparams.tau", "0.2", r"step 0: loss"),
    ("--optimizer", "lars", r"step [12]: loss|backbone|projector"),
])
def test_deepclusterv2_comparison_can_fail(fixture, tmp_path, flag, value, changed):
    assert_setting_detected(*fixture, tmp_path, flag, value, changed)
