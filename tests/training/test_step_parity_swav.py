"""SwAV: clzoo's trainer takes the official trainer's 3 optimizer steps (facebookresearch/swav main_swav.py
`train` with apex LARC, the warmup from start_warmup, prototypes frozen for 1 step and a queue used in step 2;
fixture from tests/data/step_parity/gen_swav.py).

main_swav.py L2-normalises the prototypes at the start of each iteration, clzoo right after each optimizer
step (and at construction): the same sequence of forwards. The fixture's final prototypes are as the last
official step left them, so they are compared after that pending normalisation."""

from __future__ import annotations

import pytest
import torch.nn.functional as F
from step_parity import assert_matches, assert_setting_detected, clzoo_steps, load_fixture

pytestmark = pytest.mark.step_parity


def with_pending_normalization(tensors: dict) -> dict:
    """main_swav.py train(): `w = normalize(prototypes.weight, dim=1, p=2)` before the next forward."""
    return {k: F.normalize(v, dim=1, p=2) if k.startswith("final/prototypes") else v for k, v in tensors.items()}


@pytest.fixture(scope="module")
def fixture():
    return load_fixture("swav")


def test_swav_step_parity(fixture, tmp_path):
    meta, tensors = fixture
    losses, state = clzoo_steps(meta, tensors, tmp_path)
    assert_matches(meta, with_pending_normalization(tensors), losses, state)


@pytest.mark.parametrize("flag, value, changed", [
    # LARS: trust ratio eta ||w|| / ||g + wd w||, LARC: trust ||w|| / (||g|| + wd ||w||); at wd 1e-6 they
    # differ where that term matters
    ("--optimizer", "lars", r"step \d: loss|projector\.0\.bias"),
    ("--warmup-start-lr", "0", r"step [12]: loss"),  # the recipe's warmup before this fix
    ("--warmup-style", "fraction", r"step [12]: loss"),  # lr x step / warmup instead of np.linspace
    ("--hparams.freeze_prototypes_epochs", "0", r"step [12]: loss|prototypes"),  # prototypes trained in step 0
    ("--hparams.epoch_queue_starts", "1", r"step 2: loss"),  # the queue enters the Sinkhorn of step 2
])
def test_swav_comparison_can_fail(fixture, tmp_path, flag, value, changed):
    assert_setting_detected(*fixture, tmp_path, flag, value, changed, expected=with_pending_normalization(fixture[1]))
