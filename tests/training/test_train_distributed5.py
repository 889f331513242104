"""Two gloo processes on CPU versus one process on the global batch, for the methods of issue 5: Barlow
Twins' cross-correlation over the global batch, SwAV's distributed Sinkhorn, DINO's all-reduced center and
MoCo v3's gathered keys. Loss, gradients and state after two optimizer steps agree within 1e-5."""

import json
import os
import subprocess
import sys

import pytest
import torch

from test_train_distributed import WORKER, _env, two_processes


@pytest.mark.distributed
def test_two_processes_match_one_methods5(tmp_path):
    env = _env(tmp_path)
    one, two = tmp_path / "one" / "out.pt", tmp_path / "two" / "out.pt"
    one.parent.mkdir(), two.parent.mkdir()
    subprocess.run([sys.executable, WORKER, str(one), "methods5"], env=env, check=True, timeout=300)
    proc = subprocess.run(two_processes(WORKER, str(two), "methods5"), env=env, timeout=600, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    a, b = torch.load(one, weights_only=False), torch.load(two, weights_only=False)
    assert a["world_size"] == 1 and b["world_size"] == 2

    for name in ("barlow", "swav", "dino", "mocov3"):
        for la, lb in zip(a[f"{name}_losses"], b[f"{name}_losses"]):
            assert abs(la - lb) < 1e-5, (name, la, lb)
        assert len(a[f"{name}_grads"]) == len(b[f"{name}_grads"])
        for ga, gb in zip(a[f"{name}_grads"], b[f"{name}_grads"]):
            assert (ga is None) == (gb is None), name
            if ga is not None:
                assert torch.allclose(ga, gb, atol=1e-5), (name, (ga - gb).abs().max())
        for k, v in a[f"{name}_state"].items():  # weights, momentum encoders, center, prototypes after 2 steps
            assert torch.allclose(v.float(), b[f"{name}_state"][k].float(), atol=1e-5), (name, k)
    # Barlow Twins' default gradient is main.py's: 1/W of the global loss's (the same value of the loss)
    for ga, g1, g2 in zip(a["barlow_grads"], a["barlow_official_grads"], b["barlow_official_grads"]):
        assert torch.equal(ga, g1) and torch.allclose(g2, ga / 2, atol=1e-6)
    assert abs(b["barlow_official_losses"][0] - a["barlow_losses"][0]) < 1e-5
    # the center did move, from the teacher outputs of both processes
    assert b["dino_state"]["center"].abs().sum() > 0
    assert a["swav_grads"][-1] is None  # prototypes frozen in step 0 (half an epoch), trained in step 1
    results = json.load(open(tmp_path / "two" / "dino" / "results.json"))
    assert results["processes"] == 2 and results["steps"] == 2
