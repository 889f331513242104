"""MoCo v1 and v2: clzoo's trainer takes the official trainer's 3 optimizer steps (facebookresearch/moco,
main_moco.py; v2 with --mlp --moco-t 0.2 --cos, v1 with the step schedule; fixtures from
tests/data/step_parity/gen_moco.py).

One difference of bookkeeping, not of the trajectory: builder.py applies the key encoder's momentum update
at the start of each forward (moco/builder.py:143, `self._momentum_update_key_encoder()` before the key
forward), clzoo right after each optimizer step (mocov1.py `after_optimizer_step`). Every key forward sees
the same key encoder (the official first update is a no-op: k = q at init), but after the last step the
official key encoder still lacks the update with the last query weights. The parity test compares clzoo's
momentum parameters with the official ones advanced by that pending update (m k + (1 - m) q, builder.py:63);
the raw comparison is kept as a strict xfail that records the difference."""

from __future__ import annotations

import pytest
from step_parity import assert_matches, clzoo_steps, load_fixture, momentum_params, with_pending_momentum_update

pytestmark = pytest.mark.step_parity

def _m(meta: dict) -> float:
    argv = meta["argv"]
    return float(argv[argv.index("--hparams.m") + 1])


@pytest.fixture(scope="module", params=["mocov1", "mocov2"])
def fixture(request):
    return load_fixture(request.param)


def test_moco_step_parity(fixture, tmp_path):
    meta, tensors = fixture
    losses, state = clzoo_steps(meta, tensors, tmp_path)
    assert_matches(meta, with_pending_momentum_update(tensors, _m(meta)), losses, state)


def test_moco_detects_a_perturbed_step(fixture, tmp_path):
    """The comparison can fail: the same run with another lr does not match the official steps."""
    meta, tensors = fixture
    meta = {**meta, "argv": [*meta["argv"], "--lr", "0.11"]}
    losses, state = clzoo_steps(meta, tensors, tmp_path)
    with pytest.raises(AssertionError, match=r"step 1: loss"):
        assert_matches(meta, with_pending_momentum_update(tensors, _m(meta)), losses, state)


@pytest.mark.xfail(strict=True, reason="the official final key encoder lacks the momentum update with the "
                   "last step's query weights (moco/builder.py:143 applies it at the start of the next "
                   "forward); clzoo applies it in after_optimizer_step (training/methods/mocov1.py)")
def test_moco_momentum_encoder_as_the_official_code_left_it(fixture, tmp_path):
    meta, tensors = fixture
    _, state = clzoo_steps(meta, tensors, tmp_path)
    atol = meta["atol"]
    for k in momentum_params(tensors):
        diff = (state[k[len("final/"):]] - tensors[k]).abs().max().item()
        assert diff <= atol, f"{k[len('final/'):]}: max |diff| {diff:.3g} > {atol}"
