"""SimSiam: clzoo's trainer takes the official trainer's 3 optimizer steps (facebookresearch/simsiam,
main_simsiam.py with and without --fix-pred-lr; fixtures from tests/data/step_parity/gen_simsiam.py).

The official projector's last Linear keeps a frozen bias before its affine-free BN; clzoo's has none. The
fixture folds that bias into the BN's running mean (clzoo's `_fold_frozen_bias`, the same rule that loads the
released checkpoints), so every other tensor is compared as it is."""

from __future__ import annotations

import pytest
from step_parity import assert_matches, clzoo_steps, load_fixture

pytestmark = pytest.mark.step_parity


@pytest.fixture(scope="module", params=["simsiam", "simsiam_cos_pred"])
def fixture(request):
    return load_fixture(request.param)


def test_simsiam_step_parity(fixture, tmp_path):
    meta, tensors = fixture
    losses, state = clzoo_steps(meta, tensors, tmp_path)
    assert_matches(meta, tensors, losses, state)


def test_simsiam_detects_the_other_predictor_lr(fixture, tmp_path):
    """The comparison can fail: the fixture's run with the other --fix-pred-lr setting does not match (the
    predictor's lr differs from step 1 on, so the step-2 loss and the predictor's weights move)."""
    meta, tensors = fixture
    argv = list(meta["argv"])
    i = argv.index("--hparams.fix_pred_lr") + 1
    argv[i] = "false" if argv[i] == "true" else "true"
    losses, state = clzoo_steps({**meta, "argv": argv}, tensors, tmp_path)
    with pytest.raises(AssertionError, match=r"step 2: loss|predictor\."):
        assert_matches(meta, tensors, losses, state)
