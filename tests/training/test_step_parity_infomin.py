"""InfoMin: clzoo's trainer takes the official trainer's 3 optimizer steps (HobbitLong/PyContrast
`--method InfoMin`: ContrastTrainer._train_moco with RGBMultiHeads, JigsawHead, RGBMoCo, shuffle-BN, SGD and
momentum_update, under main_worker's per-epoch adjust_learning_rate; fixture from
tests/data/step_parity/gen_pycontrast.py).

PyContrast's JigsawHead draws its patch order inside the forward; the fixture's jigsaw patches are in the
order it drew (clzoo's augmentation shuffles them, data/transforms.Jigsaw). PyContrast's cosine is per epoch,
evaluated at epochs 1..E, so its first epoch already runs below the peak; the fixture's 3 steps are clzoo's
steps 1-3 of a 10-step cosine with one batch per epoch, where the two schedules coincide (README).

PyContrast enqueues its keys in shuffle-BN order (`_shuffle_bn` gathers `all_k` before un-shuffling), clzoo
in batch order: each block of B queue slots holds the same keys, permuted. The queue is compared block by
block as a set (K = 3 B, so every block is one step's keys); a permutation within a block changes no loss,
and with K % B == 0 (MoCo asserts it) no later write splits a block."""

from __future__ import annotations

import pytest
import torch
from step_parity import assert_matches, assert_setting_detected, clzoo_steps, load_fixture

pytestmark = pytest.mark.step_parity


@pytest.fixture(scope="module")
def fixture():
    return load_fixture("infomin")


QUEUE = "final/queue.queue"


def without_queue(tensors: dict) -> dict:
    return {k: v for k, v in tensors.items() if k != QUEUE}


def queue_block_diff(official: torch.Tensor, ours: torch.Tensor, block: int) -> float:
    """Max |diff| between the queues after matching, in each block of `block` slots, every official row to
    the clzoo row nearest to it; the matching must be a permutation."""
    worst = 0.0
    for start in range(0, len(official), block):
        a, b = official[start:start + block].double(), ours[start:start + block].double()
        nearest = torch.cdist(a, b).argmin(1)
        assert sorted(nearest.tolist()) == list(range(len(b))), f"queue slots {start}-{start + block - 1}"
        worst = max(worst, (a - b[nearest]).abs().max().item())
    return worst


def test_infomin_step_parity(fixture, tmp_path):
    meta, tensors = fixture
    losses, state = clzoo_steps(meta, tensors, tmp_path)
    assert_matches(meta, without_queue(tensors), losses, state)
    batch = int(meta["argv"][meta["argv"].index("--batch-size") + 1])
    diff = queue_block_diff(tensors[QUEUE], state["queue.queue"], batch)
    print(f"queue, block by block: max |diff| {diff:.2e}")
    assert diff <= meta["atol"]


def test_infomin_queue_is_in_shuffle_bn_order(fixture, tmp_path):
    """The block-wise comparison is needed: slot by slot, the queues differ (the official shuffle-BN order)."""
    meta, tensors = fixture
    _, state = clzoo_steps(meta, tensors, tmp_path)
    assert (state["queue.queue"].double() - tensors[QUEUE].double()).abs().max() > 0.1


@pytest.mark.parametrize("flag, value, changed", [
    ("--hparams.beta", "0.4", r"step 0: loss"),  # the jigsaw term's weight
    ("--hparams.m", "0.99", r"step 1: loss|momentum_"),  # the momentum encoder's EMA (the next keys)
    ("--min-lr", "0.0", r"step [12]: loss|backbone\."),  # PyContrast's eta_min = lr x 0.1^3
])
def test_infomin_comparison_can_fail(fixture, tmp_path, flag, value, changed):
    """The comparison can fail: a perturbed setting moves the tensors it governs beyond atol."""
    meta, tensors = fixture
    assert_setting_detected(meta, without_queue(tensors), tmp_path, flag, value, changed)
