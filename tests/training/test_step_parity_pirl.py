"""PIRL: clzoo's trainer takes the official PyContrast trainer's 3 optimizer steps (HobbitLong/PyContrast
`--method PIRL`: ContrastTrainer._train_mem with RGBMultiHeads 'linear', JigsawHead and the RGBMem memory
bank, SGD, per-epoch adjust_learning_rate; fixture from tests/data/step_parity/gen_pycontrast.py).

clzoo's PIRL recipe follows VISSL (NCE, no decay on BN and biases); PyContrast's is its `loss: softmax` (the
cross-entropy over the positive's bank entry and K noise entries) with `decay_bias_and_norm: true`, which the
fixture's argv sets. The noise entries are clzoo's counter-based draw, given to RGBMem's sampler; the jigsaw
patches are in the order PyContrast's head drew (as for InfoMin)."""

from __future__ import annotations

import pytest
from step_parity import assert_matches, assert_setting_detected, clzoo_steps, load_fixture

pytestmark = pytest.mark.step_parity


@pytest.fixture(scope="module")
def fixture():
    return load_fixture("pirl")


def test_pirl_step_parity(fixture, tmp_path):
    meta, tensors = fixture
    losses, state = clzoo_steps(meta, tensors, tmp_path)
    assert_matches(meta, tensors, losses, state)


@pytest.mark.parametrize("flag, value, changed", [
    ("--hparams.lambd", "0.4", r"step 0: loss"),  # the jigsaw term's weight
    ("--hparams.m", "0.6", r"step 1: loss|bank\.bank"),  # the bank's momentum (the next logits)
    # VISSL's exclusion of BN and biases from the decay, not PyContrast's
    ("--hparams.decay_bias_and_norm", "false", r"step 1: loss|\.bias |bn\d?\.weight "),
])
def test_pirl_comparison_can_fail(fixture, tmp_path, flag, value, changed):
    """The comparison can fail: a perturbed setting moves the tensors it governs beyond atol."""
    assert_setting_detected(*fixture, tmp_path, flag, value, changed)
