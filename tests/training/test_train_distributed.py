"""Two gloo processes on CPU versus one process on the global batch: SimCLR's gathered negatives (loss
and gradient), InvaSpread, MoCo's queue / momentum encoder / shuffle-BN, InstDisc's memory bank, the
per-sample views, and the trainer itself under `accelerate launch` with 2 processes."""

import json
import os
import subprocess
import sys

import pytest
import torch

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "train_dist_worker.py")


def _env(tmp_path):
    env = dict(os.environ, HF_HOME=str(tmp_path / "hf"), ACCELERATE_USE_CPU="1", OMP_NUM_THREADS="1",
               PYTHONUNBUFFERED="1")
    env.pop("ACCELERATE_CONFIG_FILE", None)
    return env


def two_processes(*command) -> list[str]:
    """`accelerate launch` of `command` (a script and its arguments) as 2 gloo processes on the CPU (with
    `ACCELERATE_USE_CPU=1` in the environment: `_env`)."""
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", *command]


@pytest.mark.distributed
def test_two_processes_match_one(tmp_path):
    env = _env(tmp_path)
    one, two = tmp_path / "one" / "out.pt", tmp_path / "two" / "out.pt"
    one.parent.mkdir(), two.parent.mkdir()
    subprocess.run([sys.executable, WORKER, str(one)], env=env, check=True, timeout=300)
    proc = subprocess.run(two_processes(WORKER, str(two)), env=env, timeout=600, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    a, b = torch.load(one, weights_only=False), torch.load(two, weights_only=False)
    assert a["world_size"] == 1 and b["world_size"] == 2

    for va, vb in zip(a["views"], b["views"]):
        assert torch.equal(va, vb)  # identical views for any number of processes
    assert abs(a["simclr_loss"] - b["simclr_loss"]) < 1e-5
    for ga, gb in zip(a["simclr_grads"], b["simclr_grads"]):
        assert torch.allclose(ga, gb, atol=1e-5), (ga - gb).abs().max()
    assert abs(a["inva_loss"] - b["inva_loss"]) < 1e-5
    for ga, gb in zip(a["inva_grads"], b["inva_grads"]):
        assert torch.allclose(ga, gb, atol=1e-5)
    for la, lb in zip(a["moco_losses"], b["moco_losses"]):
        assert abs(la - lb) < 1e-5
    for k, v in a["moco_state"].items():  # queue, pointer, both encoders after 2 steps
        assert torch.allclose(v.float(), b["moco_state"][k].float(), atol=1e-5), k
    assert int(b["moco_state"]["queue.ptr"]) == 16
    assert torch.allclose(a["bank"], b["bank"], atol=1e-6)
    # noise entries are drawn per sample index, so even the NCE normaliser and loss match
    assert torch.allclose(a["Z"], b["Z"], rtol=1e-5) and abs(a["inst_loss"] - b["inst_loss"]) < 1e-5

    for method in ("simclr", "mocov2", "instdisc"):
        results = json.load(open(tmp_path / "two" / method / "results.json"))
        assert results["processes"] == 2 and results["steps"] == 2
