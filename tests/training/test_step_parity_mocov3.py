"""MoCo v3, ResNet (LARS) and ViT (AdamW): clzoo's trainer takes the official trainer's 3 optimizer steps
(facebookresearch/moco-v3 main_moco.py, lr and momentum per iteration; fixtures from
tests/data/step_parity/gen_mocov3.py). As in MoCo v1/v2 the official momentum update runs at the start of the
next forward (moco/builder.py `forward`, with that iteration's m), clzoo's right after the step with the same
m: the fixture's momentum encoder is compared after that pending update (m = the JSON's `pending_m`)."""

from __future__ import annotations

import pytest
from step_parity import assert_matches, clzoo_steps, load_fixture, with_pending_momentum_update

pytestmark = pytest.mark.step_parity


@pytest.fixture(scope="module", params=["mocov3_resnet", "mocov3_vit"])
def fixture(request):
    return load_fixture(request.param)


def test_mocov3_step_parity(fixture, tmp_path):
    meta, tensors = fixture
    losses, state = clzoo_steps(meta, tensors, tmp_path)
    assert_matches(meta, with_pending_momentum_update(tensors, meta["pending_m"]), losses, state)


def test_mocov3_detects_a_constant_momentum(fixture, tmp_path):
    """The comparison can fail: with the momentum encoder's m held at its start value (no cosine to 1) the
    momentum encoder after 3 steps differs."""
    meta, tensors = fixture
    argv = [*meta["argv"], "--hparams.m", "0.9"]
    losses, state = clzoo_steps({**meta, "argv": argv}, tensors, tmp_path)
    with pytest.raises(AssertionError, match=r"step 2: loss|momentum_"):
        assert_matches(meta, with_pending_momentum_update(tensors, meta["pending_m"]), losses, state)
