"""BYOL: clzoo's trainer takes the official trainer's 3 optimizer steps (google-deepmind/deepmind-research
byol/, JAX/Haiku: ByolExperiment.step -> _update_fn (loss_fn, optimizers.lars with exclude_bias_and_norm,
schedules.learning_schedule and target_ema); fixture from tests/data/step_parity/gen_byol.py, run in a JAX
venv outside the project).

Not compared: the official online classifier (a Linear on stop_gradient(embedding), trained beside BYOL for
monitoring; its gradient reaches only its own parameters) and the target network's unused predictor and
classifier; the official loss is logs['repr_loss'] (logs['loss'] adds the classifier's cross-entropy).

BN statistics are Haiku *state* (hk.ExponentialMovingAverage, zero-debiased, of the biased batch variance),
PyTorch's are buffers (momentum 0.1 from running_var 1, unbiased variance); neither enters a training step.
`test_byol_bn_statistics` checks the exact relation between the two after the fixture's steps (the same batch
statistics, 2 per BN per step, per view); `test_byol_bn_eval_statistics_are_haikus` records (strict xfail) that
the statistics an evaluation would use differ for a run this short."""

from __future__ import annotations

import pytest
import torch
from step_parity import _prefixed, assert_matches, assert_setting_detected, bn_sizes, clzoo_steps, load_fixture

pytestmark = pytest.mark.step_parity

DECAY = 0.9  # configs/byol.py bn_config decay_rate = 1 - PyTorch's BN momentum 0.1


@pytest.fixture(scope="module")
def fixture():
    return load_fixture("byol")


@pytest.fixture(scope="module")
def clzoo_run(fixture, tmp_path_factory):
    meta, tensors = fixture
    return clzoo_steps(meta, tensors, tmp_path_factory.mktemp("byol"))


def test_byol_step_parity(fixture, clzoo_run):
    meta, tensors = fixture
    losses, state = clzoo_run
    assert_matches(meta, tensors, losses, state)


@pytest.mark.parametrize("flag, value, changed", [
    ("--hparams.tau_base", "0.996", r"step 1: loss|target_"),  # the target EMA schedule
    ("--lars-eta", "0.002", r"step 2: loss|backbone\."),  # the LARS trust ratio
])
def test_byol_comparison_can_fail(fixture, tmp_path, flag, value, changed):
    """The comparison can fail: a perturbed setting moves the tensors it governs beyond atol."""
    assert_setting_detected(*fixture, tmp_path, flag, value, changed)


def test_byol_bn_statistics(fixture, clzoo_run):
    """PyTorch's running_mean is Haiku's un-debiased EMA (`hidden`: both start at 0, decay 0.9), and
    running_var = 0.9^U (its initial 1) + n / (n - 1) x Haiku's `hidden` of the biased variance, after U
    updates (2 per step: each view on its own, online and target) of batches of n values per channel."""
    meta, tensors = fixture
    _, state = clzoo_run
    haiku = _prefixed(tensors, "haiku_state/")
    sizes = bn_sizes(meta, tensors)
    updates = 2 * len(meta["losses"])
    atol = meta["atol"]
    worst = 0.0
    for key in (k for k in haiku if k.endswith(".mean_ema.hidden")):
        module = key[:-len(".mean_ema.hidden")]
        assert int(state[f"{module}.num_batches_tracked"]) == updates, module
        if module.startswith(("backbone.", "target_backbone.")):
            n = sizes[module.split(".", 1)[1]]
        else:  # the heads' BatchNorm1d: one value per sample
            n = int(meta["argv"][meta["argv"].index("--batch-size") + 1])
        mean = (state[f"{module}.running_mean"].double() - haiku[key].double()).abs().max().item()
        expected_var = DECAY ** updates + n / (n - 1) * haiku[f"{module}.var_ema.hidden"].double()
        var = (state[f"{module}.running_var"].double() - expected_var).abs().max().item()
        assert mean <= atol and var <= atol, f"{module}: running_mean {mean:.3g}, running_var {var:.3g}"
        worst = max(worst, mean, var)
    print(f"BN statistics vs Haiku's moving averages: max |diff| {worst:.2e}")


@pytest.mark.xfail(strict=True, reason="Haiku evaluates with zero-debiased moving averages (hidden / (1 - 0.9^t)) "
                   "of the biased batch variance; PyTorch's BN buffers start at running_var 1 and average the "
                   "unbiased variance. After a handful of steps they differ; over a real run (thousands of "
                   "steps, n ~ 10^5 values per channel) the two agree to ~1/n. Training steps are unaffected.")
def test_byol_bn_eval_statistics_are_haikus(fixture, clzoo_run):
    meta, tensors = fixture
    _, state = clzoo_run
    haiku = _prefixed(tensors, "haiku_state/")
    for key, v in haiku.items():
        if key.endswith(".average"):
            module, ema = key[:-len(".average")].rsplit(".", 1)
            buffer = {"mean_ema": "running_mean", "var_ema": "running_var"}[ema]
            diff = (state[f"{module}.{buffer}"].double() - v.double()).abs().max().item()
            assert diff <= meta["atol"], f"{module}.{buffer}: {diff:.3g} from Haiku's {ema}.average"
