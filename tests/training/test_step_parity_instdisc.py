"""InstDisc: clzoo's trainer takes the official trainer's 3 optimizer steps (zhirongw/lemniscate.pytorch
main.py train with lib/NCEAverage.py and NCECriterion.py: the bank read, Z fixed from the first batch, the NCE
loss, the momentum update of the bank; fixture from tests/data/step_parity/gen_instdisc.py, which runs two
official lines patched for today's Python / PyTorch, see there). The noise indices are clzoo's draws, given to
the official sampler."""

from __future__ import annotations

import pytest
from step_parity import assert_matches, assert_setting_detected, clzoo_steps, load_fixture

pytestmark = pytest.mark.step_parity


@pytest.fixture(scope="module")
def fixture():
    return load_fixture("instdisc")


def test_instdisc_step_parity(fixture, tmp_path):
    meta, tensors = fixture
    losses, state = clzoo_steps(meta, tensors, tmp_path)
    assert_matches(meta, tensors, losses, state)


@pytest.mark.parametrize("flag, value, changed", [
    ("--hparams.m", "0.6", r"step 1: loss|bank"),  # the bank's momentum
    ("--hparams.tau", "0.1", r"step 0: loss"),
    ("--hparams.z_momentum", "0.5", r"step [12]: loss|Z"),  # Z kept fixed after the first batch
])
def test_instdisc_comparison_can_fail(fixture, tmp_path, flag, value, changed):
    assert_setting_detected(*fixture, tmp_path, flag, value, changed)
