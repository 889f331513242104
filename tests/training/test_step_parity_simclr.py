"""SimCLR v1 and v2: clzoo's trainer takes the official trainer's 3 optimizer steps (google-research/simclr
tf2/, TensorFlow: run.py main's single_step with model.Model, objective.add_contrastive_loss,
lars_optimizer.LARSOptimizer and model.WarmUpAndCosineDecay; fixtures from
tests/data/step_parity/gen_simclr.py, run in a TensorFlow venv outside the project).

The recipes' own settings give the official step: LARS with the lr inside the momentum buffer
(`lars_lr_in_momentum`), BN / biases excluded from decay and adaptation, the loss as the official sum of both
directions (`loss_reduction: sum`), the head's last BN with a scale and no beta.

Keras's BatchNormalization keeps the moving average of the *biased* batch variance, PyTorch's of the unbiased
one (x n / (n - 1), n values per channel); both start at 1 with decay 0.9, so after U updates
running_var = 0.9^U + n / (n - 1) x (moving_variance - 0.9^U) exactly. The comparison converts the
fixture's moving variances by that relation; every other tensor is compared as TF left it."""

from __future__ import annotations

import pytest
from step_parity import _prefixed, assert_matches, assert_setting_detected, bn_sizes, clzoo_steps, load_fixture

pytestmark = pytest.mark.step_parity

MOMENTUM = 0.9  # run.py batch_norm_decay


def with_pytorch_running_var(meta: dict, tensors: dict) -> dict:
    """The fixture with Keras's moving variances as PyTorch's running_var (module docstring)."""
    sizes = bn_sizes(meta, tensors)
    batch = 2 * int(meta["argv"][meta["argv"].index("--batch-size") + 1])  # both views: one BN batch
    updates = len(meta["losses"])
    out = dict(tensors)
    for key in _prefixed(tensors, "final/"):
        if not key.endswith(".running_var"):
            continue
        module = key[:-len(".running_var")]
        if module.startswith("backbone."):
            n = 2 * sizes[module[len("backbone."):]]
        else:  # the projector's BatchNorm1d: one value per view
            n = batch
        start = MOMENTUM ** updates
        out[f"final/{key}"] = start + n / (n - 1) * (tensors[f"final/{key}"].double() - start)
    return out


@pytest.fixture(scope="module", params=["simclr", "simclrv2"])
def fixture(request):
    meta, tensors = load_fixture(request.param)
    return meta, with_pytorch_running_var(meta, tensors), tensors


def test_simclr_step_parity(fixture, tmp_path):
    meta, expected, _ = fixture
    losses, state = clzoo_steps(meta, expected, tmp_path)
    assert_matches(meta, expected, losses, state)


def test_simclr_running_var_conversion_is_needed(fixture, tmp_path):
    """Keras's moving variances as they are do not equal PyTorch's buffers: the conversion is not a no-op."""
    meta, _, raw = fixture
    losses, state = clzoo_steps(meta, raw, tmp_path)
    with pytest.raises(AssertionError, match=r"running_var"):
        assert_matches(meta, raw, losses, state)


def test_simclr_mean_loss_takes_another_step(fixture, tmp_path):
    """lightly's scale (the mean of the two directions) is not only half the logged loss: with the official
    losses halved, step 0 agrees and the steps (LARS: unadapted BN / bias steps, decay before the trust
    ratio) leave the tolerance."""
    meta, expected, _ = fixture
    halved = {**meta, "losses": [loss / 2 for loss in meta["losses"]]}
    assert_setting_detected(halved, expected, tmp_path, "--hparams.loss_reduction", "mean",
                            r"step [12]: loss|\.(weight|bias) ")


@pytest.mark.parametrize("flag, value, changed", [
    ("--lars-lr-in-momentum", "false", r"step 2: loss|backbone\."),  # the lr outside the momentum buffer
    ("--hparams.tau", "0.2", r"step 0: loss"),
    ("--warmup-epochs", "3", r"step 1: loss|backbone\."),
])
def test_simclr_comparison_can_fail(fixture, tmp_path, flag, value, changed):
    """The comparison can fail: a perturbed setting moves the tensors it governs beyond atol."""
    meta, expected, _ = fixture
    assert_setting_detected(meta, expected, tmp_path, flag, value, changed)
